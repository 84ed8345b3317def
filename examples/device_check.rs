//! Checks a compute device against the CPU reference (burn-flex): the benchmark's tiny UNet
//! forward and one ROCM iteration, on identical weights and noise.
//!
//! ```text
//! cargo run --release --features cuda --example device_check -- --device cuda [--config tiny]
//!     [--tolerance 1e-4] [--json]
//! ```
//!
//! The models of `rocm::bench` are built once on flex (seed 0) and copied to `--device`
//! ([`BenchModels::fork`]), so both sides hold the same weights; the latents and the
//! sampler's noise are drawn on the host from seeded streams, so both sides see the same
//! numbers. Compared, each as `max |x − x_ref|` and that over `max |x_ref|` (the relative
//! difference):
//!
//! - the UNet's noise prediction at t = 999 and t = 499 (guidance embedding drawn too);
//! - one ROCM iteration's loss, reward, per-step divergences and every adapter gradient
//!   ([`RocmTrainer::iteration_gradients`]), with per-step checkpointing off and on;
//! - one full [`RocmTrainer::train_iteration`] (AdamW step included): its loss and gradient norm,
//!   and, reported but not judged, the adapters after the step (Adam's first step moves each
//!   weight by about ±lr, so a gradient that is zero up to rounding can flip its sign: up to
//!   2·lr apart).
//!
//! Exits with 0 when every judged relative difference is at most `--tolerance`, 1 when one is
//! not, 2 on an error (the device cannot be opened, a bad argument). `--device flex` checks
//! flex against itself (all differences 0: the harness's own test).

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::process::ExitCode;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use clap::{Arg, ArgAction, ArgMatches, Command};
use rocm::bench::{BenchModels, BenchSize, bench_train_config};
use rocm::sampler::SamplerNoise;
use rocm::trainer::RocmTrainer;
use rocm::trainer::grads::flat_gradients;

mod common;

/// Parsed command line.
#[derive(Debug)]
struct Args {
    device: String,
    config: BenchSize,
    tolerance: f64,
    json: bool,
}

fn cli() -> Command {
    Command::new("device_check")
        .about("Checks a device against flex: the tiny UNet forward and one ROCM iteration")
        .arg(
            Arg::new("device")
                .long("device")
                .value_name("NAME")
                .required(true)
                .help("The device to check: cuda[:N], wgpu, flex"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("tiny|small")
                .default_value("tiny")
                .value_parser(|text: &str| text.parse::<BenchSize>())
                .help("The benchmark models to compare on"),
        )
        .arg(
            Arg::new("tolerance")
                .long("tolerance")
                .value_name("REL")
                .default_value("1e-4")
                .value_parser(clap::value_parser!(f64))
                .help("Largest relative difference that passes"),
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
        Self {
            device: m.get_one::<String>("device").cloned().unwrap_or_default(),
            config: m
                .get_one::<BenchSize>("config")
                .copied()
                .unwrap_or(BenchSize::Tiny),
            tolerance: m.get_one::<f64>("tolerance").copied().unwrap_or(1e-4),
            json: m.get_flag("json"),
        }
    }
}

/// One compared quantity.
#[derive(Debug)]
struct Row {
    name: String,
    max_abs: f64,
    max_ref: f64,
    /// Judged against the tolerance (the weights after Adam's step are only reported).
    judged: bool,
}

impl Row {
    fn rel(&self) -> f64 {
        if self.max_ref > 0.0 {
            self.max_abs / self.max_ref
        } else {
            self.max_abs
        }
    }
}

/// The comparison so far.
#[derive(Debug, Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn values(&mut self, name: impl Into<String>, x: &[f32], reference: &[f32], judged: bool) {
        let name = name.into();
        let (max_abs, max_ref) = if x.len() == reference.len() {
            x.iter()
                .zip(reference)
                .fold((0.0f64, 0.0f64), |(d, m), (a, b)| {
                    let diff = f64::from((a - b).abs());
                    // NaN on either side fails the check.
                    let diff = if diff.is_nan() { f64::INFINITY } else { diff };
                    (d.max(diff), m.max(f64::from(b.abs())))
                })
        } else {
            (f64::INFINITY, 0.0)
        };
        self.rows.push(Row {
            name,
            max_abs,
            max_ref,
            judged,
        });
    }

    fn scalar(&mut self, name: impl Into<String>, x: f64, reference: f64) {
        self.values(name, &[x as f32], &[reference as f32], true);
    }

    fn tensors<const D: usize>(&mut self, name: impl Into<String>, x: Tensor<D>, r: Tensor<D>) {
        self.values(name, &host(x), &host(r), true);
    }

    fn worst(&self) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.judged)
            .map(Row::rel)
            .fold(0.0, f64::max)
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// The models of `config` on flex and on `device` (identical weights).
fn model_pair(
    config: BenchSize,
    flex: &Device,
    device: &Device,
) -> Result<(BenchModels, BenchModels), Box<dyn std::error::Error>> {
    let reference = BenchModels::new(config, flex)?.fork(flex);
    let candidate = BenchModels::new(config, flex)?.fork(device);
    Ok((reference, candidate))
}

/// A host-drawn standard-normal tensor of `shape` on `device` (the same numbers on every device).
fn drawn<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    SamplerNoise::from_seed(shape, 1, seed, device).initial
}

