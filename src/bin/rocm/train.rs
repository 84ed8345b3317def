//! `rocm train`: a run configuration (the embedded toy or a diffusers pipeline), fine-tuned
//! with ROCM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rocm::lora::{DIFFUSERS_WEIGHTS, KOHYA_WEIGHTS, LoraContainer, PEFT_WEIGHTS};
use rocm::run::{Adapters, Built, Run, RunConfig};
use rocm::trainer::{
    IterationMetrics, RocmTrainer, TrainableModel, checkpoint, plot, read_metrics_jsonl,
};

use crate::Failure;
use crate::progress::Progress;

/// What `rocm train` (and `rocm eval`) was asked to do.
pub struct TrainArgs {
    /// The TOML run configuration.
    pub config: PathBuf,
    /// Continue from the newest checkpoint.
    pub resume: bool,
    /// `flex`, `wgpu`, `cuda[:N]`, `auto`.
    pub device: String,
    /// `--devices`: one data-parallel replica per device (overrides `train.devices`).
    pub devices: Vec<String>,
    /// The reward's model folder or hub id (overrides `reward.model`).
    pub reward_model: Option<String>,
    /// The aesthetic reward's head file (overrides `reward.head`).
    pub reward_head: Option<PathBuf>,
}

impl TrainArgs {
    /// The run configuration with the command line's reward overrides applied.
    pub fn run_config(&self) -> Result<RunConfig, Failure> {
        let mut config = RunConfig::load(&self.config)?;
        if let Some(reward) = config.reward.as_mut() {
            if let Some(model) = &self.reward_model {
                reward.model = Some(model.clone());
            }
            if let Some(head) = &self.reward_head {
                reward.head = Some(head.clone());
            }
        } else if self.reward_model.is_some() || self.reward_head.is_some() {
            return Err(format!(
                "{}: --reward-model/--reward-head given, but the configuration has no [reward]",
                self.config.display()
            )
            .into());
        }
        Ok(config)
    }

    /// Builds the configuration's run with `adapters`, reporting loaded adapters on stderr.
    pub fn build(&self, config: &RunConfig, adapters: Adapters) -> Result<Built, Failure> {
        let built = config.build(&self.device, adapters)?;
        if let Some(report) = &built.loaded {
            eprintln!(
                "loaded {} LoRA adapters from {}",
                report.loaded.len(),
                report.file.display()
            );
        }
        Ok(built)
    }
}

/// Runs `rocm train`.
pub fn train(args: &TrainArgs) -> Result<(), Failure> {
    let config = args.run_config()?;
    let devices = if args.devices.is_empty() {
        &config.train.devices
    } else {
        &args.devices
    };
    let built = config.build_replicated(devices, &args.device, Adapters::New)?;
    let backend = match devices.len() {
        0 | 1 => built.backend.to_string(),
        n => format!("{n} replicas ({})", devices.join(", ")),
    };
    match built.run {
        Run::Toy(trainer) => drive(*trainer, args.resume, &backend),
        Run::Pipeline(trainer) => drive(*trainer, args.resume, &backend),
    }
}

/// The exit code of a run stopped by SIGINT or SIGTERM after its final checkpoint (128 + SIGINT).
pub const INTERRUPTED: i32 = 130;

/// A flag set by the first SIGINT or SIGTERM; the run stops after the iteration in progress and
/// checkpoints it. A second signal while stopping ends the process at once (a checkpoint that
/// is then half-written stays a `.tmp` that resume ignores).
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Checks that `path` is an adapter file or a folder holding one, before anything loads.
pub fn check_lora(path: &Path) -> Result<(), Failure> {
    let holds_weights = [PEFT_WEIGHTS, DIFFUSERS_WEIGHTS, KOHYA_WEIGHTS]
        .iter()
        .any(|name| path.join(name).is_file());
    if path.is_file() || holds_weights {
        return Ok(());
    }
    let why = if path.is_dir() {
        format!("a folder without {PEFT_WEIGHTS}, {DIFFUSERS_WEIGHTS} or {KOHYA_WEIGHTS}")
    } else {
        "no such file or folder".to_string()
    };
    Err(format!("--lora {}: {why}", path.display()).into())
}

