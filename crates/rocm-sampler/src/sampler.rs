//! The LCM multistep sampler (docs/method.md §1, the paper's Algorithm 1).

use crate::threads::run_pair;
use burn::prelude::*;

use crate::{
    Branch, ConsistencyModel, Error, Guidance, LcmScheduler, LcmSpacing, SamplerNoise, StepPolicy,
    Trajectory, TrajectoryStep,
};

/// What a run does: how many steps, which timesteps, which guidance, what to record.
#[derive(Clone, Debug)]
pub struct SamplerOptions<C> {
    /// `K`, the number of model calls (ignored when `timesteps` is set).
    pub num_steps: usize,
    /// How the `K` timesteps are picked (default [`LcmSpacing::Evenly`]).
    pub spacing: LcmSpacing,
    /// A custom strictly descending timestep list that replaces `num_steps` and `spacing`.
    pub timesteps: Option<Vec<usize>>,
    /// Guidance applied at every call (default none).
    pub guidance: Guidance<C>,
    /// Also evaluate the frozen base (`predict_base`) on each state that has a policy (every step
    /// but the last, which is deterministic) and record `f_ref` / `μ_ref`, detached (default
    /// `false`).
    pub record_base: bool,
    /// Run independent model calls at the same time (default `false`), as a `rayon::join` on
    /// the pool Burn's CPU kernels share: the base alongside the policy, and with
    /// [`crate::GradientMode::Checkpointed`] the next step's recomputation alongside the current
    /// step's backward. On CPU backends whose kernels leave cores idle (UNet-sized calls on
    /// small latents) this hides those calls' cost; results are the same. Checkpointed
    /// gradients then hold two calls' graphs at once. Calls of a few microseconds (the 2-D toy)
    /// lose more to the hand-off than they gain.
    ///
    /// Thread-local state of the caller does not follow the work onto the pool's threads: to
    /// sample the frozen base, pass [`crate::Base`]`(&model)` as the model (each call then
    /// switches the adapters off where it runs), and record the reference with
    /// [`SamplerOptions::with_base`].
    pub concurrent: bool,
    /// Back-propagate through the model calls of the last `n` steps only (default `None`: all
    /// of them). The earlier calls' outputs are detached, so no gradient reaches the
    /// parameters from them (the latent chain itself is not cut): DRaFT-`n` (`n = 1`:
    /// DRaFT-1) and, without a divergence, AlignProp's truncated backprop on an LCM. With
    /// [`crate::GradientMode::Checkpointed`] the detached steps are not recomputed at all.
    pub grad_steps: Option<usize>,
}

impl<C> SamplerOptions<C> {
    /// `K` evenly spaced steps, no guidance, no base record.
    pub fn new(num_steps: usize) -> Self {
        Self {
            num_steps,
            spacing: LcmSpacing::Evenly,
            timesteps: None,
            guidance: Guidance::None,
            record_base: false,
            concurrent: false,
            grad_steps: None,
        }
    }

    /// Back-propagates through the last `n` steps' model calls only (see
    /// [`SamplerOptions::grad_steps`]); `None` for all.
    pub fn with_grad_steps(self, grad_steps: Option<usize>) -> Self {
        Self { grad_steps, ..self }
    }

    /// Whether step `k` of a `total`-step run has its model output detached
    /// ([`SamplerOptions::grad_steps`]).
    pub fn detaches_step(&self, k: usize, total: usize) -> bool {
        self.grad_steps.is_some_and(|n| k + n < total)
    }

    /// Sets the timestep spacing.
    pub fn with_spacing(self, spacing: LcmSpacing) -> Self {
        Self { spacing, ..self }
    }

    /// Uses a custom descending timestep list (its length is `K`).
    pub fn with_timesteps(self, timesteps: Vec<usize>) -> Self {
        Self {
            timesteps: Some(timesteps),
            ..self
        }
    }

    /// Sets the guidance.
    pub fn with_guidance(self, guidance: Guidance<C>) -> Self {
        Self { guidance, ..self }
    }

    /// Records the frozen base's prediction on every state.
    pub fn with_base(self, record_base: bool) -> Self {
        Self {
            record_base,
            ..self
        }
    }

