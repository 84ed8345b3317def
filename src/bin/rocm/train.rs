//! `rocm train`: the embedded toy or a diffusers pipeline, fine-tuned with ROCM.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm::Backend;
use rocm::divergence::FDivergence;
use rocm::lora::{DIFFUSERS_WEIGHTS, LoraContainer, PEFT_WEIGHTS, apply_lora, load_adapters};
use rocm::models::pipeline::LcmPipeline;
use rocm::models::{AutoencoderKL, UNet2DConditionModel};
use rocm::rewards::RewardModel;
use rocm::sampler::{ConsistencyModel, LcmScheduler, Sampler};
use rocm::trainer::toy::{Mixture, ProxyX, ToyPointModel, ToyPointModelConfig, pretrain_denoiser};
use rocm::trainer::{
    DecodedReward, IterationMetrics, LatentReward, PromptEncoder, RocmTrainer, TextEncoder,
    TrainConfig, Unconditional, checkpoint, plot,
};

use crate::Failure;
use crate::progress::Progress;
use rocm::reward;

/// What `rocm train` was asked to do.
pub struct TrainArgs {
    /// The TOML configuration.
    pub config: PathBuf,
    /// Continue from the newest checkpoint.
    pub resume: bool,
    /// `flex`, `wgpu`, `cuda[:N]`, `auto`.
    pub device: String,
    /// The reward's model folder or hub id (default: the reward's usual hub id).
    pub reward_model: Option<String>,
    /// The aesthetic reward's head file (default: the LAION head embedded in rocm-rewards).
    pub reward_head: Option<PathBuf>,
}

/// Runs `rocm train`.
pub fn train(args: &TrainArgs) -> Result<(), Failure> {
    let config = TrainConfig::load(&args.config)?;
    if config.pretrained_model == "toy" {
        let (trainer, backend) = toy_trainer(config, args, Adapters::New)?;
        drive(trainer, args.resume, &backend.to_string())
    } else {
        let prompts = training_prompts(&config, &args.config)?;
        let (trainer, backend) = pipeline_trainer(config, prompts, args, Adapters::New)?;
        drive(trainer, args.resume, &backend.to_string())
    }
}

/// Which LoRA adapters the model gets.
#[derive(Clone, Copy, Debug)]
pub enum Adapters<'a> {
    /// New ones from the configuration's `[lora]` section (training).
    New,
    /// Those of an adapter file or checkpoint folder (see `rocm_lora::load_adapters`), or
    /// none.
    Load(Option<&'a Path>),
}

impl Adapters<'_> {
    /// Attaches the adapters to `model`.
    fn attach<M: Module + LoraContainer>(
        self,
        model: &mut M,
        config: &TrainConfig,
    ) -> Result<(), Failure> {
        match self {
            Self::New => drop(apply_lora(model, &config.lora.to_lora_config())?),
            Self::Load(Some(path)) => {
                let report = load_adapters(model, path)
                    .map_err(|e| format!("LoRA adapters {}: {e}", path.display()))?;
                eprintln!(
                    "loaded {} LoRA adapters from {}",
                    report.loaded.len(),
                    report.file.display()
                );
            }
            Self::Load(None) => {}
        }
        Ok(())
    }
}

/// The divergence type of every CLI run.
type Divergence = Box<dyn FDivergence + Send + Sync>;

/// The trainer of the embedded toy.
pub type ToyTrainer = RocmTrainer<2, ToyPointModel, ProxyX, Divergence, Unconditional>;

/// The trainer of a diffusers pipeline.
pub type PipelineTrainer = RocmTrainer<
    4,
    UNet2DConditionModel,
    DecodedReward<AutoencoderKL, Box<dyn RewardModel>>,
    Divergence,
    TextEncoder,
>;

/// The embedded toy: the quickstart's 2-D point model, pretrained on the spot (deterministic,
/// so a checkpoint's adapters fit it again), with the x-coordinate as reward.
pub fn toy_trainer(
    config: TrainConfig,
    args: &TrainArgs,
    adapters: Adapters,
) -> Result<(ToyTrainer, Backend), Failure> {
    let (device, backend) = rocm::select_device(&args.device)?;
    let device = device.autodiff();
    let untrained = ToyPointModelConfig::new().init_seeded(0, &device);
    let data = Mixture::ring(8, 2.0, 0.25);
    let mut model = pretrain_denoiser(
        untrained,
        &data,
        &LcmScheduler::default(),
        600,
        512,
        1,
        &device,
    );
    adapters.attach(&mut model, &config)?;
    let divergence = config.divergence()?;
    let prompts = vec![String::new()];
    let trainer = RocmTrainer::new(
        model,
        ProxyX,
        divergence,
        Unconditional,
        prompts,
        [1, 2],
        config,
        device,
    )?;
    Ok((trainer, backend))
}