/// The metrics of the steps up to `step` already in `<out>/metrics.jsonl` (after `--resume`).
fn previous_metrics(out: &Path, step: usize) -> Vec<IterationMetrics> {
    let mut metrics = read_metrics_jsonl(&out.join("metrics.jsonl")).unwrap_or_default();
    metrics.retain(|m| m.step <= step);
    metrics
}

/// The run's name in the plots' legends: the output folder's name, the algorithm, the reward
/// and the divergence with its β.
fn run_label<const D: usize, M: TrainableModel<D>>(trainer: &RocmTrainer<D, M>) -> String {
    let c = trainer.config();
    let folder = c
        .output_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    format!(
        "{} ({}, {}, {} β = {})",
        folder.unwrap_or_else(|| "run".into()),
        c.algorithm.name(),
        trainer.reward_name(),
        trainer.divergence_name(),
        c.beta
    )
}

/// Resumes if asked, trains with progress on stderr, and writes the PNG plots into the output
/// directory at every checkpoint and at the end (also when the run fails).
fn drive<const D: usize, M: TrainableModel<D> + LoraContainer>(
    mut trainer: RocmTrainer<D, M>,
    resume: bool,
    backend: &str,
) -> Result<(), Failure> {
    if resume {
        let root = trainer.checkpoints_dir();
        match checkpoint::latest_checkpoint(&root)? {
            Some(dir) => {
                trainer.resume(&dir)?;
                eprintln!("resumed from {} at step {}", dir.display(), trainer.step());
            }
            None => eprintln!("no checkpoint under {}: starting at step 0", root.display()),
        }
    }
    let out = trainer.config().output_dir.clone();
    let run = run_label(&trainer);
    let total = trainer.config().iterations;
    let every = trainer.config().checkpoint_every;
    let mut history = if resume {
        previous_metrics(&out, trainer.step())
    } else {
        Vec::new()
    };
    eprintln!(
        "training on {backend}: iterations {} to {total}, reward {}, divergence {}",
        trainer.step() + 1,
        trainer.reward_name(),
        trainer.divergence_name()
    );
    let progress = Progress::new(total, trainer.step());
    let mut plot_error = None;
    let stop = stop_on_signals()?;
    let result = trainer.run_until(&stop, |m| {
        progress.update(m);
        history.push(m.clone());
        let checkpointed = (every > 0 && m.step.is_multiple_of(every)) || m.step == total;
        if checkpointed && let Err(e) = plot::metrics_plots(&out, &run, &history) {
            plot_error.get_or_insert(e);
        }
    });
    progress.finish();
    if result.is_err() && !history.is_empty() {
        plot::metrics_plots(&out, &run, &history).ok();
    }
    result?;
    if stop.load(Ordering::Relaxed) && trainer.step() < total {
        eprintln!(
            "interrupted: checkpoint of step {} under {}; `rocm train --resume` continues",
            trainer.step(),
            trainer.checkpoints_dir().display()
        );
        std::process::exit(INTERRUPTED);
    }
    if let Some(e) = plot_error {
        return Err(format!("plots in {}: {e}", out.display()).into());
    }
    println!(
        "wrote {0}/metrics.jsonl, {0}/metrics.csv, {0}/{{{1}}} and checkpoints under {2}",
        out.display(),
        plot::METRICS_PLOTS.join(","),
        trainer.checkpoints_dir().display()
    );
    let samples = out.join(rocm::trainer::SAMPLES_DIR);
    if samples.is_dir() {
        println!("evaluation grids under {}", samples.display());
    }
    Ok(())
}
