//! Reward hacking against β, in about a minute on a laptop CPU, with nothing to download.
//!
//! ```text
//! cargo run --release --example quickstart [-- --out DIR] [--device flex] [--iterations N]
//! ```
//!
//! 1. **Base model.** A small ε-predicting MLP of 2-D points ([`ToyPointModel`]) is trained by
//!    denoising score matching on a mixture of 8 Gaussians on a circle, then sampled with the LCM
//!    multistep sampler (K = 8), as a consistency model.
//! 2. **Rewards.** The *proxy* reward, which ROCM maximises, is the x-coordinate: unbounded, so
//!    it can be hacked by pushing points off the data. The held-out *true* objective is
//!    `x + λ log p_data(x)` (λ = 0.5): moving mass towards the right-hand modes pays, leaving the
//!    data manifold does not.
//! 3. **ROCM.** LoRA adapters (r = 4, α = 8) on every layer are trained with [`RocmTrainer`] for
//!    several β with KL, and for a moderate β with every other divergence.
//!
//! Writes `results.md` / `results.csv` (the table, also printed), `curves.csv` (proxy and true
//! objective against iteration, per run), `*.png` plots, and each run's metrics and LoRA
//! checkpoint under `runs/`, in `target/quickstart/` (or `--out`).

use std::path::PathBuf;
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use rand_distr::StandardNormal;
use rocm::lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm::sampler::{LcmScheduler, Sampler};
use rocm::trainer::toy::{ToyPointModel, ToyPointModelConfig};
use rocm::trainer::{
    GuidanceKind, LatentReward, MetricsWriter, RocmTrainer, TrainConfig, Unconditional,
};

#[path = "quickstart/plot.rs"]
mod plot;

/// Modes of the target mixture: 8 on a circle of radius 2.
const MODES: usize = 8;
const RADIUS: f32 = 2.0;
const MODE_STD: f32 = 0.25;
/// Weight of the data log-density in the true objective.
const LAMBDA: f64 = 0.5;
/// Evaluation samples (fixed seeds).
const EVAL: u64 = 512;

fn mode(i: usize) -> (f32, f32) {
    let a = 2.0 * std::f32::consts::PI * i as f32 / MODES as f32;
    (RADIUS * a.cos(), RADIUS * a.sin())
}

/// `log p_data(x, y)` of the mixture.
fn log_density(x: f32, y: f32) -> f64 {
    let var = f64::from(MODE_STD * MODE_STD);
    let logs: Vec<f64> = (0..MODES)
        .map(|i| {
            let (mx, my) = mode(i);
            let d2 = f64::from((x - mx).powi(2) + (y - my).powi(2));
            -d2 / (2.0 * var) - (2.0 * std::f64::consts::PI * var).ln() - (MODES as f64).ln()
        })
        .collect();
    let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
}

/// The proxy reward: the x-coordinate.
struct ProxyX;

impl LatentReward<2> for ProxyX {
    fn name(&self) -> &str {
        "x"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        let [b, _] = latent.dims();
        latent.slice(s![.., 0..1]).reshape([b])
    }
}

