//! Latent consistency model (LCM) multistep sampling with a differentiable trajectory.
//!
//! A consistency model `f_θ(x, t)` maps a noisy latent at timestep `t` straight to an estimate of
//! the clean sample. The multistep sampler (docs/method.md §1, the paper's Algorithm 1) alternates
//! that jump with re-noising to the next timestep:
//!
//! ```text
//! f_θ(x_k, t_k) = c_skip(t_k) x_k + c_out(t_k) x̂_0(x_k, t_k)
//! x_{k+1}       = √ā_{t_{k+1}} f_θ(x_k, t_k) + √(1 − ā_{t_{k+1}}) z_k,    z_k ~ N(0, I)
//! ```
//!
//! where `x̂_0` is recovered from the network's raw prediction according to its
//! [`Parameterization`]. Any network that implements [`ConsistencyModel`] can be sampled: the
//! text-conditioned `UNet2DConditionModel` of `rocm-models` and a toy model of 2-D points alike.
//!
//! # Sampling and training gradients
//! ```
//! use burn::prelude::*;
//! use rocm_sampler::toy::ToyEpsMlpConfig;
//! use rocm_sampler::{
//!     GradientMode, Guidance, Sampler, SamplerNoise, SamplerOptions, TrajectoryObjective,
//!     TrajectoryStep, gradients, per_sample_mean,
//! };
//!
//! // ROCM's loss: β·KL(π_θ ‖ π_ref) on every non-final step, minus a reward of the output.
//! struct Loss;
//! impl TrajectoryObjective<2> for Loss {
//!     fn step_term(&self, step: &TrajectoryStep<2>) -> Option<Tensor<1>> {
//!         let p = step.policy.as_ref()?;
//!         let d = p.mean.clone() - p.base_mean.clone()?;
//!         Some(per_sample_mean(d.square()) / (2.0 * p.std * p.std) * 0.1)
//!     }
//!     fn final_term(&self, x: Tensor<2>) -> Tensor<1> {
//!         per_sample_mean(x.abs()) // minus a reward: pulls samples towards 0
//!     }
//! }
//!
//! let device = Device::flex().autodiff();
//! let model = ToyEpsMlpConfig::new(4).with_adapter(true).init(&device);
//! let sampler = Sampler::default(); // SD 1.5's LCM scheduler
//! let options = SamplerOptions::new(4).with_guidance(Guidance::embedded(7.5)).with_base(true);
//!
//! // Evaluation: no graph, same noise on every backend.
//! let noise = SamplerNoise::from_seed([8, 4], 4, 42, &device);
//! let trajectory = sampler.sample_no_grad(&model, &(), noise.clone(), &options)?;
//! assert_eq!(trajectory.timesteps(), [999, 759, 499, 259]);
//!
//! // Training: gradients of the loss through all four model calls, one call in memory at a time.
//! let out = gradients(&sampler, &model, &(), noise, &options, &Loss, GradientMode::Checkpointed)?;
//! assert_eq!(out.grads.len(), 8); // weights and biases of the four Linear layers
//! assert_eq!(out.trajectory.final_latent.to_data(), trajectory.final_latent.to_data());
//! # Ok::<(), rocm_sampler::Error>(())
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

use burn::prelude::*;
use serde::{Deserialize, Serialize};

mod error;
mod gradients;
mod guidance;
mod logprob;
mod noise;
mod sampler;
mod sampler_ddim;
mod schedule;
mod scheduling_ddim;
mod scheduling_lcm;
mod threads;
pub mod toy;
mod trajectory;

pub use error::Error;
pub use gradients::{GradientMode, TrajectoryGradients, TrajectoryObjective, gradients};
pub use guidance::{Guidance, GuidanceMapping, classifier_free_guidance, guidance_scale_embedding};
pub use logprob::gaussian_log_prob;
pub use noise::SamplerNoise;
pub use sampler::{Sampler, SamplerOptions};
pub use sampler_ddim::{DdimSampler, DdimSamplerOptions};
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use scheduling_ddim::{DdimScheduler, DdimSchedulerConfig, DdimStepOutput, TimestepSpacing};
pub use scheduling_lcm::{LcmScheduler, LcmSchedulerConfig, LcmSpacing, LcmStepOutput, SIGMA_DATA};
pub use trajectory::{StepPolicy, Trajectory, TrajectoryStep, per_sample_mean, per_sample_sum};

