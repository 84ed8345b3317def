//! One ROCM training iteration on a random-weight LCM UNet + VAE, timed: the Rust half of
//! `benches/compare.sh` (the PyTorch + diffusers + peft half is `benches/python/bench_rocm.py`);
//! or, with `--config shapes`, on the shipped shapes-world LCM with its preference model.
//!
//! ```text
//! cargo run --release --example bench_rocm -- --config tiny|small|dreamshaper|shapes [--iters N] [--warmup W]
//!     [--checkpointing on|off] [--concurrent on|off] [--kernels fused|composed] [--json]
//! ```
//!
//! `shapes` is the image quickstart's model and reward at the issue's size: the shipped
//! `crates/rocm-shapes/assets/world/shapes-lcm` pipeline built through [`RunConfig`] as
//! `rocm train` builds it, batch 8, `K = 8`, LoRA r16/α32 on the attention projections, the
//! final latents decoded by the world's VAE and scored by its PickScore-style preference model
//! (`assets/world/pref`: CLIP preprocessing, both towers), KL with β = 0.1; prompts are the
//! world's train-split captions. The other settings are those of the random-weight workload.
//!
//! [`RunConfig`]: rocm::run::RunConfig
//!
//! The workload (identical on both sides): random weights (seed 0), batch 1, `K = 8` LCM steps
//! (evenly spaced timesteps `[999, 879, …, 139]`, guidance embedding of `w = 6.5`), gradient
//! through all 8 UNet calls; at each non-final step the KL term `ā‖f_θ − f_ref‖² / (2(1 − ā))`
//! summed over elements, `f_ref` the same UNet with adapters off and no gradient on the same
//! state; the final latent decoded by the VAE (`/ 0.18215`, `(x/2 + 0.5).clamp(0, 1)`); reward
//! `−mean((img − [0.8, 0.2, 0.2])²)`; loss `−reward + 0.1·KL`; backward; AdamW (lr 6e-5) on
//! LoRA r16/α32 (gaussian init) on `to_q`, `to_k`, `to_v`, `to_out.0`. Conditioning: a fixed
//! random `[1, 77, cross_attention_dim]` tensor. It is exactly [`RocmTrainer::train_iteration`]
//! with that configuration (no gradient clipping).
//!
//! `--concurrent` (default on, [`TrainConfig::concurrent`]) runs independent model calls on a
//! second thread (`f_ref` alongside the policy; with checkpointing, each step's recomputation
//! alongside the previous step's backward), which PyTorch's eager loop does not do; `off`
//! measures the strictly sequential loop. `--kernels composed` runs SiLU and GroupNorm as Burn's
//! composed ops instead of rocm-kernels' fused Flex kernels (the default, `fused`), for a
//! before/after comparison in one build.
//!
//! [`TrainConfig::concurrent`]: rocm::trainer::TrainConfig::concurrent
//!
//! Prints one JSON line with `--json` (`config`, `steps`, `iters`, `s_per_iter` = median,
//! `peak_rss_mib` = the process's own peak resident set, `backend`, …), else a table.
//! `s_first_iter` is the first iteration's seconds (the cold start: kernel compilation and
//! autotuning on GPU backends); every iteration is timed until the device is idle. On GPU
//! backends `device_reserved_mib` / `device_in_use_mib` are the allocator's largest readings
//! after an iteration and `device_pool_peak_mib` its pools' peak (`rocm::bench::device_memory`;
//! `null` on flex). `--config dreamshaper` is the real-size workload for GPUs (LCM Dreamshaper
//! v7's UNet at 512², SD's VAE; `benches/gpu.sh`). `--device auto|flex|wgpu|cuda[:N]` (default
//! `auto`). Arguments are parsed with clap (`--help` lists them); bad input prints one line on
//! stderr and exits with code 2.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::process::ExitCode;

use burn::module::Module;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Arg, ArgAction, ArgMatches, Command};
use rocm::bench::{BenchModels, BenchSize, bench_train_config, time_iterations};
use rocm::lora::{LoraContainer, LoraLayerRef};
use rocm::reward::RewardKind;
use rocm::run::{
    Adapters, ModelSource, PipelineTrainer, PromptSource, RewardSection, Run, RunConfig,
};
use rocm::trainer::RocmTrainer;
use rocm_shapes::world::Split;

mod common;

/// The shipped shapes world, next to this package's manifest.
const WORLD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/rocm-shapes/assets/world"
);

/// The shapes workload's batch (prompts per iteration).
const SHAPES_BATCH: usize = 8;

/// Which workload.
#[derive(Clone, Copy, Debug)]
enum Workload {
    /// A random-weight UNet + VAE of this size with the colour reward.
    Random(BenchSize),
    /// The shipped shapes-world LCM with its preference model.
    Shapes,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Random(size) => size.fmt(f),
            Self::Shapes => f.write_str("shapes"),
        }
    }
}

impl std::str::FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shapes" => Ok(Self::Shapes),
            other => other
                .parse()
                .map(Self::Random)
                .map_err(|e| format!("{e}, or `shapes` (the shipped shapes-world LCM)")),
        }
    }
}

