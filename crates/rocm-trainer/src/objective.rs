//! ROCM's loss over one sampled trajectory (docs/method.md §3):
//! `loss = −mean_b R(x_K) + β · mean_b Σ_{k<K−1} D(π_θ(·|x_k) ‖ π_ref(·|x_k))`.

use burn::prelude::*;
use rocm_divergence::{DiagGaussian, FDivergence, Reduction};
use rocm_sampler::{StepPolicy, TrajectoryObjective, TrajectoryStep};

use crate::LatentReward;

/// The per-step divergence `D(π_θ(·|x_k) ‖ π_ref(·|x_k))` of a non-final step, `[B]`.
///
/// Both policies are `N(μ, σ² I)` with the step's `σ`; `μ_ref` is the frozen base on the
/// policy's own state, detached here (again) so no gradient reaches it. `None` when the step
/// recorded no base mean (sample with `SamplerOptions::with_base(true)`).
pub fn step_divergence<const D: usize, F: FDivergence + ?Sized>(
    divergence: &F,
    policy: &StepPolicy<D>,
    reduction: Reduction,
) -> Option<Tensor<1>> {
    let base = policy.base_mean.clone()?.detach();
    let std = f64::from(policy.std);
    let p = DiagGaussian::with_scalar_std(policy.mean.clone(), std);
    let q = DiagGaussian::with_scalar_std(base, std);
    Some(divergence.divergence(&p, &q, reduction))
}

/// ROCM's [`TrajectoryObjective`]: `step_term_k = β D_k` on every non-final step (none on the
/// last, deterministic step, and none at all when `β = 0`), `final_term = −R(x_K)`.
pub struct RocmObjective<'a, R: ?Sized, F: ?Sized> {
    /// The reward of the final latent.
    pub reward: &'a R,
    /// The divergence between the tuned and the base policy.
    pub divergence: &'a F,
    /// β.
    pub beta: f64,
    /// Mean or sum over the latent's elements.
    pub reduction: Reduction,
    /// The batch's prompts, passed to the reward.
    pub prompts: &'a [String],
}

impl<const D: usize, R, F> TrajectoryObjective<D> for RocmObjective<'_, R, F>
where
    R: LatentReward<D> + ?Sized,
    F: FDivergence + ?Sized,
{
    fn step_term(&self, step: &TrajectoryStep<D>) -> Option<Tensor<1>> {
        if self.beta == 0.0 {
            return None;
        }
        let policy = step.policy.as_ref()?; // the last step has no policy: no term
        step_divergence(self.divergence, policy, self.reduction).map(|d| d * self.beta)
    }

    fn final_term(&self, final_latent: Tensor<D>) -> Tensor<1> {
        -self.reward.reward(final_latent, self.prompts)
    }
}
