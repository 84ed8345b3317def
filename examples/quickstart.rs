//! Reward hacking on real images, in about three minutes on two CPU cores, with nothing to
//! download: ROCM fine-tunes the shapes world's latent consistency model against the world's
//! learned preference model, and the world's hidden preference `h` says whether the images got
//! better or only the score did.
//!
//! ```text
//! cargo run --release --example quickstart [-- --out DIR] [--device flex] [--betas 0,1,3]
//!     [--iterations 120] [--lr 5e-4] [--batch 8] [--steps 4] [--guidance 5] [--eval-every 10]
//!     [--model DIR] [--reward-model DIR]
//! ```
//!
//! 1. **Base model.** The shipped `shapes-lcm` pipeline (`crates/rocm-shapes/assets/world/`: a
//!    diffusers `LatentConsistencyModelPipeline` folder distilled from the world's diffusion
//!    teacher), sampled in `--steps` LCM steps, 32 × 32 images.
//! 2. **Reward.** The world's PickScore-style preference model (`assets/world/pref`), the same
//!    `--reward pickscore --reward-model …/pref` a `rocm train` run takes: a CLIP fine-tuned on
//!    pairs labelled by `h`, differentiable, and imperfect (it agrees with `h` on about 81 % of
//!    held-out pairs), so it can be hacked.
//! 3. **Held-out truth.** `h(image, prompt) = fidelity + taste` of `rocm_shapes::hidden`, in
//!    `[0, 2]`: pixel-level, never differentiated, never seen by the trainer.
//! 4. **ROCM.** One run per β of `--betas` (KL, β = 0 is no regularisation), each from the same
//!    base model, LoRA r = 8 on the UNet's attention, training prompts from the world's train
//!    split; every `--eval-every` iterations the policy samples the fixed evaluation prompts
//!    (the first test-split captions) × seeds, scored by the preference model and by `h`.
//!
//! Everything goes through the public run configuration ([`RunConfig`] → [`RunConfig::build`] →
//! `RocmTrainer`), as `rocm train --config` does. Writes to `target/quickstart/` (or `--out`):
//! `results.md` / `results.csv` (the table, also printed), `curves.csv`, `reward_vs_iteration.png`
//! and `h_vs_iteration.png` (every run), `grid_<run>.png` (rows = prompts, the base model's images
//! on the left, the fine-tuned model's on the right, same seeds), and each run's metrics and
//! final LoRA checkpoint under `runs/<run>/`.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use clap::{Arg, ArgMatches, Command};
use rocm::lora::InitLoraWeights;
use rocm::reward::RewardKind;
use rocm::run::PipelineTrainer;
use rocm::run::{Adapters, ModelSource, PromptSource, RewardSection, Run, RunConfig};
use rocm::sampler::Branch;
use rocm::trainer::images::write_grid;
use rocm::trainer::plot::{self, Chart, Series};
use rocm::trainer::{GuidanceKind, LoraSection, MetricsWriter, TrainConfig};
use rocm_shapes::render::Image;
use rocm_shapes::world::Split;

mod common;

/// Training prompts: the first captions of the world's train split.
const TRAIN_PROMPTS: usize = 512;

/// Pixels per image pixel in the grids (the images are 32 × 32).
const GRID_SCALE: usize = 3;

/// The command line.
fn cli() -> Command {
    let arg = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).default_value(default).help(help)
    };
    Command::new("quickstart")
        .about("ROCM on the shapes world's LCM against its preference model, for several β")
        .arg(arg("out", "target/quickstart", "Output folder"))
        .arg(arg("device", "flex", "flex (CPU), wgpu, cuda[:N], auto"))
        .arg(arg(
            "model",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/crates/rocm-shapes/assets/world/shapes-lcm"
            ),
            "The LCM pipeline folder",
        ))
        .arg(arg(
            "reward-model",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/crates/rocm-shapes/assets/world/pref"
            ),
            "The PickScore-style preference model folder",
        ))
        .arg(arg("betas", "0,1,3", "Comma-separated β values (KL)"))
        .arg(arg("iterations", "120", "Training iterations per run"))
        .arg(arg("lr", "5e-4", "AdamW learning rate"))
        .arg(arg("batch", "8", "Prompts per iteration"))
        .arg(arg("steps", "4", "LCM steps K"))
        .arg(arg(
            "guidance",
            "5",
            "Guidance scale g (embedded, w = g − 1)",
        ))
        .arg(arg("lora-rank", "8", "LoRA rank r (α = 2r)"))
        .arg(arg(
            "eval-every",
            "10",
            "Evaluate every this many iterations",
        ))
        .arg(arg(
            "eval-prompts",
            "8",
            "Evaluation prompts (test-split captions)",
        ))
        .arg(arg("eval-seeds", "4", "Evaluation seeds per prompt"))
}

