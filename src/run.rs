//! A whole run from one TOML file: which model, which reward, which prompts ([`RunConfig`]),
//! resolved into the typed parts of a [`RocmTrainer`] ([`RunConfig::build`]).
//!
//! ```toml
//! model = "SimianLuo/LCM_Dreamshaper_v7"   # "toy", a diffusers folder, or a hub id
//!
//! [reward]
//! kind = "pickscore"                       # see rocm::reward::RewardKind
//! # model = "path/to/PickScore_v1"         # default: the reward's usual hub id
//!
//! [prompts]
//! file = "../data/prompts/simple_animals.txt"   # or: list = ["a cat", "a dog"]
//!
//! [[held_out]]                             # optional: scored at every evaluation, never trained
//! kind = "clipscore"                       # (HeldOutSection; as many as you like)
//!
//! [train]                                  # rocm_trainer::TrainConfig
//! iterations = 1000
//! divergence = "kl"
//! [train.lora]
//! r = 16
//! ```
//!
//! Relative paths (`prompts.file`, `reward.head`) are tried against the working directory, then
//! the configuration file's folder. Unknown keys and values are refused with the valid ones.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Backend;
use crate::lora::{LoadReport, LoraContainer, apply_lora, load_adapters};
use crate::models::{LcmPipeline, UNet2DConditionModel};
use crate::reward::{RewardError, RewardKind};
use crate::rewards::RewardModel;
use crate::trainer::SamplerKind;
use crate::trainer::toy::{self, ProxyX, ToyPointModel};
use crate::trainer::{DecodedReward, RocmTrainer, TrainConfig};

/// The base model of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ModelSource {
    /// `"toy"`: the embedded 2-D point model ([`toy::pretrained`]), unconditional.
    Toy,
    /// A diffusers LCM pipeline: a local folder or a hub id in the local Hugging Face cache
    /// (`LcmPipeline::from_pretrained`).
    Pretrained(String),
}

impl From<String> for ModelSource {
    fn from(s: String) -> Self {
        if s == "toy" {
            Self::Toy
        } else {
            Self::Pretrained(s)
        }
    }
}

impl From<ModelSource> for String {
    fn from(m: ModelSource) -> Self {
        match m {
            ModelSource::Toy => "toy".into(),
            ModelSource::Pretrained(s) => s,
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Toy => f.write_str("toy"),
            Self::Pretrained(s) => f.write_str(s),
        }
    }
}

/// The `[reward]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSection {
    /// Which reward.
    pub kind: RewardKind,
    /// Its model: a folder or hub id (default: [`RewardKind::default_model`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The aesthetic reward's head file (default: the LAION head in rocm-rewards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<PathBuf>,
}

/// One entry of the `[[held_out]]` array: an image reward scored at every evaluation, on the
/// evaluation's images, next to the trained reward (`"held_out"` in `eval.jsonl`), never
/// trained on.
///
/// ```toml
/// [[held_out]]
/// kind = "clipscore"
/// model = "crates/rocm-shapes/assets/world/clip"
/// [[held_out]]
/// kind = "shapes-h"              # the shapes world's hidden preference
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOutSection {
    /// Which reward.
    pub kind: RewardKind,
    /// Its name in `eval.jsonl` (default: the reward's own, [`RewardKind::reward_name`]:
    /// `clipscore`, `h`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its model: a folder or hub id (default: [`RewardKind::default_model`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The aesthetic reward's head file (default: the LAION head in rocm-rewards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<PathBuf>,
}

/// A reward under another name (a `[[held_out]]` entry's `name`).
struct Renamed {
    name: String,
    inner: Box<dyn RewardModel>,
}

impl RewardModel for Renamed {
    fn name(&self) -> &str {
        &self.name
    }
    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        self.inner.reward(images, prompts)
    }
}

/// Where the training prompts come from (the `[prompts]` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PromptSource {
    /// `file = "…"`: one prompt per non-empty line (UTF-8).
    File(PathBuf),
    /// `list = ["…", …]`.
    List(Vec<String>),
}