    /// Uses a second thread for independent model calls (see [`SamplerOptions::concurrent`]).
    pub fn with_concurrent(self, concurrent: bool) -> Self {
        Self { concurrent, ..self }
    }
}

/// The LCM multistep sampler.
///
/// ```text
/// f_θ(x_k, t_k) = c_skip(t_k) x_k + c_out(t_k) x̂_0(x_k, t_k)
/// x_{k+1}       = √ā_{t_{k+1}} f_θ(x_k, t_k) + √(1 − ā_{t_{k+1}}) z_k        (k < K − 1)
/// output        = f_θ(x_{K−1}, t_{K−1})
/// ```
///
/// All randomness comes from a [`SamplerNoise`], so the output is a deterministic,
/// differentiable function of the model's parameters (the reparameterisation of docs/method.md §2).
/// Gradients of an objective through the whole run: [`Sampler::gradients`].
#[derive(Clone, Debug, Default)]
pub struct Sampler {
    /// The scheduler that supplies timesteps, `ā` and the boundary condition.
    pub scheduler: LcmScheduler,
}

impl Sampler {
    /// A sampler on the given scheduler.
    pub fn new(scheduler: LcmScheduler) -> Self {
        Self { scheduler }
    }

    /// The timesteps a run with these options visits, or why the options are invalid.
    pub fn timesteps<C>(&self, options: &SamplerOptions<C>) -> Result<Vec<usize>, Error> {
        if let Some(g) = options.guidance.scale()
            && !g.is_finite()
        {
            return Err(Error::BadOptions(format!(
                "the guidance scale must be finite, got {g}"
            )));
        }
        match &options.timesteps {
            Some(custom) => self.scheduler.custom_timesteps(custom),
            None => self.scheduler.timesteps(options.num_steps, options.spacing),
        }
    }