/// A diffusers LCM pipeline (folder or hub id): LoRA on the UNet, the frozen CLIP text encoder,
/// the VAE decoder in front of the configured image reward, and the pipeline's scheduler.
pub fn pipeline_trainer(
    config: TrainConfig,
    prompts: Vec<String>,
    args: &TrainArgs,
    adapters: Adapters,
) -> Result<(PipelineTrainer, Backend), Failure> {
    let (device, backend) = rocm::select_device(&args.device)?;
    let device = device.autodiff();
    // The reward first: a missing reward model fails before the (large) pipeline loads.
    let image_reward = reward::by_name(
        &config.reward,
        args.reward_model.as_deref(),
        args.reward_head.as_deref(),
        &device,
    )?;
    let pipeline = load_pipeline(&config.pretrained_model, "pretrained_model", &device)?;
    let latent_shape = pipeline.latent_shape(1);
    let sampler = Sampler::new(pipeline.scheduler.clone());
    let mut unet = pipeline.unet;
    adapters.attach(&mut unet, &config)?;
    let reward = DecodedReward::new(pipeline.vae.no_grad(), image_reward);
    let encoder = TextEncoder::new(pipeline.tokenizer, pipeline.text_encoder, &device);
    encoder.check_prompts(prompts.iter().chain(&config.eval_prompts))?;
    let divergence = config.divergence()?;
    let trainer = RocmTrainer::new(
        unet,
        reward,
        divergence,
        encoder,
        prompts,
        latent_shape,
        config,
        device,
    )?
    .with_sampler(sampler);
    Ok((trainer, backend))
}

/// Loads a diffusers LCM pipeline: a folder, or a hub id (`Org/Name`) from the local cache.
/// Errors name the model as `what` (`pretrained_model`, `--model`).
pub fn load_pipeline(model: &str, what: &str, device: &Device) -> Result<LcmPipeline, Failure> {
    let path = Path::new(model);
    let looks_like_repo_id = model.matches('/').count() == 1
        && !model.starts_with(['.', '/', '~'])
        && !model.contains('\\');
    let pipeline = if path.is_dir() || !looks_like_repo_id {
        LcmPipeline::from_folder(path, device)
    } else {
        LcmPipeline::from_hub(model, device)
    };
    pipeline.map_err(|e| format!("{what} `{model}`: {e}").into())
}

/// Checks that `path` is an adapter file or a folder holding one, before anything loads.
pub fn check_lora(path: &Path) -> Result<(), Failure> {
    let holds_weights = [PEFT_WEIGHTS, DIFFUSERS_WEIGHTS]
        .iter()
        .any(|name| path.join(name).is_file());
    if path.is_file() || holds_weights {
        return Ok(());
    }
    let why = if path.is_dir() {
        format!("a folder without {PEFT_WEIGHTS} or {DIFFUSERS_WEIGHTS}")
    } else {
        "no such file or folder".to_string()
    };
    Err(format!("--lora {}: {why}", path.display()).into())
}

/// The training prompts: the non-empty lines of `prompts_file` (relative paths are tried
/// against the working directory, then the configuration's folder), else the evaluation prompts.
pub fn training_prompts(config: &TrainConfig, config_path: &Path) -> Result<Vec<String>, Failure> {
    let Some(file) = &config.prompts_file else {
        if config.eval_prompts.is_empty() {
            return Err(format!(
                "{}: no prompts: set `prompts_file` or `eval_prompts`",
                config_path.display()
            )
            .into());
        }
        return Ok(config.eval_prompts.clone());
    };
    let beside = config_path.parent().unwrap_or(Path::new(".")).join(file);
    let path = if file.is_relative() && !file.exists() && beside.exists() {
        beside
    } else {
        file.clone()
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: prompts_file {}: {e}",
            config_path.display(),
            path.display()
        )
    })?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return Err(format!("prompts_file {} has no prompts", path.display()).into());
    }
    Ok(prompts)
}

/// The metrics of the steps up to `step` already in `<out>/metrics.jsonl` (after `--resume`).
fn previous_metrics(out: &Path, step: usize) -> Vec<IterationMetrics> {
    let Ok(text) = std::fs::read_to_string(out.join("metrics.jsonl")) else {
        return Vec::new();
    };
    let mut metrics: Vec<IterationMetrics> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<IterationMetrics>(l).ok())
        .filter(|m| m.step <= step)
        .collect();
    // A run resumed more than once repeats steps: keep each step's last line.
    metrics.reverse();
    let mut seen = std::collections::HashSet::new();
    metrics.retain(|m| seen.insert(m.step));
    metrics.reverse();
    metrics
}

/// Resumes if asked, trains with progress on stderr, and writes the PNG plots into the output
/// directory at every checkpoint and at the end (also when the run fails).
fn drive<const D: usize, M, R, F, P>(
    mut trainer: RocmTrainer<D, M, R, F, P>,
    resume: bool,
    backend: &str,
) -> Result<(), Failure>
where
    M: ConsistencyModel<D> + Module + LoraContainer,
    R: LatentReward<D>,
    F: FDivergence,
    P: PromptEncoder<<M as ConsistencyModel<D>>::Conditioning>,
{
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
    let total = trainer.config().iterations;
    let every = trainer.config().checkpoint_every;
    let mut history = if resume {
        previous_metrics(&out, trainer.step())
    } else {
        Vec::new()
    };
    eprintln!(
        "training on {backend}: iterations {} to {total}",
        trainer.step() + 1
    );
    let progress = Progress::new(total, trainer.step());
    let mut plot_error = None;
    let result = trainer.run(|m| {
        progress.update(m);
        history.push(m.clone());
        let checkpointed = (every > 0 && m.step.is_multiple_of(every)) || m.step == total;
        if checkpointed && let Err(e) = plot::metrics_plots(&out, &history) {
            plot_error.get_or_insert(e);
        }
    });
    progress.finish();
    if result.is_err() && !history.is_empty() {
        plot::metrics_plots(&out, &history).ok();
    }
    result?;
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
