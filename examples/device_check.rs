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
//! - one full [`RocmTrainer::train_iteration`] without checkpointing (AdamW step included): its
//!   loss and gradient norm, and, reported but not judged, the adapters after the step (Adam's
//!   first step moves each weight by about ±lr, so a gradient that is zero up to rounding can
//!   flip its sign: up to 2·lr apart).
//!
//! Each judged difference has a limit: `--tolerance`, except the adapter gradients with per-step
//! checkpointing. Those are sums whose terms cancel to about 1e-4 of their size, and flex's own
//! per-step gradients differ from its plain ones by 2.5e-4 of their largest on `tiny` (the same
//! gradient summed in another order; measured, docs/backends.md). A device cannot be held
//! closer to flex than flex is to itself, so that row's limit is the larger of `--tolerance` and
//! three times that spread (capped at 1e-2), measured in the same run (and printed). The full
//! `train_iteration` runs without checkpointing, so its gradient norm is held to `--tolerance`.
//!
//! Exits with 0 when every judged relative difference is within its limit, 1 when one is not, 2
//! on an error (the device cannot be opened, a bad argument). `--device flex` checks flex against
//! itself (all device differences 0: the harness's own test).

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
    /// The largest relative difference that passes; `None`: reported only (the weights after
    /// Adam's step, flex's own spread).
    limit: Option<f64>,
}

impl Row {
    /// `x` against `reference`: `max |x − x_ref|` (infinite on a NaN or a length mismatch) and
    /// `max |x_ref|`.
    fn compare(name: String, x: &[f32], reference: &[f32], limit: Option<f64>) -> Self {
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
        Self {
            name,
            max_abs,
            max_ref,
            limit,
        }
    }

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
    fn values(
        &mut self,
        name: impl Into<String>,
        x: &[f32],
        reference: &[f32],
        limit: Option<f64>,
    ) {
        self.rows
            .push(Row::compare(name.into(), x, reference, limit));
    }

    fn scalar(&mut self, name: impl Into<String>, x: f64, reference: f64, limit: f64) {
        self.values(name, &[x as f32], &[reference as f32], Some(limit));
    }

    fn tensors<const D: usize>(
        &mut self,
        name: impl Into<String>,
        x: Tensor<D>,
        r: Tensor<D>,
        limit: f64,
    ) {
        self.values(name, &host(x), &host(r), Some(limit));
    }

