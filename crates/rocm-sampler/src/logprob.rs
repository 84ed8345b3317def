//! The per-step Gaussian log-probability of the policy-gradient baselines (docs/method.md §6).

use burn::prelude::*;

use crate::per_sample_mean;

/// `½ ln(2π)`.
const HALF_LN_TWO_PI: f64 = 0.918_938_533_204_672_8;

/// The log-density of `x` under `N(mean, std² I)`, **averaged** over each sample's elements, as
/// every reference implementation of the PPO-family baselines computes it (DDPO's
/// `ddim_step_with_logprob`, RLCM's `LCMScheduler.step`):
///
/// ```text
/// lp(x | μ, σ) = mean_N[ −(x − μ)² / (2σ²) − ln σ − ½ ln 2π ]
/// ```
///
/// The mean (not the sum) makes `exp(lp_new − lp_old)` a per-element geometric-mean likelihood
/// ratio: the clip ranges of those methods (1e-4) are tuned to this scale. `x` is detached here
/// (a stored sample); the gradient flows through `mean` only.
///
/// # Shapes
/// - `x`, `mean`: `[B, …]`; output `[B]`
///
/// ```
/// use burn::prelude::*;
/// let device = Device::flex();
/// let x = Tensor::<2>::from_floats([[1.0, 1.0]], &device);
/// let mu = Tensor::<2>::zeros([1, 2], &device);
/// let lp = rocm_sampler::gaussian_log_prob(x, mu, 2.0).into_scalar::<f32>();
/// let want = -1.0 / 8.0 - 2f32.ln() - 0.5 * (2.0 * std::f32::consts::PI).ln();
/// assert!((lp - want).abs() < 1e-6);
/// ```
pub fn gaussian_log_prob<const D: usize>(x: Tensor<D>, mean: Tensor<D>, std: f32) -> Tensor<1> {
    let std = f64::from(std);
    let d = x.detach() - mean;
    let quad = per_sample_mean(d.square()) / (-2.0 * std * std);
    quad - (std.ln() + HALF_LN_TWO_PI)
}