    /// Runs `K` steps from `noise.initial`, re-noising with `noise.steps`.
    ///
    /// On an autodiff device the returned [`Trajectory`] holds the whole graph (every model call
    /// stays in memory until it is dropped or back-propagated); use
    /// [`Sampler::sample_no_grad`] for evaluation and [`Sampler::gradients`] with
    /// [`crate::GradientMode::Checkpointed`] to bound memory in training.
    ///
    /// # Shapes
    /// - `noise.initial`, every `noise.steps[k]`: `[B, …]`
    /// - every trajectory tensor: `[B, …]`
    ///
    /// Errors on invalid options (zero or too many steps, bad custom timesteps) or noise of the
    /// wrong count or shape, before any model call.
    pub fn sample<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        noise: SamplerNoise<D>,
        options: &SamplerOptions<M::Conditioning>,
    ) -> Result<Trajectory<D>, Error>
    where
        M: ConsistencyModel<D>,
    {
        let timesteps = self.timesteps(options)?;
        noise.check(timesteps.len())?;
        let SamplerNoise { initial, steps: zs } = noise;
        let mut zs = zs.into_iter();
        let mut x = initial;
        let mut steps = Vec::with_capacity(timesteps.len());
        for (k, &t) in timesteps.iter().enumerate() {
            let next = timesteps
                .get(k + 1)
                .map(|&t_next| (t_next, zs.next().expect("checked")));
            let detach = options.detaches_step(k, timesteps.len());
            let (step, x_next) = self.step(model, conditioning, options, k, t, x, next, detach);
            steps.push(step);
            x = x_next;
        }
        Ok(Trajectory {
            steps,
            final_latent: x,
        })
    }

    /// [`Sampler::sample`] without autodiff: the model's [`Module::valid`] copy (shared weights)
    /// on the noise's plain tensors, so no graph is recorded. The trajectory holds plain tensors.
    pub fn sample_no_grad<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        noise: SamplerNoise<D>,
        options: &SamplerOptions<M::Conditioning>,
    ) -> Result<Trajectory<D>, Error>
    where
        M: ConsistencyModel<D> + Module,
    {
        let trajectory = self.sample(&model.valid(), conditioning, noise.inner(), options)?;
        Ok(trajectory.detach())
    }

    /// The consistency function of one state, `f(x, t)`, of the policy or its frozen base
    /// ([`Branch`]) under the options' guidance: what one step of [`Sampler::sample`] computes
    /// before re-noising. With a graph on an autodiff device (the policy-gradient baselines
    /// recompute each stored transition's mean with it).
    ///
    /// # Shapes
    /// - `x` and the output: `[B, …]`
    pub fn denoise_state<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        options: &SamplerOptions<M::Conditioning>,
        timestep: usize,
        x: Tensor<D>,
        branch: Branch,
    ) -> Tensor<D>
    where
        M: ConsistencyModel<D>,
    {
        let prediction = options
            .guidance
            .predict(model, x.clone(), timestep, conditioning, branch);
        self.scheduler.denoise(prediction, timestep, x)
    }

    /// One step from `x` at `t`: the recorded step and the next state (`x_{k+1}` or the output).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        options: &SamplerOptions<M::Conditioning>,
        index: usize,
        timestep: usize,
        latent: Tensor<D>,
        next: Option<(usize, Tensor<D>)>,
        detach: bool,
    ) -> (TrajectoryStep<D>, Tensor<D>)
    where
        M: ConsistencyModel<D>,
    {
        let guidance = &options.guidance;
        let policy = || {
            let mut prediction = guidance.predict(
                model,
                latent.clone(),
                timestep,
                conditioning,
                Branch::Policy,
            );
            if detach {
                prediction.output = prediction.output.detach();
            }
            self.scheduler.denoise(prediction, timestep, latent.clone())
        };
        let base = || {
            let x = latent.clone().detach();
            let base = guidance.predict(model, x.clone(), timestep, conditioning, Branch::Base);
            self.scheduler.denoise(base, timestep, x).detach()
        };
        // The last step has no policy and so no divergence: its base is never needed.
        let (denoised, base_denoised) = if !options.record_base || next.is_none() {
            (policy(), None)
        } else {
            let (denoised, base) = run_pair(options.concurrent, policy, base);
            (denoised, Some(base))
        };
        self.record(index, timestep, latent, denoised, base_denoised, next)
    }

    /// Assembles a step record from its model outputs and re-noises to the next state.
    pub(crate) fn record<const D: usize>(
        &self,
        index: usize,
        timestep: usize,
        latent: Tensor<D>,
        denoised: Tensor<D>,
        base_denoised: Option<Tensor<D>>,
        next: Option<(usize, Tensor<D>)>,
    ) -> (TrajectoryStep<D>, Tensor<D>) {
        let (policy, x_next) = match next {
            Some((next_timestep, z)) => {
                let (scale, std) = self.scheduler.transition_scales(next_timestep);
                let mean = denoised.clone() * scale;
                let x_next = mean.clone() + z * std;
                let policy = StepPolicy {
                    next_timestep,
                    alpha_cumprod_next: self.scheduler.alpha_cumprod(next_timestep),
                    mean,
                    base_mean: base_denoised.clone().map(|f| f * scale),
                    std,
                };
                (Some(policy), x_next)
            }
            None => (None, denoised.clone()),
        };
        let step = TrajectoryStep {
            index,
            timestep,
            latent,
            denoised,
            base_denoised,
            policy,
        };
        (step, x_next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelInput, Parameterization, Prediction};

    /// Predicts `x̂_0 = 0.5 x` (+ w when guided); the base predicts `x̂_0 = 0`.
    struct Half;

    impl ConsistencyModel<2> for Half {
        type Conditioning = f32;

        fn predict(&self, input: &ModelInput<2>, c: &f32) -> Prediction<2> {
            let mut output = input.latent.clone() * 0.5 + *c;
            if let Some(w) = &input.guidance {
                output = output + w.clone().unsqueeze_dim::<2>(1);
            }
            Prediction {
                output,
                parameterization: Parameterization::Sample,
            }
        }

        fn predict_base(&self, input: &ModelInput<2>, _: &f32) -> Prediction<2> {
            Prediction {
                output: input.latent.zeros_like(),
                parameterization: Parameterization::Sample,
            }
        }
    }

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn sample_follows_the_recurrence() {
        let device = Device::flex();
        let sampler = Sampler::default();
        let noise = SamplerNoise::from_seed([2, 3], 3, 1, &device);
        let options = SamplerOptions::new(3).with_base(true);
        let traj = sampler
            .sample(&Half, &0.0, noise.clone(), &options)
            .unwrap();
        assert_eq!(traj.timesteps(), [999, 679, 339]);
        let s = &sampler.scheduler;
        let mut x = noise.initial.clone();
        for (k, &t) in [999, 679, 339].iter().enumerate() {
            let (c_skip, c_out) = s.boundary_condition(t);
            let f = x.clone() * (0.5 * c_out + c_skip) as f32;
            assert_eq!(host(traj.steps[k].latent.clone()), host(x.clone()));
            let fd = host(traj.steps[k].denoised.clone());
            assert!(
                fd.iter()
                    .zip(host(f.clone()))
                    .all(|(a, b)| (a - b).abs() < 1e-6)
            );
            match traj.steps[k].base_denoised.clone() {
                Some(base) => {
                    let want = host(x.clone() * c_skip as f32);
                    assert!(
                        host(base)
                            .iter()
                            .zip(want)
                            .all(|(a, b)| (a - b).abs() < 1e-6)
                    );
                }
                None => assert_eq!(k, 2, "only the last step has no base"),
            }
            x = match traj.steps[k].policy.as_ref() {
                Some(p) => {
                    let (scale, std) = s.transition_scales(p.next_timestep);
                    f * scale + noise.steps[k].clone() * std
                }
                None => f,
            };
        }
        let got = host(traj.final_latent.clone());
        assert!(got.iter().zip(host(x)).all(|(a, b)| (a - b).abs() < 1e-6));
        assert_eq!(traj.log_probs().len(), 2);
    }

    #[test]
    fn guidance_modes_reach_the_model() {
        let device = Device::flex();
        let sampler = Sampler::default();
        let noise = SamplerNoise::from_seed([1, 2], 1, 1, &device);
        let run = |g: Guidance<f32>| {
            let options = SamplerOptions::new(1).with_guidance(g);
            host(
                sampler
                    .sample(&Half, &1.0, noise.clone(), &options)
                    .unwrap()
                    .final_latent,
            )
        };
        let plain = run(Guidance::None);
        let embedded = run(Guidance::embedded(3.0)); // w = 2 added to x̂_0
        let cfg = run(Guidance::ClassifierFree {
            scale: 3.0,
            unconditional: 0.0,
        }); // c: 1 → 3
        let (_, c_out) = sampler.scheduler.boundary_condition(999);
        for i in 0..2 {
            assert!((embedded[i] - plain[i] - 2.0 * c_out as f32).abs() < 1e-5);
            assert!((cfg[i] - plain[i] - 2.0 * c_out as f32).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_options_are_errors_not_panics() {
        let device = Device::flex();
        let sampler = Sampler::default();
        let noise = SamplerNoise::from_seed([1, 2], 2, 1, &device);
        let run = |o: SamplerOptions<f32>, n: SamplerNoise<2>| {
            sampler.sample(&Half, &0.0, n, &o).map(|_| ())
        };
        assert!(matches!(
            run(SamplerOptions::new(0), noise.clone()),
            Err(Error::ZeroSteps)
        ));
        assert!(matches!(
            run(SamplerOptions::new(51), noise.clone()),
            Err(Error::TooManySteps { .. })
        ));
        assert!(matches!(
            run(SamplerOptions::new(3), noise.clone()),
            Err(Error::BadNoise(_))
        ));
        let custom = SamplerOptions::new(2).with_timesteps(vec![500, 600]);
        assert!(matches!(
            run(custom, noise.clone()),
            Err(Error::BadTimesteps { .. })
        ));
        let custom = SamplerOptions::new(2).with_timesteps(vec![1200, 600]);
        assert!(matches!(
            run(custom, noise.clone()),
            Err(Error::BadTimesteps { .. })
        ));
        let custom = SamplerOptions::new(9).with_timesteps(vec![800, 300]);
        assert!(run(custom, noise).is_ok());
    }
}