/// A run configuration: the model, reward and prompts sources and the trainer's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The base model.
    pub model: ModelSource,
    /// The reward (optional for the toy, whose reward is `x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<RewardSection>,
    /// The training prompts (default: the evaluation prompts; the toy takes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PromptSource>,
    /// Rewards scored at evaluation only (the `[[held_out]]` array, image models only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out: Vec<HeldOutSection>,
    /// The trainer's settings.
    #[serde(default)]
    pub train: TrainConfig,
    /// The folder of the configuration file, against which relative paths are also tried.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// Errors of reading and resolving a run configuration; each names the file, key or model.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A prompts file could not be read.
    #[error("prompts file {path}: {source}{hint}")]
    Prompts {
        /// The file.
        path: PathBuf,
        /// How to make it, where the shipped documentation says.
        hint: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or value.
    #[error("{path}: {message}")]
    Parse {
        /// The file (`<string>` when parsed from memory).
        path: PathBuf,
        /// What the parser said, with the valid keys or values.
        message: String,
    },
    /// A key's value does not fit the rest of the configuration.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
    /// The base model did not load.
    #[error("model `{model}`: {message}")]
    Model {
        /// The configured model.
        model: String,
        /// What the loader said (names the file).
        message: String,
    },
    /// The reward did not load.
    #[error(transparent)]
    Reward(Box<RewardError>),
    /// Adapters did not load.
    #[error("LoRA adapters {path}: {source}")]
    Adapters {
        /// The adapter file or folder.
        path: PathBuf,
        /// What rocm-lora said.
        #[source]
        source: crate::lora::Error,
    },
    /// The device could not be selected.
    #[error(transparent)]
    Device(Box<crate::DeviceError>),
    /// The trainer refused its parts or settings.
    #[error(transparent)]
    Trainer(Box<crate::trainer::Error>),
}

impl From<RewardError> for RunError {
    fn from(e: RewardError) -> Self {
        Self::Reward(Box::new(e))
    }
}

impl From<crate::DeviceError> for RunError {
    fn from(e: crate::DeviceError) -> Self {
        Self::Device(Box::new(e))
    }
}

impl From<crate::trainer::Error> for RunError {
    fn from(e: crate::trainer::Error) -> Self {
        Self::Trainer(Box::new(e))
    }
}

/// The adapters a run's model gets.
#[derive(Clone, Copy, Debug)]
pub enum Adapters<'a> {
    /// New ones from `[train.lora]` (training).
    New,
    /// Those of an adapter file or checkpoint folder (`rocm_lora::load_adapters`), or none.
    Load(Option<&'a Path>),
}

/// A trainer of the embedded toy.
pub type ToyTrainer = RocmTrainer<2, ToyPointModel>;

/// A trainer of a diffusers pipeline's UNet.
pub type PipelineTrainer = RocmTrainer<4, UNet2DConditionModel>;

/// A built run: the trainer of its model.
pub enum Run {
    /// `model = "toy"`.
    Toy(Box<ToyTrainer>),
    /// A diffusers pipeline.
    Pipeline(Box<PipelineTrainer>),
}

/// A built run with what was loaded for it.
pub struct Built {
    /// The trainer.
    pub run: Run,
    /// The backend it runs on.
    pub backend: Backend,
    /// The adapters loaded ([`Adapters::Load`]), if any.
    pub loaded: Option<LoadReport>,
}