/// Parsed command line.
struct Args {
    out: PathBuf,
    device: String,
    model: String,
    reward_model: String,
    betas: Vec<f64>,
    iterations: usize,
    lr: f64,
    batch: usize,
    steps: usize,
    guidance: f32,
    lora_rank: usize,
    eval_every: usize,
    eval_prompts: usize,
    eval_seeds: usize,
}

impl Args {
    fn parse(m: &ArgMatches) -> Result<Self, String> {
        let text = |name: &str| m.get_one::<String>(name).cloned().unwrap_or_default();
        fn num<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            text.trim()
                .parse()
                .map_err(|e| format!("--{name} {text}: {e}"))
        }
        let get = |name: &str| text(name);
        let betas = get("betas")
            .split(',')
            .map(|b| num::<f64>("betas", b))
            .collect::<Result<Vec<_>, _>>()?;
        if betas.iter().any(|b| !b.is_finite() || *b < 0.0) {
            return Err(format!(
                "--betas {}: each β must be finite and ≥ 0",
                get("betas")
            ));
        }
        let positive = |name: &str| -> Result<usize, String> {
            match num::<usize>(name, &get(name))? {
                0 => Err(format!("--{name}: must be at least 1")),
                n => Ok(n),
            }
        };
        Ok(Self {
            out: PathBuf::from(get("out")),
            device: get("device"),
            model: get("model"),
            reward_model: get("reward-model"),
            betas,
            iterations: positive("iterations")?,
            lr: num("lr", &get("lr"))?,
            batch: positive("batch")?,
            steps: positive("steps")?,
            guidance: num("guidance", &get("guidance"))?,
            lora_rank: positive("lora-rank")?,
            eval_every: positive("eval-every")?,
            eval_prompts: positive("eval-prompts")?,
            eval_seeds: positive("eval-seeds")?,
        })
    }
}

/// The evaluation set: fixed prompts × seeds, prompt-major.
struct EvalSet {
    prompts: Vec<String>,
    seeds: Vec<u64>,
    /// Each pair's prompt.
    pair_prompts: Vec<String>,
    /// Each pair's seed.
    pair_seeds: Vec<u64>,
}

impl EvalSet {
    fn new(n_prompts: usize, n_seeds: usize) -> Self {
        let prompts: Vec<String> = Split::Test
            .scenes(0, n_prompts)
            .into_iter()
            .map(|s| s.caption)
            .collect();
        // Seeds far from the trainer's own draws.
        let seeds: Vec<u64> = (0..n_seeds as u64).map(|s| 1_000_000 + s).collect();
        let (pair_prompts, pair_seeds) = prompts
            .iter()
            .flat_map(|p| seeds.iter().map(move |s| (p.clone(), *s)))
            .unzip();
        Self {
            prompts,
            seeds,
            pair_prompts,
            pair_seeds,
        }
    }
}

/// One evaluation: means over the evaluation set, and its images.
struct Eval {
    iteration: usize,
    reward: f64,
    h: f64,
    fidelity: f64,
    taste: f64,
    images: Tensor<4>,
}

/// Samples the evaluation set with the policy and scores it with the reward model and `h`.
fn evaluate(trainer: &PipelineTrainer, set: &EvalSet) -> Result<Eval, Box<dyn std::error::Error>> {
    let (rewards, images) =
        trainer.evaluate_with_images(Branch::Policy, &set.pair_prompts, &set.pair_seeds)?;
    let images = images.ok_or("the reward returned no images")?;
    let n = rewards.len() as f64;
    let reward = rewards.iter().map(|r| f64::from(*r)).sum::<f64>() / n;
    let (mut h, mut fidelity, mut taste) = (0.0, 0.0, 0.0);
    for (image, prompt) in Image::unbatch(images.clone()).iter().zip(&set.pair_prompts) {
        let p = rocm_shapes::preference(image, prompt);
        h += f64::from(p.h) / n;
        fidelity += f64::from(p.fidelity) / n;
        taste += f64::from(p.taste) / n;
    }
    Ok(Eval {
        iteration: trainer.step(),
        reward,
        h,
        fidelity,
        taste,
        images,
    })
}

/// Nearest-neighbour upscaling of `[B, 3, H, W]` images by `s`.
fn upscale(images: Tensor<4>, s: usize) -> Result<Tensor<4>, String> {
    let [b, c, h, w] = images.dims();
    let device = images.device();
    let v: Vec<f32> = images
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("images: {e:?}"))?;
    let (hs, ws) = (h * s, w * s);
    let mut out = vec![0.0; b * c * hs * ws];
    for plane in 0..b * c {
        for i in 0..hs {
            for j in 0..ws {
                out[(plane * hs + i) * ws + j] = v[(plane * h + i / s) * w + j / s];
            }
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(out, [b, c, hs, ws]),
        &device,
    ))
}

