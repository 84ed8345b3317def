//! The ROCM training loop: reward optimisation of a consistency model by backpropagating a
//! differentiable reward through the whole multistep sampler, regularised by an f-divergence
//! between the fine-tuned policy and its frozen base (docs/method.md §3 and §5).
//!
//! The trainer ([`RocmTrainer`]) is generic over the model ([`rocm_sampler::ConsistencyModel`]
//! carrying [`rocm_lora`] adapters), the reward ([`LatentReward`]; an image
//! [`rocm_rewards::RewardModel`] is reached through a [`LatentDecoder`] with
//! [`DecodedReward`]), the divergence ([`rocm_divergence::FDivergence`]) and the backend (a
//! runtime `burn` [`Device`](burn::prelude::Device)).
//!
//! | piece | module |
//! |---|---|
//! | settings (TOML, unknown fields rejected) | [`TrainConfig`] |
//! | the loss of one rollout | [`RocmObjective`] |
//! | global-norm gradient clipping | [`grads`] |
//! | learning-rate schedules | [`LrSchedule`] |
//! | metrics, JSONL + CSV | [`IterationMetrics`], [`MetricsWriter`] |
//! | checkpoints and exact resume | [`checkpoint`] |
//! | PNG plots of the training curves | [`plot`] |
//! | images and evaluation grids as PNG | [`images`] |
//! | a LoRA-ready 2-D toy model | [`toy`] |
//! | diffusers pipelines: VAE decoder, CLIP prompt encoder | [`TextEncoder`] |
//!
//! # Example
//! ```
//! use burn::prelude::*;
//! use rocm_lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
//! use rocm_trainer::toy::ToyPointModelConfig;
//! use rocm_trainer::{GuidanceKind, LatentReward, RocmTrainer, TrainConfig, Unconditional};
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
//! let mut model = ToyPointModelConfig::new().with_hidden(16).init_seeded(0, &device);
//! let lora = LoraConfig::new(4, 8.0, TargetModules::names(&model.all_layers()))
//!     .with_init_lora_weights(InitLoraWeights::Gaussian);
//! apply_lora(&mut model, &lora)?; // freezes the base; only the adapters train
//!
//! let config = TrainConfig {
//!     num_steps: 4,
//!     guidance: GuidanceKind::None,
//!     beta: 0.3,
//!     divergence: "kl".into(),
//!     batch_size: 8,
//!     learning_rate: 1e-3,
//!     ..TrainConfig::default() // or TrainConfig::load("configs/….toml")?
//! };
//! let divergence = config.divergence()?;
//! let prompts = vec![String::new()]; // unconditional
//! let mut trainer =
//!     RocmTrainer::new(model, X, divergence, Unconditional, prompts, [1, 2], config, device)?;
//! let m = trainer.train_iteration()?;
//! assert_eq!((m.step, m.divergence_per_step.len()), (1, 3)); // no term on the last step
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod checkpoint;
mod config;
mod diffusers;
mod error;
pub mod grads;
pub mod images;
mod metrics;
mod objective;
pub mod plot;
mod reward;
mod schedule;
pub mod toy;
mod trainer;

pub use config::{GuidanceKind, LoraSection, ReductionKind, TrainConfig};
pub use diffusers::TextEncoder;
pub use error::Error;
pub use metrics::{IterationMetrics, MetricsWriter};
pub use objective::{RocmObjective, step_divergence};
pub use reward::{DecodedReward, LatentDecoder, LatentReward, PromptEncoder, Unconditional};
pub use schedule::LrSchedule;
pub use trainer::{IterationGradients, RocmTrainer, SAMPLES_DIR, adamw};
