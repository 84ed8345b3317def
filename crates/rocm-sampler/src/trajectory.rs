//! What a multistep run leaves behind: every state, denoised sample and per-step policy.

use burn::prelude::*;

/// The Gaussian policy of a non-final step (docs/method.md §2):
/// `π_θ(x_{k+1} | x_k) = N(√ā_{k+1} f_θ(x_k, t_k), (1 − ā_{k+1}) I)`.
///
/// # Shapes
/// `mean` and `base_mean`: `[B, …]`, the latent's shape.
#[derive(Clone, Debug)]
pub struct StepPolicy<const D: usize> {
    /// `t_{k+1}`, the timestep the step re-noises to.
    pub next_timestep: usize,
    /// `ā_{t_{k+1}}`.
    pub alpha_cumprod_next: f32,
    /// `μ_θ = √ā_{k+1} f_θ(x_k, t_k)` (differentiable when the run is).
    pub mean: Tensor<D>,
    /// `μ_ref = √ā_{k+1} f_ref(x_k, t_k)`, the frozen base on the same state (detached), when
    /// the run recorded it.
    pub base_mean: Option<Tensor<D>>,
    /// `σ_{k+1} = √(1 − ā_{k+1})`, the same for every element.
    pub std: f32,
}

impl<const D: usize> StepPolicy<D> {
    /// The log-density of a transition, averaged over the latent's elements (RLCM's convention,
    /// docs/method.md §6): `mean_i [−(x_i − μ_i)² / (2σ²)] − ln σ − ½ ln 2π`.
    ///
    /// # Shapes
    /// - `next`: `[B, …]`
    /// - output: `[B]`
    pub fn log_prob(&self, next: Tensor<D>) -> Tensor<1> {
        let var = self.std * self.std;
        let sq = (next - self.mean.clone()).square().div_scalar(-2.0 * var);
        let constant = -self.std.ln() - 0.5 * (2.0 * std::f32::consts::PI).ln();
        per_sample_mean(sq) + constant
    }
}

/// Averages a `[B, …]` tensor over everything but the batch dimension.
///
/// # Shapes
/// - `x`: `[B, …]`
/// - output: `[B]`
pub fn per_sample_mean<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let dims = x.dims();
    let batch = dims[0];
    let rest = dims.iter().skip(1).product::<usize>();
    x.reshape([batch, rest]).mean_dim(1).reshape([batch])
}

/// Sums a `[B, …]` tensor over everything but the batch dimension.
///
/// # Shapes
/// - `x`: `[B, …]`
/// - output: `[B]`
pub fn per_sample_sum<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let dims = x.dims();
    let batch = dims[0];
    let rest = dims.iter().skip(1).product::<usize>();
    x.reshape([batch, rest]).sum_dim(1).reshape([batch])
}

/// One step `k` of a run: the state it started from, the consistency function's output and, for
/// non-final steps, the policy it sampled the next state from.
///
/// # Shapes
/// All tensors: `[B, …]`, the latent's shape.
#[derive(Clone, Debug)]
pub struct TrajectoryStep<const D: usize> {
    /// `k`, from 0.
    pub index: usize,
    /// `t_k`.
    pub timestep: usize,
    /// The state `x_k`.
    pub latent: Tensor<D>,
    /// `f_θ(x_k, t_k)` (diffusers' `denoised`).
    pub denoised: Tensor<D>,
    /// `f_ref(x_k, t_k)`: the frozen base (`predict_base`) on the policy's own state, detached;
    /// present when the run was asked to record it, on every step but the last.
    pub base_denoised: Option<Tensor<D>>,
    /// The Gaussian policy of `x_{k+1}`; `None` on the last step, which is deterministic.
    pub policy: Option<StepPolicy<D>>,
}