/// Rows = prompts; the base model's seeds on the left, the fine-tuned model's on the right.
fn before_after_grid(
    path: &Path,
    set: &EvalSet,
    (before, after): (&Eval, &Eval),
    run: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let s = set.seeds.len();
    let mut rows = Vec::with_capacity(2 * set.pair_prompts.len());
    for p in 0..set.prompts.len() {
        rows.push(before.images.clone().narrow(0, p * s, s));
        rows.push(after.images.clone().narrow(0, p * s, s));
    }
    let images = upscale(Tensor::cat(rows, 0), GRID_SCALE)?;
    let header = format!(
        "{run}: left {s} = base model, right {s} = after {} iterations (same seeds); \
         h {:.3} -> {:.3}, reward model {:.2} -> {:.2}",
        after.iteration, before.h, after.h, before.reward, after.reward
    );
    let caption = rocm::trainer::images::numbered_caption(header, "row", &set.prompts);
    write_grid(path, images, 2 * s, &caption)?;
    Ok(())
}

/// What one run measured.
struct Outcome {
    name: String,
    beta: f64,
    curve: Vec<Eval>,
    divergence: f64,
    seconds: f64,
}

/// The training configuration of a run at `beta`.
fn run_config(args: &Args, beta: f64, train_prompts: &[String]) -> RunConfig {
    RunConfig {
        model: ModelSource::Pretrained(args.model.clone()),
        reward: Some(RewardSection {
            kind: RewardKind::PickScore,
            model: Some(args.reward_model.clone()),
            head: None,
        }),
        prompts: Some(PromptSource::List(train_prompts.to_vec())),
        held_out: Vec::new(),
        train: TrainConfig {
            num_steps: args.steps,
            guidance: GuidanceKind::Embedded,
            guidance_scale: args.guidance,
            beta,
            batch_size: args.batch,
            learning_rate: args.lr,
            iterations: args.iterations,
            seed: 0,
            checkpoint_every: 0,
            eval_every: 0,
            lora: LoraSection {
                r: args.lora_rank,
                alpha: 2.0 * args.lora_rank as f64,
                init: InitLoraWeights::Gaussian,
                ..LoraSection::default()
            },
            output_dir: args.out.join("runs").join(run_name(beta)),
            ..TrainConfig::default()
        },
        base_dir: None,
    }
}

fn run_name(beta: f64) -> String {
    format!("kl-beta{beta}")
}

