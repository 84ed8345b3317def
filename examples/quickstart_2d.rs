//! Reward hacking against β on an embedded 2-D consistency model, in about 20 seconds on a laptop
//! CPU, with nothing to download (the image quickstart is `examples/quickstart.rs`).
//!
//! ```text
//! cargo run --release --example quickstart_2d [-- --out DIR] [--device flex] [--iterations 40]
//!     [--betas 0,0.1,0.3,1,3] [--lr 1e-3] [--batch 128] [--lambda 0.1]
//! ```
//!
//! 1. **Base model.** A small ε-predicting MLP of 2-D points ([`ToyPointModel`]) is trained by
//!    denoising score matching on a mixture of 8 Gaussians on a circle, then sampled with the LCM
//!    multistep sampler (K = 8), as a consistency model.
//! 2. **Rewards.** The *proxy* reward, which ROCM maximises, is the x-coordinate: unbounded, so
//!    it can be hacked by pushing points off the data. The held-out *true* objective is
//!    `x + λ log p_data(x)` (λ = 0.1): moving mass towards the right-hand modes pays, leaving the
//!    data manifold does not.
//! 3. **ROCM.** LoRA adapters (r = 4, α = 8) on every layer are trained with [`RocmTrainer`] for
//!    every β of `--betas` and each divergence (KL, reverse KL, JS, Hellinger², Fisher).
//!
//! Writes `results.md` / `results.csv` (the table, also printed), `curves.csv` (proxy and true
//! objective against iteration, per run), `*.png` plots, and each run's metrics and LoRA
//! checkpoint under `runs/`, in `target/quickstart_2d/` (or `--out`).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Arg, Command};
use rocm::divergence::{DivergenceConfig, DivergenceKind};
use rocm::lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm::sampler::Branch;
use rocm::trainer::plot::{self, Chart, Series};
use rocm::trainer::toy::{self, ProxyX, ToyPointModel, data};
use rocm::trainer::{GuidanceKind, MetricsWriter, RocmTrainer, TrainConfig};

/// Evaluation samples (fixed seeds).
const EVAL: u64 = 512;

/// The scatter plots' axes: the data's modes (a circle around the origin) with room on the
/// right, where the proxy pushes samples.
const DOMAIN: (std::ops::Range<f64>, std::ops::Range<f64>) = (-4.0..8.0, -4.0..4.0);

/// One ROCM run's settings.
struct Run {
    beta: f64,
    divergence: DivergenceKind,
}

impl Run {
    fn name(&self) -> String {
        format!("{}-beta{}", self.divergence, self.beta)
    }
}