    /// The largest judged difference as a fraction of its limit (at most 1 passes).
    fn worst(&self) -> f64 {
        self.rows
            .iter()
            .filter_map(|r| r.limit.map(|l| r.rel() / l))
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
    tolerance: f64,
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
            tolerance,
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

/// The per-step gradients' limit in units of flex's own spread. A third summation order sits
/// anywhere around flex's two: wgpu measured 1.1–1.7 spreads from flex's per-step gradients over
/// four runs, three with fresh autotuning (docs/backends.md), so 3 leaves room without hiding an
/// error.
const SPREAD_FACTOR: f64 = 3.0;

/// The most the per-step gradients' limit may grow to from flex's own spread.
const MAX_SPREAD_LIMIT: f64 = 1e-2;

/// One mode's adapter gradients, flattened: `(flex, device)`.
type GradientPair = (Vec<f32>, Vec<f32>);

/// Compares one ROCM iteration's loss, reward and divergences; returns both sides' adapter
/// gradients (judged by the caller, which knows flex's own spread).
fn iteration_check(
    config: BenchSize,
    checkpointing: bool,
    flex: &Device,
    device: &Device,
    tolerance: f64,
    report: &mut Report,
) -> Result<GradientPair, Box<dyn std::error::Error>> {
    let mode = if checkpointing { "per step" } else { "plain" };
    let [mut reference, mut candidate] = trainer_pair(config, checkpointing, flex, device)?;
    let r = reference.iteration_gradients()?;
    let c = candidate.iteration_gradients()?;
    report.scalar(
        format!("iteration loss ({mode})"),
        c.loss,
        r.loss,
        tolerance,
    );
    report.scalar(
        format!("iteration reward ({mode})"),
        c.reward_mean,
        r.reward_mean,
        tolerance,
    );
    let to_f32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
    report.values(
        format!("per-step divergences ({mode})"),
        &to_f32(&c.divergence_per_step),
        &to_f32(&r.divergence_per_step),
        Some(tolerance),
    );
    let flatten = |grads: Vec<Tensor<1>>| grads.into_iter().flat_map(host).collect::<Vec<f32>>();
    Ok((
        flatten(flat_gradients(reference.model(), &r.grads)),
        flatten(flat_gradients(candidate.model(), &c.grads)),
    ))
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
    tolerance: f64,
    report: &mut Report,
) -> Result<(), Box<dyn std::error::Error>> {
    // Plain mode: the per-step rows above already cover checkpointing, and the norm of plain
    // gradients is held to `tolerance` without their cancellation.
    let [mut reference, mut candidate] = trainer_pair(config, false, flex, device)?;
    let r = reference.train_iteration()?;
    let c = candidate.train_iteration()?;
    report.scalar("train_iteration loss", c.loss, r.loss, tolerance);
    report.scalar(
        "train_iteration gradient norm",
        c.grad_norm,
        r.grad_norm,
        tolerance,
    );
    report.values(
        "weights after the AdamW step",
        &weights(candidate.model()),
        &weights(reference.model()),
        None,
    );
    Ok(())
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let (flex, _) = rocm::select_device("flex")?;
    let (device, backend) = rocm::select_device(&args.device)?;
    let (flex, device) = (flex.autodiff(), device.autodiff());
    let start = std::time::Instant::now();
    let mut report = Report::default();
    let tol = args.tolerance;
    forward_check(args.config, &flex, &device, tol, &mut report)?;
    let (flex_plain, device_plain) =
        iteration_check(args.config, false, &flex, &device, tol, &mut report)?;
    report.values(
        "adapter gradients (plain)",
        &device_plain,
        &flex_plain,
        Some(tol),
    );
    let (flex_per_step, device_per_step) =
        iteration_check(args.config, true, &flex, &device, tol, &mut report)?;
    // flex against itself: what rounding alone puts between the two modes' gradients.
    let flex_itself = Row::compare(
        "flex itself: per-step against plain gradients".into(),
        &flex_per_step,
        &flex_plain,
        None,
    );
    let spread = flex_itself.rel();
    report.rows.push(flex_itself);
    report.values(
        "adapter gradients (per step)",
        &device_per_step,
        &flex_per_step,
        // Capped: a spread that large (or infinite) would be a flex bug, not rounding.
        Some(tol.max((SPREAD_FACTOR * spread).min(MAX_SPREAD_LIMIT))),
    );
    step_check(args.config, &flex, &device, tol, &mut report)?;
    let seconds = start.elapsed().as_secs_f64();
    let worst = report.worst();
    let pass = worst <= 1.0;
    if args.json {
        let rows: Vec<_> = report
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "max_abs": r.max_abs, "max_ref": r.max_ref,
                    "rel": r.rel(), "limit": r.limit,
                })
            })
            .collect();
        let record = serde_json::json!({
            "device": args.device, "backend": backend.to_string(),
            "config": args.config.to_string(), "tolerance": args.tolerance,
            "worst_fraction_of_limit": worst, "pass": pass, "seconds": seconds, "rows": rows,
        });
        println!("{record}");
    } else {
        println!(
            "device_check: {} ({backend}) against flex, config {}",
            args.device, args.config
        );
        println!(
            "  {:<48} {:>11} {:>11} {:>11} {:>11}",
            "", "max |Δ|", "max |ref|", "relative", "limit"
        );
        for r in &report.rows {
            let limit = r.limit.map_or("reported".into(), |l| format!("{l:.3e}"));
            println!(
                "  {:<48} {:>11.3e} {:>11.3e} {:>11.3e} {:>11}",
                r.name,
                r.max_abs,
                r.max_ref,
                r.rel(),
                limit
            );
        }
        println!(
            "  worst judged difference {worst:.3} of its limit (tolerance {:.0e}): {}; {seconds:.1} s",
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
