//! [`TrainerBuilder`]: the parts of a [`RocmTrainer`], each named, none defaulted silently.

use std::fmt;

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rocm_divergence::{BoxedDivergence, FDivergence};
use rocm_sampler::{ConsistencyModel, DdimSampler, DdimScheduler, LcmScheduler, Sampler};

use super::{BoxedEncoder, BoxedReward, RocmTrainer, RolloutSampler, TrainableModel, adamw};
use crate::{Error, LatentReward, PromptEncoder, SamplerKind, TrainConfig, Unconditional};

/// A part of a [`RocmTrainer`] that its [`TrainerBuilder`] was not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MissingPart {
    /// The model ([`TrainerBuilder::model`]).
    Model,
    /// The reward ([`TrainerBuilder::reward`]).
    Reward,
    /// The prompts and their encoder ([`TrainerBuilder::prompts`]), or
    /// [`TrainerBuilder::unconditional`].
    Prompts,
    /// The sampler, i.e. the model's noise schedule ([`TrainerBuilder::sampler`] or
    /// [`TrainerBuilder::scheduler`]).
    Sampler,
    /// The DDIM schedule of a run with `sampler = "ddim"` ([`TrainerBuilder::ddim_scheduler`]).
    DdimScheduler,
    /// The shape of one sample's latent ([`TrainerBuilder::latent_shape`]).
    LatentShape,
    /// The autodiff device ([`TrainerBuilder::device`]).
    Device,
}

impl MissingPart {
    /// The builder call that supplies the part.
    pub fn call(self) -> &'static str {
        match self {
            Self::Model => "model(..)",
            Self::Reward => "reward(..)",
            Self::Prompts => "prompts(prompts, encoder) or .unconditional()",
            Self::Sampler => "sampler(..) or .scheduler(..) (the model's own schedule)",
            Self::DdimScheduler => "ddim_scheduler(..) (the diffusion model's own schedule)",
            Self::LatentShape => "latent_shape(..)",
            Self::Device => "device(..)",
        }
    }
}

impl fmt::Display for MissingPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Model => "model",
            Self::Reward => "reward",
            Self::Prompts => "prompts",
            Self::Sampler => "sampler",
            Self::DdimScheduler => "DDIM scheduler",
            Self::LatentShape => "latent shape",
            Self::Device => "device",
        };
        f.write_str(name)
    }
}

/// Assembles a [`RocmTrainer`] from named parts; [`TrainerBuilder::build`] fails with
/// [`Error::MissingPart`] for any required part that was not given.
///
/// | part | call | required |
/// |---|---|---|
/// | the model (LoRA applied) | [`model`](Self::model) | yes |
/// | the reward | [`reward`](Self::reward) | yes |
/// | prompts + encoder, or none | [`prompts`](Self::prompts) / [`unconditional`](Self::unconditional) | yes |
/// | the noise schedule | [`sampler`](Self::sampler) / [`scheduler`](Self::scheduler) | with the `lcm` sampler |
/// | the DDIM schedule | [`ddim_scheduler`](Self::ddim_scheduler) | with the `ddim` sampler |
/// | one sample's latent shape | [`latent_shape`](Self::latent_shape) | yes |
/// | the autodiff device | [`device`](Self::device) | yes |
/// | a divergence of your own | [`custom_divergence`](Self::custom_divergence) | no: [`TrainConfig::divergence`] |
///
/// The schedule is required because there is no right default: a diffusers pipeline brings its
/// own (`LcmPipeline::sampler`), and SD 1.5's LCM schedule is only right for models distilled
/// with it.
pub struct TrainerBuilder<const D: usize, M: TrainableModel<D>> {
    config: TrainConfig,
    model: Option<M>,
    reward: Option<BoxedReward<D>>,
    divergence: Option<BoxedDivergence>,
    prompts: Option<(Vec<String>, BoxedEncoder<M::Conditioning>, bool)>,
    sampler: Option<Sampler>,
    ddim: Option<DdimSampler>,
    latent_shape: Option<[usize; D]>,
    device: Option<Device>,
}

impl<const D: usize, M: TrainableModel<D>> TrainerBuilder<D, M> {
    /// A builder with `config` and no parts.
    pub fn new(config: TrainConfig) -> Self {
        Self {
            config,
            model: None,
            reward: None,
            divergence: None,
            prompts: None,
            sampler: None,
            ddim: None,
            latent_shape: None,
            device: None,
        }
    }

    /// The model to fine-tune: its only trainable parameters should be its LoRA adapters
    /// ([`rocm_lora::apply_lora`] freezes the rest).
    pub fn model(mut self, model: M) -> Self {
        self.model = Some(model);
        self
    }

    /// The reward of the final latent (for images: a [`crate::DecodedReward`]).
    pub fn reward(mut self, reward: impl LatentReward<D> + 'static) -> Self {
        self.reward = Some(Box::new(reward));
        self
    }

    /// The training prompts, drawn uniformly, and the frozen encoder that turns a batch of them
    /// into the model's conditioning (for diffusers pipelines a `rocm_models::TextEncoder`).
    pub fn prompts(
        mut self,
        prompts: Vec<String>,
        encoder: impl PromptEncoder<M::Conditioning> + 'static,
    ) -> Self {
        self.prompts = Some((prompts, Box::new(encoder), false));
        self
    }

    /// The noise schedule's sampler (for a diffusers pipeline, `LcmPipeline::sampler`).
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// The noise schedule, as [`TrainerBuilder::sampler`] with `Sampler::new(scheduler)`.
    pub fn scheduler(self, scheduler: LcmScheduler) -> Self {
        self.sampler(Sampler::new(scheduler))
    }