impl RunConfig {
    /// Reads a run configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, RunError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RunError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text, path)?;
        config.base_dir = path.parent().map(Path::to_path_buf);
        Ok(config)
    }

    /// Parses and checks a run configuration; `path` only names the source in errors.
    pub fn from_toml_str(text: &str, path: impl AsRef<Path>) -> Result<Self, RunError> {
        let path = path.as_ref();
        let config: Self = toml::from_str(text).map_err(|e| RunError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.train.validate().map_err(|e| RunError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check(path)?;
        Ok(config)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialise: {e}"))
    }

    /// The configuration file's name for errors.
    fn source_name(&self) -> PathBuf {
        self.base_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("<run config>"))
    }

    fn check(&self, path: &Path) -> Result<(), RunError> {
        let invalid = |key, message: String| {
            Err(RunError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })
        };
        let kind = self.reward.as_ref().map(|r| r.kind);
        match (&self.model, kind) {
            (ModelSource::Toy, Some(k)) if k != RewardKind::X => invalid(
                "reward.kind",
                format!("the toy scores 2-D points: its reward is `x`, not `{k}`"),
            ),
            (ModelSource::Toy, _) if self.prompts.is_some() => invalid(
                "prompts",
                "the toy is unconditional: remove the [prompts] table".into(),
            ),
            (ModelSource::Pretrained(_), None) => invalid(
                "reward",
                format!(
                    "a pipeline needs a [reward] table with `kind` (one of {})",
                    RewardKind::names()
                ),
            ),
            (ModelSource::Pretrained(_), Some(RewardKind::X)) => invalid(
                "reward.kind",
                "`x` is the toy's reward; a pipeline needs an image reward".into(),
            ),
            (_, Some(k)) if !k.is_differentiable() => invalid(
                "reward.kind",
                format!(
                    "`{k}` is for evaluation only (not differentiable): list it under \
                     [[held_out]] and train on another reward"
                ),
            ),
            (ModelSource::Toy, _) if !self.held_out.is_empty() => invalid(
                "held_out",
                "held-out rewards score images: the toy has none".into(),
            ),
            _ => self.check_held_out(path),
        }
    }

    fn check_held_out(&self, path: &Path) -> Result<(), RunError> {
        let mut names: Vec<String> = Vec::new();
        for h in &self.held_out {
            let name = h
                .name
                .clone()
                .unwrap_or_else(|| h.kind.reward_name().to_string());
            let message = if !h.kind.is_image_reward() {
                format!("`{}` is not an image reward", h.kind)
            } else if name.is_empty() || name.contains(',') {
                format!("the name `{name}` must be non-empty and without commas")
            } else if names.contains(&name) {
                format!("two entries are named `{name}`: give one a `name`")
            } else {
                names.push(name);
                continue;
            };
            return Err(RunError::Invalid {
                path: path.to_path_buf(),
                key: "held_out",
                message,
            });
        }
        Ok(())
    }

    /// Loads a reward of `kind` from `model`, its `head` file resolved as the configuration's
    /// relative paths are ([`RunConfig::resolve_path`]): `[reward]` and each `[[held_out]]`.
    fn load_reward(
        &self,
        kind: RewardKind,
        model: Option<&str>,
        head: Option<&Path>,
        device: &Device,
    ) -> Result<Box<dyn RewardModel>, RunError> {
        let head = head.map(|h| self.resolve_path(h));
        Ok(kind.load(model, head.as_deref(), device)?)
    }

    /// Loads the `[[held_out]]` rewards on `device`, renamed where an entry has a `name`.
    pub fn held_out_rewards(&self, device: &Device) -> Result<Vec<Box<dyn RewardModel>>, RunError> {
        self.held_out
            .iter()
            .map(|h| {
                let inner =
                    self.load_reward(h.kind, h.model.as_deref(), h.head.as_deref(), device)?;
                Ok(match &h.name {
                    Some(name) => Box::new(Renamed {
                        name: name.clone(),
                        inner,
                    }) as Box<dyn RewardModel>,
                    None => inner,
                })
            })
            .collect()
    }

    /// A relative path as given if it exists from the working directory, else from the
    /// configuration's folder (when that exists), else as given.
    pub fn resolve_path(&self, file: &Path) -> PathBuf {
        if file.is_absolute() || file.exists() {
            return file.to_path_buf();
        }
        match &self.base_dir {
            Some(dir) if dir.join(file).exists() => dir.join(file),
            _ => file.to_path_buf(),
        }
    }

    /// The training prompts: the `[prompts]` source, else the evaluation prompts; none for the
    /// toy. A prompts file that is missing gets its error, with how to make it when the
    /// shipped README says (`data/prompts/README.md`).
    pub fn training_prompts(&self) -> Result<Vec<String>, RunError> {
        let path = self.source_name();
        let prompts = match (&self.prompts, &self.model) {
            (_, ModelSource::Toy) => return Ok(Vec::new()),
            (Some(PromptSource::List(list)), _) => list.clone(),
            (Some(PromptSource::File(file)), _) => read_prompts(&self.resolve_path(file))?,
            (None, _) => self.train.eval_prompts.clone(),
        };
        if prompts.iter().all(|p| p.trim().is_empty()) {
            return Err(RunError::Invalid {
                path,
                key: "prompts",
                message: "no training prompts: set [prompts] file or list, or train.eval_prompts"
                    .into(),
            });
        }
        Ok(prompts)
    }

    /// Builds the run's trainer on `device` (`flex`, `wgpu`, `cuda[:N]`, `auto`): the toy, or a
    /// pipeline with the configured reward.
    pub fn build(&self, device: &str, adapters: Adapters) -> Result<Built, RunError> {
        self.build_inner(device, adapters, None)
    }

    /// [`RunConfig::build`] with an image reward of your own instead of `[reward]` (for a
    /// pipeline; the toy's reward is always `x`).
    pub fn build_with_reward(
        &self,
        device: &str,
        adapters: Adapters,
        reward: Box<dyn RewardModel>,
    ) -> Result<Built, RunError> {
        self.build_inner(device, adapters, Some(reward))
    }

    fn build_inner(
        &self,
        device: &str,
        adapters: Adapters,
        reward: Option<Box<dyn RewardModel>>,
    ) -> Result<Built, RunError> {
        let (device, backend) = crate::select_device(device)?;
        let device = device.autodiff();
        let train = self.train.clone();
        let (run, loaded) = match &self.model {
            ModelSource::Toy => {
                let mut model = toy::pretrained(&device);
                let loaded = attach(&mut model, &train, adapters)?;
                let trainer = RocmTrainer::builder(train)
                    .model(model)
                    .reward(ProxyX)
                    .unconditional()
                    .scheduler(toy::scheduler())
                    .ddim_scheduler(toy::ddim_scheduler())
                    .latent_shape([1, 2])
                    .device(device)
                    .build()?;
                (Run::Toy(Box::new(trainer)), loaded)
            }
            ModelSource::Pretrained(name) => {
                let prompts = self.training_prompts()?;
                // The reward first: a missing reward model fails before the (large) pipeline.
                let reward = match (reward, &self.reward) {
                    (Some(reward), _) => reward,
                    (None, Some(section)) => self.load_reward(
                        section.kind,
                        section.model.as_deref(),
                        section.head.as_deref(),
                        &device,
                    )?,
                    (None, None) => {
                        return Err(RunError::Invalid {
                            path: self.source_name(),
                            key: "reward",
                            message: "a pipeline needs a [reward] table or a reward of your own"
                                .into(),
                        });
                    }
                };
                let held_out = self.held_out_rewards(&device)?;
                let pipeline =
                    LcmPipeline::from_pretrained(name, &device).map_err(|e| RunError::Model {
                        model: name.clone(),
                        message: e.to_string(),
                    })?;
                let ddim = match train.sampler_kind() {
                    SamplerKind::Ddim => {
                        Some(pipeline.ddim_scheduler().map_err(|e| RunError::Model {
                            model: name.clone(),
                            message: e.to_string(),
                        })?)
                    }
                    SamplerKind::Lcm => None,
                };
                let parts = pipeline.into_training_parts();
                let mut unet = parts.unet;
                let loaded = attach(&mut unet, &train, adapters)?;
                parts
                    .text_encoder
                    .check_prompts(prompts.iter().chain(&train.eval_prompts))
                    .map_err(|e| RunError::Invalid {
                        path: self.source_name(),
                        key: "prompts",
                        message: e.to_string(),
                    })?;
                let mut builder = RocmTrainer::builder(train)
                    .model(unet)
                    .reward(DecodedReward::new(parts.vae.no_grad(), reward))
                    .prompts(prompts, parts.text_encoder)
                    .sampler(parts.sampler)
                    .latent_shape(parts.latent_shape)
                    .device(device);
                if let Some(ddim) = ddim {
                    builder = builder.ddim_scheduler(ddim);
                }
                let trainer = builder.build()?.with_held_out(held_out)?;
                (Run::Pipeline(Box::new(trainer)), loaded)
            }
        };
        Ok(Built {
            run,
            backend,
            loaded,
        })
    }
}