/// Parsed command line.
#[derive(Debug)]
struct Args {
    config: Workload,
    iters: usize,
    warmup: usize,
    checkpointing: bool,
    concurrent: bool,
    kernels: rocm::kernels::KernelMode,
    device: String,
    json: bool,
}

/// An `on|off` switch, as a `bool`.
fn on_off(id: &'static str, default: &'static str, help: &'static str) -> Arg {
    Arg::new(id)
        .long(id)
        .value_name("on|off")
        .default_value(default)
        .value_parser(PossibleValuesParser::new(["on", "off"]).map(|v| v == "on"))
        .help(help)
}

fn cli() -> Command {
    Command::new("bench_rocm")
        .about("One ROCM training iteration on a random-weight LCM UNet + VAE, timed")
        .arg(
            Arg::new("config")
                .long("config")
                .required(true)
                .value_name("tiny|small|dreamshaper|shapes")
                .value_parser(|text: &str| text.parse::<Workload>())
                .help("The workload: a random-weight model's size, or the shipped shapes LCM"),
        )
        .arg(
            Arg::new("iters")
                .long("iters")
                .value_name("N")
                .default_value("10")
                .value_parser(common::at_least_one)
                .help("Timed iterations (at least 1)"),
        )
        .arg(
            Arg::new("warmup")
                .long("warmup")
                .value_name("W")
                .default_value("2")
                .value_parser(clap::value_parser!(usize))
                .help("Untimed iterations first"),
        )
        .arg(on_off(
            "checkpointing",
            "off",
            "Per-step gradient checkpointing",
        ))
        .arg(on_off(
            "concurrent",
            "on",
            "Independent model calls on a second thread",
        ))
        .arg(
            Arg::new("kernels")
                .long("kernels")
                .value_name("fused|composed")
                .default_value("fused")
                .value_parser(PossibleValuesParser::new(["fused", "composed"]))
                .help("rocm-kernels' fused SiLU/GroupNorm kernels, or Burn's composed ops"),
        )
        .arg(
            Arg::new("device")
                .long("device")
                .value_name("NAME")
                .default_value("auto")
                .help("auto, flex (CPU), wgpu, cuda[:N]"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print one JSON line instead of a table"),
        )
}

impl Args {
    fn from_matches(m: &ArgMatches) -> Self {
        let count = |id: &str, default: usize| m.get_one::<usize>(id).copied().unwrap_or(default);
        let switch = |id: &str| m.get_one::<bool>(id).copied().unwrap_or_default();
        Self {
            config: m
                .get_one::<Workload>("config")
                .copied()
                .unwrap_or(Workload::Random(BenchSize::Tiny)),
            iters: count("iters", 10),
            warmup: count("warmup", 2),
            checkpointing: switch("checkpointing"),
            concurrent: switch("concurrent"),
            kernels: match m.get_one::<String>("kernels").map(String::as_str) {
                Some("composed") => rocm::kernels::KernelMode::Composed,
                _ => rocm::kernels::KernelMode::Fused,
            },
            device: m.get_one::<String>("device").cloned().unwrap_or_default(),
            json: m.get_flag("json"),
        }
    }
}

/// The process's peak resident set in MiB (`VmHWM` of `/proc/self/status`; Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The rayon worker count that burn-flex runs on.
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What the report says about the trained model.
struct ModelInfo {
    base_params: usize,
    lora_params: usize,
    adapters: usize,
    batch: usize,
}

/// The random-weight workload of `size` (`rocm::bench`).
fn random_trainer(
    size: BenchSize,
    args: &Args,
    device: burn::prelude::Device,
) -> Result<(PipelineTrainer, ModelInfo), Box<dyn std::error::Error>> {
    let models = BenchModels::new(size, &device)?;
    let info = ModelInfo {
        base_params: models.base_params,
        lora_params: models.lora_params,
        adapters: models.lora_layers,
        batch: 1,
    };
    let config = bench_train_config(args.checkpointing, args.concurrent);
    let conditioning = models.conditioning;
    let encode = move |prompts: &[String]| conditioning.clone().repeat_dim(0, prompts.len());
    // SD 1.5's LCM schedule: the random-weight UNet has no schedule of its own.
    let trainer = RocmTrainer::builder(config)
        .model(models.unet)
        .reward(models.reward)
        .prompts(vec![String::new()], encode)
        .scheduler(rocm::sampler::LcmScheduler::default())
        .latent_shape(models.latent_shape)
        .device(device)
        .build()?;
    Ok((trainer, info))
}

/// The shapes workload: the shipped LCM and preference model through a run configuration.
fn shapes_trainer(args: &Args) -> Result<(PipelineTrainer, ModelInfo), Box<dyn std::error::Error>> {
    let model = format!("{WORLD}/shapes-lcm");
    let config = RunConfig {
        model: ModelSource::Pretrained(model.clone()),
        reward: Some(RewardSection {
            kind: RewardKind::PickScore,
            model: Some(format!("{WORLD}/pref")),
            head: None,
        }),
        prompts: Some(PromptSource::List(
            Split::Train
                .scenes(0, 256)
                .into_iter()
                .map(|s| s.caption)
                .collect(),
        )),
        held_out: Vec::new(),
        train: rocm::trainer::TrainConfig {
            batch_size: SHAPES_BATCH,
            ..bench_train_config(args.checkpointing, args.concurrent)
        },
        base_dir: None,
    };
    let built = config.build(&args.device, Adapters::New)?;
    let Run::Pipeline(trainer) = built.run else {
        return Err(format!("{model}: not an LCM pipeline").into());
    };
    let unet = trainer.model();
    let mut adapters = 0;
    let mut lora_params = 0;
    unet.visit_lora_layers("", &mut |_, layer| {
        let params = match layer {
            LoraLayerRef::Linear(l) => l.lora.as_ref().map(Module::num_params),
            LoraLayerRef::Conv2d(c) => c.lora.as_ref().map(Module::num_params),
        };
        if let Some(n) = params {
            adapters += 1;
            lora_params += n;
        }
    });
    let info = ModelInfo {
        base_params: unet.num_params() - lora_params,
        lora_params,
        adapters,
        batch: SHAPES_BATCH,
    };
    Ok((*trainer, info))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    rocm::kernels::set_mode(args.kernels);
    let (device, backend) = rocm::select_device(&args.device)?;
    let device = device.autodiff();
    let (mut trainer, info) = match args.config {
        Workload::Random(size) => random_trainer(size, args, device)?,
        Workload::Shapes => shapes_trainer(args)?,
    };
    let steps = trainer.config().num_steps;
    let ModelInfo {
        base_params,
        lora_params,
        adapters,
        batch,
    } = info;
    // Each iteration is timed until the device is idle (GPU backends queue their kernels).
    let (probe, _) = rocm::select_device(&args.device)?;
    let (warmup, iters) = (args.warmup, args.iters);
    let times = time_iterations::<Box<dyn std::error::Error>>(
        &probe,
        warmup,
        iters,
        || Ok(trainer.train_iteration()?.loss),
        |i, s, loss| {
            if !args.json {
                let (what, n, of) = if i < warmup {
                    ("warmup", i + 1, warmup)
                } else {
                    ("iter", i + 1 - warmup, iters)
                };
                eprintln!("{what} {n}/{of}: {s:.3} s, loss {loss:.5}");
            }
        },
    )?;
    let (seconds, losses) = (&times.timed, &times.losses);
    let s_per_iter = median(seconds);
    let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
    let min = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let first = times.first();
    let memory = times.memory;
    let peak = peak_rss_mib();
    let record = serde_json::json!({
        "impl": "rocm-rs",
        "config": args.config.to_string(),
        "steps": steps,
        "batch": batch,
        "iters": args.iters,
        "warmup": args.warmup,
        "s_per_iter": s_per_iter,
        "s_per_iter_min": min,
        "s_per_iter_mean": mean,
        "peak_rss_mib": peak,
        "backend": backend.to_string(),
        "threads": threads(),
        "checkpointing": if args.checkpointing { "on" } else { "off" },
        "concurrent": if args.concurrent { "on" } else { "off" },
        "kernels": if args.kernels == rocm::kernels::KernelMode::Composed { "composed" } else { "fused" },
        "loss_first": losses.first(),
        "loss_last": losses.last(),
        "trainable_params": lora_params,
        "lora_layers": adapters,
        "base_params": base_params,
        "s_first_iter": first,
        "device_reserved_mib": memory.map(|m| m.reserved_mib),
        "device_in_use_mib": memory.map(|m| m.in_use_mib),
        "device_pool_peak_mib": memory.map(|m| m.pool_peak_mib),
    });
    if args.json {
        println!("{record}");
    } else {
        println!(
            "bench_rocm: config {}, K = {steps}, batch {batch}",
            args.config
        );
        println!("  backend            {backend} ({} threads)", threads());
        println!("  checkpointing      {}", record["checkpointing"]);
        println!("  concurrent         {}", record["concurrent"]);
        println!("  kernels            {}", record["kernels"]);
        println!("  UNet params        {base_params} (+{lora_params} LoRA in {adapters} layers)");
        println!("  s/iter (median)    {s_per_iter:.4}   min {min:.4}   mean {mean:.4}");
        if let Some(f) = first {
            println!("  first iteration    {f:.4} s");
        }
        match peak {
            Some(p) => println!("  peak RSS           {p:.1} MiB"),
            None => println!("  peak RSS           unknown (no /proc/self/status)"),
        }
        if let Some(m) = memory {
            println!(
                "  device memory      {:.1} MiB reserved, {:.1} MiB in use (largest after an \
                 iteration), pool peak {:.1} MiB",
                m.reserved_mib, m.in_use_mib, m.pool_peak_mib
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main(cli(), |m| run(&Args::from_matches(m)))
}