impl<const D: usize> TrajectoryStep<D> {
    /// Drops the autodiff association of every tensor.
    pub fn detach(self) -> Self {
        Self {
            latent: self.latent.inner(),
            denoised: self.denoised.inner(),
            base_denoised: self.base_denoised.map(Tensor::inner),
            policy: self.policy.map(|p| StepPolicy {
                mean: p.mean.inner(),
                base_mean: p.base_mean.map(Tensor::inner),
                ..p
            }),
            ..self
        }
    }
}

/// A whole `K`-step run: `x_0 → … → x_{K−1} → output`.
///
/// Differentiable with respect to the model when it was sampled on an autodiff device (see
/// [`crate::Sampler::sample`]); plain tensors after [`Trajectory::detach`] or a no-grad run.
///
/// # Shapes
/// All tensors: `[B, …]`, the latent's shape.
#[derive(Clone, Debug)]
pub struct Trajectory<const D: usize> {
    /// The `K` steps in order.
    pub steps: Vec<TrajectoryStep<D>>,
    /// The output `f_θ(x_{K−1}, t_{K−1})` (no noise on the last step).
    pub final_latent: Tensor<D>,
}

impl<const D: usize> Trajectory<D> {
    /// `K`.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// `[t_0, …, t_{K−1}]`.
    pub fn timesteps(&self) -> Vec<usize> {
        self.steps.iter().map(|s| s.timestep).collect()
    }

    /// The state after step `k`: `x_{k+1}`, or the final latent after the last step.
    ///
    /// # Panics
    /// If `k ≥ K`.
    pub fn next_latent(&self, k: usize) -> &Tensor<D> {
        assert!(
            k < self.steps.len(),
            "step {k} of a {}-step trajectory",
            self.steps.len()
        );
        self.steps
            .get(k + 1)
            .map_or(&self.final_latent, |s| &s.latent)
    }

    /// `log π(x_{k+1} | x_k)` of every non-final step under the policy that sampled it
    /// (see [`StepPolicy::log_prob`]), `K − 1` tensors `[B]`.
    pub fn log_probs(&self) -> Vec<Tensor<1>> {
        self.steps
            .iter()
            .filter_map(|s| {
                s.policy
                    .as_ref()
                    .map(|p| p.log_prob(self.next_latent(s.index).clone()))
            })
            .collect()
    }

    /// Drops the autodiff association (and so the graph) of every tensor.
    pub fn detach(self) -> Self {
        Self {
            steps: self.steps.into_iter().map(TrajectoryStep::detach).collect(),
            final_latent: self.final_latent.inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_of_the_mean_is_the_normalising_constant() {
        let device = Device::flex();
        let mean = Tensor::<2>::from_floats([[1.0, 2.0], [0.0, 0.0]], &device);
        let p = StepPolicy {
            next_timestep: 0,
            alpha_cumprod_next: 0.75,
            mean: mean.clone(),
            base_mean: None,
            std: 0.5,
        };
        let lp = p
            .log_prob(mean.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let c = -(0.5f32).ln() - 0.5 * (2.0 * std::f32::consts::PI).ln();
        assert!(lp.iter().all(|v| (v - c).abs() < 1e-6), "{lp:?}");
        // One element off by σ: that sample's mean squared term is −½ · ½.
        let off = mean + Tensor::from_floats([[0.5, 0.0], [0.0, 0.0]], &device);
        let lp = p.log_prob(off).into_data().try_into_vec::<f32>().unwrap();
        assert!(
            (lp[0] - (c - 0.25)).abs() < 1e-6 && (lp[1] - c).abs() < 1e-6,
            "{lp:?}"
        );
    }

    #[test]
    fn per_sample_reductions_keep_the_batch() {
        let device = Device::flex();
        let x = Tensor::<3>::from_floats(
            [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]],
            &device,
        );
        assert_eq!(
            per_sample_mean(x.clone())
                .into_data()
                .try_into_vec::<f32>()
                .unwrap(),
            [2.5, 1.0]
        );
        assert_eq!(
            per_sample_sum(x).into_data().try_into_vec::<f32>().unwrap(),
            [10.0, 4.0]
        );
    }
}