/// One ROCM run at `beta`, evaluated every `eval_every` iterations.
fn train_run(
    args: &Args,
    beta: f64,
    train_prompts: &[String],
    set: &EvalSet,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let name = run_name(beta);
    let config = run_config(args, beta, train_prompts);
    let dir = config.train.output_dir.clone();
    std::fs::remove_dir_all(&dir).ok();
    let built = config.build(&args.device, Adapters::New)?;
    let Run::Pipeline(mut trainer) = built.run else {
        return Err(format!("{}: not an LCM pipeline", args.model).into());
    };
    let mut writer = MetricsWriter::open(&dir)?;
    let mut curve = vec![evaluate(&trainer, set)?];
    let mut divergence = 0.0;
    for i in 1..=args.iterations {
        let m = trainer.train_iteration()?;
        writer.write(&m)?;
        divergence = m.divergence_mean;
        if i % args.eval_every == 0 || i == args.iterations {
            let e = evaluate(&trainer, set)?;
            println!(
                "  {name} iteration {i:>3}/{}: batch reward {:+.3}, eval reward {:+.3}, \
                 h {:.3} (fidelity {:.3}, taste {:.3}), ΣD {divergence:.4}, {:.0} s",
                args.iterations,
                m.reward_mean,
                e.reward,
                e.h,
                e.fidelity,
                e.taste,
                start.elapsed().as_secs_f64()
            );
            curve.push(e);
        }
    }
    trainer.save_checkpoint(&dir.join("checkpoints"))?;
    Ok(Outcome {
        name,
        beta,
        curve,
        divergence,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    std::fs::create_dir_all(&args.out)?;
    let train_prompts: Vec<String> = Split::Train
        .scenes(0, TRAIN_PROMPTS)
        .into_iter()
        .map(|s| s.caption)
        .collect();
    let set = EvalSet::new(args.eval_prompts, args.eval_seeds);
    println!(
        "quickstart: ROCM on {} with the preference model {} as reward; β ∈ {:?} (KL), \
         {} iterations × batch {}, K = {}, g = {}; evaluation: {} test prompts × {} seeds",
        args.model,
        args.reward_model,
        args.betas,
        args.iterations,
        args.batch,
        args.steps,
        args.guidance,
        set.prompts.len(),
        set.seeds.len()
    );
    let mut outcomes = Vec::new();
    for &beta in &args.betas {
        println!("run {} (β = {beta})", run_name(beta));
        let o = train_run(args, beta, &train_prompts, &set)?;
        let (first, last) = (&o.curve[0], &o.curve[o.curve.len() - 1]);
        before_after_grid(
            &args.out.join(format!("grid_{}.png", o.name)),
            &set,
            (first, last),
            &o.name,
        )?;
        println!(
            "{}: reward model {:+.3} -> {:+.3}, h {:.3} -> {:.3}, {:.0} s",
            o.name, first.reward, last.reward, first.h, last.h, o.seconds
        );
        outcomes.push(o);
    }
    let seconds = start.elapsed().as_secs_f64();
    write_results(args, &set, &outcomes, seconds)?;
    Ok(())
}

/// The table (markdown and CSV), the curves and the plots.
fn write_results(
    args: &Args,
    set: &EvalSet,
    outcomes: &[Outcome],
    seconds: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let out = &args.out;
    let mut md = format!(
        "# ROCM quickstart: the shapes world's LCM against its preference model\n\n\
         {} iterations per run, batch {}, K = {}, g = {}, LoRA r{}/α{}, AdamW lr {}; evaluation on \
         {} test-split prompts × {} seeds (the same noise before and after). Reward: the \
         preference model (PickScore-style logits); h: the hidden preference, in [0, 2]. \
         Wall-clock {seconds:.0} s.\n\n\
         | run | β (KL) | reward model before | after | h before | after | fidelity after | \
         taste after | Σ_k D_k (last batch) | seconds |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        args.iterations,
        args.batch,
        args.steps,
        args.guidance,
        args.lora_rank,
        2 * args.lora_rank,
        args.lr,
        set.prompts.len(),
        set.seeds.len(),
    );
    let mut csv = String::from(
        "run,beta,reward_before,reward_after,h_before,h_after,fidelity_before,fidelity_after,\
         taste_before,taste_after,divergence_sum,seconds\n",
    );
    let mut curves = String::from("run,beta,iteration,reward,h,fidelity,taste\n");
    for o in outcomes {
        let (a, b) = (&o.curve[0], &o.curve[o.curve.len() - 1]);
        md.push_str(&format!(
            "| {} | {} | {:+.3} | {:+.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.4} | {:.0} |\n",
            o.name,
            o.beta,
            a.reward,
            b.reward,
            a.h,
            b.h,
            b.fidelity,
            b.taste,
            o.divergence,
            o.seconds
        ));
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            o.name,
            o.beta,
            a.reward,
            b.reward,
            a.h,
            b.h,
            a.fidelity,
            b.fidelity,
            a.taste,
            b.taste,
            o.divergence,
            o.seconds
        ));
        for e in &o.curve {
            curves.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                o.name, o.beta, e.iteration, e.reward, e.h, e.fidelity, e.taste
            ));
        }
    }
    md.push_str(
        "\nPlots: `reward_vs_iteration.png` (the preference model's mean score on the evaluation \
         set) and `h_vs_iteration.png` (mean h on the same images), one line per run; \
         `grid_<run>.png`: rows = prompts, the base model's images left, the fine-tuned \
         model's right.\n",
    );
    let series = |value: fn(&Eval) -> f64| -> Vec<Series> {
        outcomes
            .iter()
            .map(|o| {
                Series::new(
                    format!("{} (β = {})", o.name, o.beta),
                    o.curve
                        .iter()
                        .map(|e| (e.iteration as f64, value(e)))
                        .collect(),
                )
            })
            .collect()
    };
    plot::curves(
        &out.join("reward_vs_iteration.png"),
        &Chart::new(
            "Preference-model reward (the training reward)",
            "iteration",
            "mean reward-model score (logit)",
        ),
        &series(|e| e.reward),
    )?;
    plot::curves(
        &out.join("h_vs_iteration.png"),
        &Chart::new(
            "Hidden preference h (held out)",
            "iteration",
            "mean h = fidelity + taste, in [0, 2]",
        ),
        &series(|e| e.h),
    )?;
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(out.join("results.csv"), csv)?;
    std::fs::write(out.join("curves.csv"), curves)?;
    println!("\n{md}");
    println!(
        "wrote {}/{{results.md,results.csv,curves.csv,reward_vs_iteration.png,h_vs_iteration.png,\
         grid_*.png}} in {seconds:.0} s",
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    common::main(cli(), |m| {
        let args = Args::parse(m)?;
        run(&args).map_err(|e| e.to_string())
    })
}
