//! The ROCM training loop: reward optimisation of a consistency model by backpropagating a
//! differentiable reward through the whole multistep sampler, regularised by an f-divergence
//! between the fine-tuned policy and its frozen base (docs/method.md §3 and §5).
//!
//! The trainer ([`RocmTrainer`]) is generic over the model (a [`TrainableModel`]: a
//! [`rocm_sampler::ConsistencyModel`] carrying [`rocm_lora`] adapters) and holds its other parts
//! as values: the reward ([`LatentReward`]; an image [`rocm_rewards::RewardModel`] is reached
//! through a [`LatentDecoder`] with [`DecodedReward`]), the prompt encoder ([`PromptEncoder`]),
//! the divergence (the configured [`rocm_divergence::DivergenceConfig`], or any
//! [`rocm_divergence::FDivergence`] of your own) and the backend (a runtime `burn`
//! [`Device`](burn::prelude::Device)).
//!
//! | piece | module |
//! |---|---|
//! | settings (typed, TOML, unknown fields rejected) | [`TrainConfig`] |
//! | assembling a trainer from its parts | [`TrainerBuilder`] |
//! | the loss of one rollout | [`RocmObjective`] |
//! | the baselines RLCM, DDPO, DPOK, D3PO (and truncated ROCM) and their samplers | [`algorithm`] |
//! | global-norm gradient clipping | [`grads`] |
//! | learning-rate schedules | [`LrSchedule`] |
//! | metrics, JSONL + CSV | [`IterationMetrics`], [`MetricsWriter`], [`read_metrics_jsonl`] |
//! | experiment grids: many runs from one file, shards, merged results | [`experiment`] |
//! | checkpoints and exact resume | [`checkpoint`] |
//! | data-parallel replicas in threads, the effective-batch rule | [`parallel`] |
//! | PNG plots of the training curves | [`plot`] |
//! | images and evaluation grids as PNG | [`images`] |
//! | a LoRA-ready 2-D toy model | [`toy`] |
//! | diffusers pipelines: the VAE as decoder, the text encoder as prompt encoder | `diffusers` |
//!
//! # Example
//! ```
//! use burn::prelude::*;
//! use rocm_lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
//! use rocm_trainer::{GuidanceKind, LatentReward, RocmTrainer, TrainConfig, toy};
//!
//! /// Reward: the x-coordinate of a point.
//! struct X;
//! impl LatentReward<2> for X {
//!     fn name(&self) -> &str { "x" }
//!     fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
//!         let [b, _] = latent.dims();
//!         latent.slice(s![.., 0..1]).reshape([b])
//!     }
//! }
//!
//! let device = Device::flex().autodiff();
//! let mut model = toy::ToyPointModelConfig::new().with_hidden(16).init_seeded(0, &device);
//! let lora = LoraConfig::new(4, 8.0, TargetModules::names(&model.all_layers()))
//!     .with_init_lora_weights(InitLoraWeights::Gaussian);
//! apply_lora(&mut model, &lora)?; // freezes the base; only the adapters train
//!
//! let config = TrainConfig {
//!     num_steps: 4,
//!     guidance: GuidanceKind::None,
//!     beta: 0.3, // the divergence: `config.divergence`, KL by default
//!     batch_size: 8,
//!     learning_rate: 1e-3,
//!     ..TrainConfig::default()
//! };
//! let mut trainer = RocmTrainer::builder(config)
//!     .model(model)
//!     .reward(X)
//!     .unconditional()
//!     .scheduler(toy::scheduler())
//!     .latent_shape([1, 2])
//!     .device(device)
//!     .build()?;
//! let m = trainer.train_iteration()?;
//! assert_eq!((m.step, m.divergence_per_step.len()), (1, 3)); // no term on the last step
//! assert_eq!(trainer.divergence_name(), "kl");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A part left out is an error, not a default:
//! ```
//! # use burn::prelude::*;
//! use rocm_trainer::{Error, MissingPart, RocmTrainer, TrainConfig, toy};
//! let device = Device::flex().autodiff();
//! let err = RocmTrainer::builder(TrainConfig::default())
//!     .model(toy::ToyPointModelConfig::new().init_seeded(0, &device))
//!     .reward(toy::ProxyX)
//!     .unconditional()
//!     .latent_shape([1, 2])
//!     .device(device)
//!     .build()
//!     .err();
//! assert!(matches!(err, Some(Error::MissingPart(MissingPart::Sampler))));
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod algorithm;
pub mod baselines;
pub mod checkpoint;
mod config;
mod diffusers;
mod durable;
mod error;
pub mod experiment;
mod finite;
pub mod grads;
pub mod images;
mod metrics;
mod objective;
pub mod parallel;
pub mod plot;
mod reward;
mod schedule;
pub mod toy;
mod trainer;

pub use algorithm::{AlgorithmKind, SamplerKind};
pub use baselines::PerPromptStatTracker;
pub use config::{GradientSync, GuidanceKind, LoraSection, ReductionKind, TrainConfig};
pub use error::Error;
pub use finite::NonFiniteValue;
pub use metrics::{IterationMetrics, MetricsWriter, read_metrics_jsonl};
pub use objective::{RocmObjective, step_divergence};
pub use reward::{DecodedReward, LatentDecoder, LatentReward, PromptEncoder, Unconditional};
pub use schedule::LrSchedule;
pub use trainer::{
    BoxedEncoder, BoxedReward, IterationGradients, MissingPart, RocmTrainer, RolloutSampler,
    SAMPLES_DIR, TrainableModel, TrainerBuilder, adamw,
};