/// What a network's raw output predicts (diffusers' `prediction_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Parameterization {
    /// The added noise `ε` (`"epsilon"`): `x̂_0 = (x_t − √(1 − ā_t) ε) / √ā_t`.
    #[default]
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The velocity `v = √ā_t ε − √(1 − ā_t) x_0` (`"v_prediction"`):
    /// `x̂_0 = √ā_t x_t − √(1 − ā_t) v`.
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The clean sample itself (`"sample"`): `x̂_0 = output`.
    #[serde(rename = "sample")]
    Sample,
}

/// The state a [`ConsistencyModel`] is evaluated on.
///
/// # Shapes
/// - `latent`: `[B, …]` (rank `D`, leading batch dimension)
/// - `timestep`: `[B]`, the integer training timestep `t ∈ [0, 1000)` as a float
/// - `guidance`: `[B]`, the guidance value `w` for models with a distilled guidance embedding
///   (LCM's `time_cond_proj_dim`); `None` for models without one
#[derive(Clone, Debug)]
pub struct ModelInput<const D: usize> {
    /// The noisy latent `x_k`.
    pub latent: Tensor<D>,
    /// The timestep `t_k`, one per sample.
    pub timestep: Tensor<1>,
    /// The guidance value `w` (already mapped from the guidance scale, e.g. `w = g − 1`).
    pub guidance: Option<Tensor<1>>,
}

/// A network's raw output together with what it means.
#[derive(Clone, Debug)]
pub struct Prediction<const D: usize> {
    /// The raw output, the latent's shape.
    pub output: Tensor<D>,
    /// Whether `output` is `ε`, `v` or the sample.
    pub parameterization: Parameterization,
}

/// A network that a consistency sampler can evaluate, with a switchable frozen base.
///
/// One call is one evaluation of the network at `(x_k, t_k, c)`; the sampler turns the raw
/// [`Prediction`] into the consistency function `f_θ` with the schedule's boundary condition.
/// `D` is the rank of the latent (`4` for `[B, C, H, W]` image latents, `2` for points `[B, 2]`),
/// and [`ConsistencyModel::Conditioning`] is whatever the network is conditioned on: text
/// embeddings `[B, 77, 768]` for a UNet, nothing (`()`) for an unconditional toy model.
///
/// ROCM regularises the fine-tuned policy towards the frozen base evaluated **on the policy's own
/// state** (docs/method.md §2). [`ConsistencyModel::predict_base`] is that evaluation: the same
/// network with its adapters switched off, sharing the base weights rather than holding a second
/// copy. A model without adapters returns the same as [`ConsistencyModel::predict`]. Callers treat
/// the base prediction as a constant (it is detached before use).
///
/// # Example
/// A toy model of 2-D points whose "network" shrinks the latent towards a learnable centre.
/// ```
/// use burn::prelude::*;
/// use rocm_sampler::{ConsistencyModel, ModelInput, Parameterization, Prediction};
///
/// struct Shrink {
///     centre: Tensor<2>, // [1, 2], the fine-tuned parameter
///     base_centre: Tensor<2>,
/// }
///
/// impl ConsistencyModel<2> for Shrink {
///     type Conditioning = ();
///
///     fn predict(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
///         let output = (input.latent.clone() + self.centre.clone()) / 2.0;
///         Prediction { output, parameterization: Parameterization::Sample }
///     }
///
///     fn predict_base(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
///         let output = (input.latent.clone() + self.base_centre.clone()) / 2.0;
///         Prediction { output, parameterization: Parameterization::Sample }
///     }
/// }
///
/// let device = Device::flex();
/// let model = Shrink {
///     centre: Tensor::from_floats([[2.0, 0.0]], &device),
///     base_centre: Tensor::zeros([1, 2], &device),
/// };
/// let input = ModelInput {
///     latent: Tensor::from_floats([[0.0, 4.0], [2.0, 2.0]], &device),
///     timestep: Tensor::from_floats([999.0, 999.0], &device),
///     guidance: None,
/// };
/// let tuned = model.predict(&input, &()).output.into_data().try_into_vec::<f32>().unwrap();
/// let base = model.predict_base(&input, &()).output.into_data().try_into_vec::<f32>().unwrap();
/// assert_eq!(tuned, vec![1.0, 2.0, 2.0, 1.0]);
/// assert_eq!(base, vec![0.0, 2.0, 1.0, 1.0]);
/// ```
///
/// # Threads
/// The sampler may call `predict` and `predict_base` at the same time from two threads
/// ([`SamplerOptions::concurrent`]), hence the `Sync` bounds: keep per-call state in atomics or
/// a `Mutex`, not in `Cell`/`RefCell`.
pub trait ConsistencyModel<const D: usize>: Sync {
    /// What the network is conditioned on (text embeddings, class labels, `()`), batched like the
    /// latent.
    type Conditioning: Sync;