    /// The DDIM schedule of a diffusion model, for `sampler = "ddim"` (a pipeline folder's
    /// `DdimScheduler::from_file(".../scheduler/scheduler_config.json")`, as diffusers'
    /// `DDIMScheduler.from_config`). Ignored with the LCM sampler.
    pub fn ddim_scheduler(mut self, scheduler: DdimScheduler) -> Self {
        self.ddim = Some(DdimSampler::new(scheduler));
        self
    }

    /// The shape of one sample's latent with a leading 1, e.g. `[1, 4, 64, 64]` or `[1, 2]`.
    pub fn latent_shape(mut self, shape: [usize; D]) -> Self {
        self.latent_shape = Some(shape);
        self
    }

    /// The model's own autodiff `Device` value (noise is created on it).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Trains with `divergence` instead of [`TrainConfig::divergence`]; its name is recorded
    /// in [`TrainConfig::custom_divergence`] (so the saved configuration says what trained).
    pub fn custom_divergence(
        mut self,
        divergence: impl FDivergence + Send + Sync + 'static,
    ) -> Self {
        self.divergence = Some(Box::new(divergence));
        self
    }

    /// The trainer at step 0.
    ///
    /// Errors with [`Error::MissingPart`] for the first required part not given, and when the
    /// configuration is invalid, the prompt list is empty, the device has no autodiff, or the
    /// configuration names a custom divergence other than the one given.
    pub fn build(self) -> Result<RocmTrainer<D, M>, Error> {
        let missing = Error::MissingPart;
        let Self {
            mut config,
            model,
            reward,
            divergence,
            prompts,
            sampler,
            ddim,
            latent_shape,
            device,
        } = self;
        let model = model.ok_or(missing(MissingPart::Model))?;
        let reward = reward.ok_or(missing(MissingPart::Reward))?;
        let (prompts, encoder, unconditional) = prompts.ok_or(missing(MissingPart::Prompts))?;
        let sampler = match config.sampler_kind() {
            SamplerKind::Lcm => RolloutSampler::Lcm(sampler.ok_or(missing(MissingPart::Sampler))?),
            SamplerKind::Ddim => {
                RolloutSampler::Ddim(ddim.ok_or(missing(MissingPart::DdimScheduler))?)
            }
        };
        let latent_shape = latent_shape.ok_or(missing(MissingPart::LatentShape))?;
        let device = device.ok_or(missing(MissingPart::Device))?;
        config.validate()?;
        let divergence = resolve_divergence(&mut config, divergence)?;
        if prompts.is_empty() {
            return Err(Error::InvalidField {
                field: "prompts",
                message: "no training prompts".into(),
            });
        }
        if latent_shape.first() != Some(&1) || latent_shape.contains(&0) {
            return Err(Error::InvalidField {
                field: "latent_shape",
                message: format!(
                    "{latent_shape:?}: one sample's shape has a leading 1 and no zero dimension"
                ),
            });
        }
        if !device.is_autodiff() {
            return Err(Error::InvalidField {
                field: "device",
                message: "training needs an autodiff device (`device.autodiff()`)".into(),
            });
        }
        let tracker = match config.algorithm {
            crate::AlgorithmKind::Dpok => {
                crate::PerPromptStatTracker::new(config.dpok.baseline_buffer, 1)
            }
            crate::AlgorithmKind::Ddpo => crate::PerPromptStatTracker::new(
                config.ddpo.stat_buffer,
                config.ddpo.stat_min_count,
            ),
            _ => crate::PerPromptStatTracker::new(
                config.rlcm.stat_buffer,
                config.rlcm.stat_min_count,
            ),
        };
        Ok(RocmTrainer {
            tracker,
            optimizer: adamw(&config),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            model,
            reward,
            divergence,
            encoder,
            prompts,
            unconditional,
            latent_shape,
            config,
            sampler,
            step: 0,
            device,
            replicas: None,
            held_out: Vec::new(),
        })
    }
}

impl<const D: usize, M: TrainableModel<D> + ConsistencyModel<D, Conditioning = ()>>
    TrainerBuilder<D, M>
{
    /// No prompts: the model is conditioned on `()` ([`Unconditional`]); every sample's prompt
    /// is the empty string (what the reward and evaluation see).
    pub fn unconditional(mut self) -> Self {
        self.prompts = Some((vec![String::new()], Box::new(Unconditional), true));
        self
    }
}

/// The divergence that trains: the custom one (its name recorded in the configuration) or the
/// configured one, never both.
fn resolve_divergence(
    config: &mut TrainConfig,
    custom: Option<BoxedDivergence>,
) -> Result<BoxedDivergence, Error> {
    let field = "custom_divergence";
    match (custom, config.custom_divergence.as_deref()) {
        (Some(custom), Some(name)) if custom.name() != name => Err(Error::InvalidField {
            field,
            message: format!(
                "the configuration trained with `{name}`, the builder was given `{}`",
                custom.name()
            ),
        }),
        (Some(custom), _) => {
            config.custom_divergence = Some(custom.name().to_string());
            Ok(custom)
        }
        (None, Some(name)) => Err(Error::InvalidField {
            field,
            message: format!(
                "the configuration trained with the custom divergence `{name}`: supply it with \
                 TrainerBuilder::custom_divergence"
            ),
        }),
        (None, None) => Ok(config.divergence.build()),
    }
}