/// The command line (clap, as the `rocm` binary).
fn cli() -> Command {
    let arg = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).default_value(default).help(help)
    };
    Command::new("quickstart_2d")
        .about("ROCM on the embedded 2-D toy: reward hacking against β, for every divergence")
        .arg(arg("out", "target/quickstart_2d", "Output folder"))
        .arg(arg("device", "flex", "flex (CPU), wgpu, cuda[:N], auto"))
        .arg(arg("iterations", "40", "Training iterations per run"))
        .arg(arg("betas", "0,0.1,0.3,1,3", "Comma-separated β values"))
        .arg(arg("lr", "1e-3", "AdamW learning rate"))
        .arg(arg("batch", "128", "Points per iteration"))
        .arg(arg(
            "lambda",
            "0.1",
            "λ of the true objective x + λ log p(x)",
        ))
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
fn evaluate(lambda: f64, t: &RocmTrainer<2, ToyPointModel>) -> (f64, f64, Vec<[f32; 2]>) {
    let seeds: Vec<u64> = (1_000_000..1_000_000 + EVAL).collect();
    let prompts = vec![String::new(); seeds.len()];
    let v = t
        .sample_final_latents(Branch::Policy, &prompts, &seeds)
        .expect("valid sampler options")
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 latents");
    let points: Vec<[f32; 2]> = v.chunks(2).map(|p| [p[0], p[1]]).collect();
    let n = points.len() as f64;
    let proxy = points.iter().map(|p| f64::from(p[0])).sum::<f64>() / n;
    let truth = points
        .iter()
        .map(|p| f64::from(p[0]) + lambda * data().log_density(p[0], p[1]))
        .sum::<f64>()
        / n;
    (proxy, truth, points)
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let matches = cli().get_matches();
    let arg = |name: &str| matches.get_one::<String>(name).cloned().unwrap_or_default();
    let parse = |name: &str| -> Result<f64, String> {
        arg(name)
            .parse()
            .map_err(|e| format!("--{name} {}: {e}", arg(name)))
    };
    let out = PathBuf::from(arg("out"));
    let iterations: usize = arg("iterations")
        .parse()
        .map_err(|e| format!("--iterations: {e}"))?;
    let batch: usize = arg("batch").parse().map_err(|e| format!("--batch: {e}"))?;
    let (lambda, lr) = (parse("lambda")?, parse("lr")?);
    let (device, backend) = rocm::select_device(&arg("device"))?;
    let device = device.autodiff();
    std::fs::create_dir_all(&out)?;
    let start = Instant::now();

    let base = toy::pretrained(&device);
    println!(
        "base model: denoising score matching, 600 AdamW steps on {backend} ({:.1} s)",
        start.elapsed().as_secs_f64()
    );

    let betas: Vec<f64> = arg("betas")
        .split(',')
        .map(|b| b.trim().parse().map_err(|e| format!("--betas {b}: {e}")))
        .collect::<Result<_, _>>()?;
    // β = 0 ignores the divergence (it is only logged): one run, under KL.
    let mut runs = Vec::new();
    let divergences = [
        DivergenceKind::Kl,
        DivergenceKind::ReverseKl,
        DivergenceKind::Js,
        DivergenceKind::HellingerSq,
        DivergenceKind::Fisher,
    ];
    for divergence in divergences {
        for &beta in &betas {
            if beta > 0.0 || divergence == DivergenceKind::Kl {
                runs.push(Run { beta, divergence });
            }
        }
    }

    let mut rows = Vec::new();
    let mut base_scores = None;
    for run in &runs {
        let run_start = Instant::now();
        let config = TrainConfig {
            num_steps: 8,
            guidance: GuidanceKind::None,
            beta: run.beta,
            divergence: DivergenceConfig::from(run.divergence),
            batch_size: batch,
            learning_rate: lr,
            gradient_checkpointing: false,
            // A 2-D MLP call takes microseconds: a second thread costs more than it saves.
            concurrent: false,
            max_grad_norm: 1.0,
            iterations,
            seed: 7,
            checkpoint_every: 0,
            output_dir: out.join("runs").join(run.name()),
            ..TrainConfig::default()
        };
        let mut model = base.clone();
        let lora = LoraConfig::new(4, 8.0, TargetModules::names(&model.all_layers()))
            .with_init_lora_weights(InitLoraWeights::Gaussian);
        apply_lora(&mut model, &lora)?;
        let dir = config.output_dir.clone();
        std::fs::remove_dir_all(&dir).ok();
        let mut trainer = RocmTrainer::builder(config)
            .model(model)
            .reward(ProxyX)
            .unconditional()
            .scheduler(toy::scheduler())
            .latent_shape([1, 2])
            .device(device.clone())
            .build()?;
        let mut writer = MetricsWriter::open(&dir)?;
        let (p0, t0, points0) = evaluate(lambda, &trainer);
        if base_scores.is_none() {
            base_scores = Some((p0, t0));
            plot::scatter(
                &out.join("samples_base.png"),
                &Chart::new("Samples of the base model (K = 8)", "x", "y"),
                DOMAIN,
                ("base model samples", &points0),
                data().means.into_iter(),
            )?;
        }
        let mut curve = vec![(0, p0, t0)];
        let mut last_div = 0.0;
        for i in 1..=iterations {
            let m = trainer.train_iteration()?;
            writer.write(&m)?;
            last_div = m.divergence_mean;
            if i % 2 == 0 || i == iterations {
                let (p, t, _) = evaluate(lambda, &trainer);
                curve.push((i, p, t));
            }
        }
        trainer.save_checkpoint(&dir.join("checkpoints"))?;
        let (_, _, points) = evaluate(lambda, &trainer);
        plot::scatter(
            &out.join(format!("samples_{}.png", run.name())),
            &Chart::new(
                format!("Samples after {iterations} iterations: {}", run.name()),
                "x",
                "y",
            ),
            DOMAIN,
            (&format!("{} samples", run.name()), &points),
            data().means.into_iter(),
        )?;
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
        rows.push((
            run,
            Outcome {
                curve,
                divergence: last_div,
                seconds,
            },
        ));
    }

    let (bp, bt) = base_scores.unwrap_or_default();
    let mut md = format!(
        "# ROCM 2-D quickstart: reward hacking vs β\n\n\
         Base model (before ROCM): proxy {bp:+.3}, true {bt:+.3}. {iterations} iterations, \
         batch {batch}, K = 8, LoRA r4/α8, AdamW lr {lr}.\n\n\
         | run | divergence | β | proxy (x) | true (x + {lambda} log p) | Σ_k D_k | seconds |\n\
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
    let last = |o: &Outcome| o.curve.last().copied().unwrap_or_default();
    let best = |key: fn(&Point) -> f64| {
        rows.iter()
            .rev() // the first of equals
            .max_by(|a, b| key(&last(&a.1)).total_cmp(&key(&last(&b.1))))
            .map(|(r, o)| (r.name(), key(&last(o))))
            .unwrap_or_default()
    };
    let (proxy_run, proxy_best) = best(|p| p.1);
    let (true_run, true_best) = best(|p| p.2);
    md.push_str(&format!(
        "\nHighest proxy: `{proxy_run}` ({proxy_best:+.3}); highest true objective: `{true_run}` \
         ({true_best:+.3}); base model: proxy {bp:+.3}, true {bt:+.3}.\n"
    ));
    std::fs::write(out.join("results.csv"), csv)?;
    std::fs::write(out.join("curves.csv"), curves)?;
    let kl: Vec<(String, Vec<Point>)> = rows
        .iter()
        .filter(|(r, _)| r.divergence == DivergenceKind::Kl)
        .map(|(r, o)| (r.name(), o.curve.clone()))
        .collect();
    let series = |value: fn(&Point) -> f64| -> Vec<Series> {
        kl.iter()
            .map(|(name, c)| Series::new(name, c.iter().map(|p| (p.0 as f64, value(p))).collect()))
            .collect()
    };
    let chart = |title: &str, y: &str| Chart::new(title, "iteration", y).symlog();
    plot::curves(
        &out.join("proxy_vs_iteration.png"),
        &chart("Proxy reward, KL runs", "proxy reward x (symlog scale)"),
        &series(|p| p.1),
    )?;
    plot::curves(
        &out.join("true_vs_iteration.png"),
        &chart(
            "True objective, KL runs",
            &format!("x + {lambda} log p_data(x) (symlog scale)"),
        ),
        &series(|p| p.2),
    )?;
    md.push_str(&legend(&kl));
    std::fs::write(out.join("results.md"), &md)?;
    println!("\n{md}");
    println!(
        "wrote {}/{{results.md,results.csv,curves.csv,proxy_vs_iteration.png,true_vs_iteration.png,samples_*.png}} in {:.1} s",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the plots show (each image has its own title, axis labels and legend).
fn legend(runs: &[(String, Vec<Point>)]) -> String {
    let names: Vec<String> = runs.iter().map(|(name, _)| format!("`{name}`")).collect();
    format!(
        "\nPlots: `proxy_vs_iteration.png` and `true_vs_iteration.png` for the KL runs ({}) on a \
         symlog y axis (sign(v)·ln(1 + |v|), ticks in data units, dashed line: 0); \
         `samples_<run>.png`: each run's final samples and the target's modes, x ∈ [−4, 8], \
         y ∈ [−4, 4].\n",
        names.join(", ")
    )
}