/// Trains the base ε-predictor by denoising score matching on the mixture.
fn pretrain(device: &Device, steps: usize) -> ToyPointModel {
    let scheduler = LcmScheduler::default();
    let mut model = ToyPointModelConfig::new().init_seeded(0, device);
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let batch = 512;
    for step in 0..steps {
        let (mut x, mut eps, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..batch {
            let (mx, my) = mode(rng.random_range(0..MODES));
            let ts = rng.random_range(0..1000usize);
            let a = scheduler.alpha_cumprod(ts);
            let e: [f32; 2] = [rng.sample(StandardNormal), rng.sample(StandardNormal)];
            let x0 = [
                mx + MODE_STD * rng.sample::<f32, _>(StandardNormal),
                my + MODE_STD * rng.sample::<f32, _>(StandardNormal),
            ];
            for j in 0..2 {
                x.push(a.sqrt() * x0[j] + (1.0 - a).sqrt() * e[j]);
                eps.push(e[j]);
            }
            t.push(ts as f32);
        }
        let x = Tensor::<2>::from_data(TensorData::new(x, [batch, 2]), device);
        let eps = Tensor::<2>::from_data(TensorData::new(eps, [batch, 2]), device);
        let t = Tensor::<1>::from_data(TensorData::new(t, [batch]), device);
        let loss = (model.forward(x, t) - eps).square().mean();
        let lr = if step < steps * 3 / 4 { 3e-3 } else { 1e-3 };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    model
}

/// One ROCM run's settings.
struct Run {
    beta: f64,
    divergence: &'static str,
}

impl Run {
    fn name(&self) -> String {
        format!("{}-beta{}", self.divergence, self.beta)
    }
}

/// A curve point: iteration, mean proxy, mean true objective.
type Point = (usize, f64, f64);

/// What a finished run measured.
struct Outcome {
    curve: Vec<Point>,
    divergence: f64,
    seconds: f64,
}

/// Mean proxy and true objective of the model's samples on the fixed evaluation seeds.
fn evaluate<R: LatentReward<2>>(
    t: &RocmTrainer<2, ToyPointModel, R, Box<dyn rocm::divergence::FDivergence + Send + Sync>, Unconditional>,
) -> (f64, f64, Vec<[f32; 2]>) {
    let seeds: Vec<u64> = (1_000_000..1_000_000 + EVAL).collect();
    let options = t.sampler_options().with_base(false);
    let traj = Sampler::default()
        .sample_no_grad(t.model(), &(), t.batch_noise(&seeds), &options)
        .expect("valid sampler options");
    let v = traj.final_latent.into_data().try_into_vec::<f32>().expect("f32 latents");
    let points: Vec<[f32; 2]> = v.chunks(2).map(|p| [p[0], p[1]]).collect();
    let n = points.len() as f64;
    let proxy = points.iter().map(|p| f64::from(p[0])).sum::<f64>() / n;
    let truth = points
        .iter()
        .map(|p| f64::from(p[0]) + LAMBDA * log_density(p[0], p[1]))
        .sum::<f64>()
        / n;
    (proxy, truth, points)
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "target/quickstart".into()));
    let iterations: usize = arg("--iterations").map_or(Ok(150), |s| s.parse())?;
    let (device, backend) = rocm::select_device(&arg("--device").unwrap_or_else(|| "flex".into()))?;
    let device = device.autodiff();
    std::fs::create_dir_all(&out)?;
    let start = Instant::now();

    let base = pretrain(&device, 600);
    println!(
        "base model: denoising score matching, 600 AdamW steps on {backend} ({:.1} s)",
        start.elapsed().as_secs_f64()
    );

    let mut runs: Vec<Run> = [0.0, 0.01, 0.1, 1.0]
        .into_iter()
        .map(|beta| Run { beta, divergence: "kl" })
        .collect();
    for divergence in ["reverse_kl", "js", "hellinger_sq", "fisher"] {
        runs.push(Run { beta: 0.1, divergence });
    }

    let mut rows = Vec::new();
    let mut base_scores = None;
    for run in &runs {
        let run_start = Instant::now();
        let config = TrainConfig {
            num_steps: 8,
            guidance: GuidanceKind::None,
            beta: run.beta,
            divergence: run.divergence.into(),
            batch_size: 64,
            learning_rate: 5e-3,
            gradient_checkpointing: false,
            max_grad_norm: 1.0,
            iterations,
            seed: 7,
            checkpoint_every: 0,
            output_dir: out.join("runs").join(run.name()),
            ..TrainConfig::default()
        };
        let divergence = config.divergence()?;
        let mut model = base.clone();
        let lora = LoraConfig::new(4, 8.0, TargetModules::names(&model.all_layers()))
            .with_init_lora_weights(InitLoraWeights::Gaussian);
        apply_lora(&mut model, &lora)?;
        let dir = config.output_dir.clone();
        std::fs::remove_dir_all(&dir).ok();
        let mut trainer = RocmTrainer::new(
            model,
            ProxyX,
            divergence,
            Unconditional,
            vec![String::new()],
            [1, 2],
            config,
            device.clone(),
        )?;
        let mut writer = MetricsWriter::open(&dir)?;
        let (p0, t0, points0) = evaluate(&trainer);
        if base_scores.is_none() {
            base_scores = Some((p0, t0));
            plot::scatter(&out.join("samples_base.png"), &points0, (0..MODES).map(mode))?;
        }
        let mut curve = vec![(0, p0, t0)];
        let mut last_div = 0.0;
        for i in 1..=iterations {
            let m = trainer.train_iteration()?;
            writer.write(&m)?;
            last_div = m.divergence_mean;
            if i % 10 == 0 || i == iterations {
                let (p, t, _) = evaluate(&trainer);
                curve.push((i, p, t));
            }
        }
        trainer.save_checkpoint(&dir.join("checkpoints"))?;
        let (_, _, points) = evaluate(&trainer);
        plot::scatter(&out.join(format!("samples_{}.png", run.name())), &points, (0..MODES).map(mode))?;
        let seconds = run_start.elapsed().as_secs_f64();
        let last = curve.last().copied().unwrap_or((0, p0, t0));
        println!(
            "{:<22} proxy {:+.3} -> {:+.3}   true {:+.3} -> {:+.3}   ΣD {:.4}   {:.1} s",
            run.name(),
            p0,
            last.1,
            t0,
            last.2,
            last_div,
            seconds
        );
        rows.push((run, Outcome { curve, divergence: last_div, seconds }));
    }

    let (bp, bt) = base_scores.unwrap_or_default();
    let mut md = format!(
        "# ROCM quickstart: reward hacking vs β\n\n\
         Base model (before ROCM): proxy {bp:+.3}, true {bt:+.3}. {iterations} iterations, \
         batch 64, K = 8, LoRA r4/α8, AdamW lr 5e-3.\n\n\
         | run | divergence | β | proxy (x) | true (x + {LAMBDA} log p) | Σ_k D_k | seconds |\n\
         |---|---|---|---|---|---|---|\n"
    );
    let mut csv = String::from("run,divergence,beta,proxy,true,divergence_sum,seconds\n");
    let mut curves = String::from("run,iteration,proxy,true\n");
    for (run, o) in &rows {
        let (_, p, t) = o.curve.last().copied().unwrap_or_default();
        md.push_str(&format!(
            "| {} | {} | {} | {p:+.3} | {t:+.3} | {:.4} | {:.1} |\n",
            run.name(),
            run.divergence,
            run.beta,
            o.divergence,
            o.seconds
        ));
        csv.push_str(&format!(
            "{},{},{},{p},{t},{},{}\n",
            run.name(),
            run.divergence,
            run.beta,
            o.divergence,
            o.seconds
        ));
        for (i, p, t) in &o.curve {
            curves.push_str(&format!("{},{i},{p},{t}\n", run.name()));
        }
    }
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(out.join("results.csv"), csv)?;
    std::fs::write(out.join("curves.csv"), curves)?;
    let kl: Vec<(String, Vec<Point>)> = rows
        .iter()
        .filter(|(r, _)| r.divergence == "kl")
        .map(|(r, o)| (r.name(), o.curve.clone()))
        .collect();
    plot::curves(&out.join("proxy_vs_iteration.png"), &kl, |p| p.1)?;
    plot::curves(&out.join("true_vs_iteration.png"), &kl, |p| p.2)?;
    md.push_str(&plot::legend(&kl));
    std::fs::write(out.join("results.md"), &md)?;
    println!("\n{md}");
    println!(
        "wrote {}/{{results.md,results.csv,curves.csv,proxy_vs_iteration.png,true_vs_iteration.png,samples_*.png}} in {:.1} s",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