fn forward_check(
    config: BenchSize,
    flex: &Device,
    device: &Device,
    report: &mut Report,
) -> Result<(), Box<dyn std::error::Error>> {
    let (reference, candidate) = model_pair(config, flex, device)?;
    let guidance = config.unet_config().time_cond_proj_dim.unwrap_or(0);
    for (t, seed) in [(999.0, 11), (499.0, 12)] {
        let run = |m: &BenchModels, dev: &Device| {
            let x = drawn(m.latent_shape, seed, dev);
            let w = (guidance > 0).then(|| drawn([1, guidance], seed + 100, dev));
            let t = Tensor::<1>::full([1], t, dev);
            m.unet.forward(x, t, m.conditioning.clone(), w)
        };
        report.tensors(
            format!("UNet forward, t = {t}"),
            run(&candidate, device),
            run(&reference, flex),
        );
    }
    Ok(())
}

/// The benchmark's trainer.
type Trainer = RocmTrainer<4, rocm::models::UNet2DConditionModel>;

/// The trainers of one mode on both devices.
fn trainer_pair(
    config: BenchSize,
    checkpointing: bool,
    flex: &Device,
    device: &Device,
) -> Result<[Trainer; 2], Box<dyn std::error::Error>> {
    let (reference, candidate) = model_pair(config, flex, device)?;
    let train = bench_train_config(checkpointing, true);
    Ok([
        reference.into_trainer(train.clone(), flex.clone())?,
        candidate.into_trainer(train, device.clone())?,
    ])
}

fn iteration_check(
    config: BenchSize,
    checkpointing: bool,
    flex: &Device,
    device: &Device,
    report: &mut Report,
) -> Result<(), Box<dyn std::error::Error>> {
    let mode = if checkpointing { "per step" } else { "plain" };
    let [mut reference, mut candidate] = trainer_pair(config, checkpointing, flex, device)?;
    let r = reference.iteration_gradients()?;
    let c = candidate.iteration_gradients()?;
    report.scalar(format!("iteration loss ({mode})"), c.loss, r.loss);
    report.scalar(
        format!("iteration reward ({mode})"),
        c.reward_mean,
        r.reward_mean,
    );
    let to_f32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
    report.values(
        format!("per-step divergences ({mode})"),
        &to_f32(&c.divergence_per_step),
        &to_f32(&r.divergence_per_step),
        true,
    );
    let flatten = |grads: Vec<Tensor<1>>| grads.into_iter().flat_map(host).collect::<Vec<f32>>();
    report.values(
        format!("adapter gradients ({mode})"),
        &flatten(flat_gradients(candidate.model(), &c.grads)),
        &flatten(flat_gradients(reference.model(), &r.grads)),
        true,
    );
    Ok(())
}

/// Every float parameter of a module, flattened, in traversal order.
fn weights<M: Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(host(p.val()));
        }
    }
    let mut all = Collect(Vec::new());
    module.visit(&mut all);
    all.0
}

fn step_check(
    config: BenchSize,
    flex: &Device,
    device: &Device,
    report: &mut Report,
) -> Result<(), Box<dyn std::error::Error>> {
    let [mut reference, mut candidate] = trainer_pair(config, true, flex, device)?;
    let r = reference.train_iteration()?;
    let c = candidate.train_iteration()?;
    report.scalar("train_iteration loss", c.loss, r.loss);
    report.scalar("train_iteration gradient norm", c.grad_norm, r.grad_norm);
    report.values(
        "weights after the AdamW step (reported only)",
        &weights(candidate.model()),
        &weights(reference.model()),
        false,
    );
    Ok(())
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let (flex, _) = rocm::select_device("flex")?;
    let (device, backend) = rocm::select_device(&args.device)?;
    let (flex, device) = (flex.autodiff(), device.autodiff());
    let start = std::time::Instant::now();
    let mut report = Report::default();
    forward_check(args.config, &flex, &device, &mut report)?;
    for checkpointing in [false, true] {
        iteration_check(args.config, checkpointing, &flex, &device, &mut report)?;
    }
    step_check(args.config, &flex, &device, &mut report)?;
    let seconds = start.elapsed().as_secs_f64();
    let worst = report.worst();
    let pass = worst <= args.tolerance;
    if args.json {
        let rows: Vec<_> = report
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "max_abs": r.max_abs, "max_ref": r.max_ref,
                    "rel": r.rel(), "judged": r.judged,
                })
            })
            .collect();
        let record = serde_json::json!({
            "device": args.device, "backend": backend.to_string(),
            "config": args.config.to_string(), "tolerance": args.tolerance,
            "worst_rel": worst, "pass": pass, "seconds": seconds, "rows": rows,
        });
        println!("{record}");
    } else {
        println!(
            "device_check: {} ({backend}) against flex, config {}",
            args.device, args.config
        );
        println!(
            "  {:<48} {:>11} {:>11} {:>11}",
            "", "max |Δ|", "max |ref|", "relative"
        );
        for r in &report.rows {
            println!(
                "  {:<48} {:>11.3e} {:>11.3e} {:>11.3e}",
                r.name,
                r.max_abs,
                r.max_ref,
                r.rel()
            );
        }
        println!(
            "  worst judged relative difference {worst:.3e} (tolerance {:.0e}): {}; {seconds:.1} s",
            args.tolerance,
            if pass { "PASS" } else { "FAIL" }
        );
    }
    Ok(pass)
}

fn main() -> ExitCode {
    let mut passed = None;
    let code = common::main(cli(), |m| {
        passed = Some(run(&Args::from_matches(m))?);
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match passed {
        Some(false) => ExitCode::from(1),
        _ => code,
    }
}