/// Attaches the adapters to `model`.
fn attach<M: Module + LoraContainer>(
    model: &mut M,
    train: &TrainConfig,
    adapters: Adapters,
) -> Result<Option<LoadReport>, RunError> {
    match adapters {
        Adapters::New => {
            apply_lora(model, &train.lora.to_lora_config())
                .map_err(|source| RunError::from(crate::trainer::Error::Lora(source)))?;
            Ok(None)
        }
        Adapters::Load(Some(path)) => {
            load_adapters(model, path)
                .map(Some)
                .map_err(|source| RunError::Adapters {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Adapters::Load(None) => Ok(None),
    }
}

/// The dotted keys of a run configuration that hold file paths, which may be relative to the
/// configuration's folder ([`RunConfig::resolve_path`]); an experiment grid rebases them
/// onto its base file's folder when it writes each run's configuration elsewhere.
pub const PATH_KEYS: [&str; 2] = ["prompts.file", "reward.head"];

/// The file name of the paper's Pick-a-Pic v1 training prompts, which is not shipped (its
/// export command is in `data/prompts/README.md`).
pub const PICKAPIC_PROMPTS: &str = "pickapic_v1_train_prompts.txt";

/// The non-empty, trimmed lines of a prompts file.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Prompts {
        path: path.to_path_buf(),
        hint: if path.ends_with(PICKAPIC_PROMPTS) {
            " (not shipped: data/prompts/README.md gives the one-line export command)"
        } else {
            ""
        },
        source,
    })?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return Err(RunError::Invalid {
            path: path.to_path_buf(),
            key: "prompts.file",
            message: "the file has no prompts".into(),
        });
    }
    Ok(prompts)
}