    /// Evaluates the network (with its adapters, if any) at `input`; differentiable on an
    /// autodiff device.
    fn predict(&self, input: &ModelInput<D>, conditioning: &Self::Conditioning) -> Prediction<D>;

    /// Evaluates the frozen base network (adapters off) at the same `input`, without a second
    /// copy of the weights.
    fn predict_base(
        &self,
        input: &ModelInput<D>,
        conditioning: &Self::Conditioning,
    ) -> Prediction<D>;
}

impl<const D: usize, M: ConsistencyModel<D> + ?Sized> ConsistencyModel<D> for &M {
    type Conditioning = M::Conditioning;

    fn predict(&self, input: &ModelInput<D>, conditioning: &Self::Conditioning) -> Prediction<D> {
        (**self).predict(input, conditioning)
    }

    fn predict_base(
        &self,
        input: &ModelInput<D>,
        conditioning: &Self::Conditioning,
    ) -> Prediction<D> {
        (**self).predict_base(input, conditioning)
    }
}

/// Which network of a [`ConsistencyModel`] a call evaluates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Branch {
    /// The fine-tuned network, adapters on: [`ConsistencyModel::predict`] (default).
    #[default]
    Policy,
    /// The frozen base, adapters off: [`ConsistencyModel::predict_base`].
    Base,
}

/// The frozen base of a model as a model of its own: both [`ConsistencyModel::predict`] and
/// [`ConsistencyModel::predict_base`] evaluate the wrapped model's base.
///
/// Pass `Base(&model)` wherever a model is sampled or scored to get the base policy's samples
/// (e.g. the "before" column of an evaluation; on an autodiff device wrap the model's
/// `valid()` copy, as `Sampler::sample_no_grad` does). Every call switches the adapters off itself, on
/// the thread that runs it, so this stays right when the sampler runs calls concurrently
/// (`SamplerOptions::concurrent`), unlike a thread-local switch set around the whole sampling.
///
/// ```
/// use burn::prelude::*;
/// use rocm_sampler::toy::ToyEpsMlpConfig;
/// use rocm_sampler::{Base, Sampler, SamplerNoise, SamplerOptions};
///
/// let device = Device::flex();
/// let model = ToyEpsMlpConfig::new(4).with_adapter(true).init(&device);
/// let options = SamplerOptions::new(2).with_concurrent(true);
/// let noise = SamplerNoise::from_seed([2, 4], 2, 0, &device);
/// let sampler = Sampler::default();
/// let base = sampler.sample(&Base(&model), &(), noise.clone(), &options)?;
/// let tuned = sampler.sample(&model, &(), noise, &options)?;
/// assert_ne!(base.final_latent.to_data(), tuned.final_latent.to_data());
/// # Ok::<(), rocm_sampler::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Base<'a, M: ?Sized>(pub &'a M);

impl<const D: usize, M: ConsistencyModel<D> + ?Sized> ConsistencyModel<D> for Base<'_, M> {
    type Conditioning = M::Conditioning;

    fn predict(&self, input: &ModelInput<D>, conditioning: &Self::Conditioning) -> Prediction<D> {
        self.0.predict_base(input, conditioning)
    }

    fn predict_base(
        &self,
        input: &ModelInput<D>,
        conditioning: &Self::Conditioning,
    ) -> Prediction<D> {
        self.0.predict_base(input, conditioning)
    }
}
