//! The DDIM sampling loop for ε-, v- or sample-prediction diffusion models (diffusers'
//! `StableDiffusionPipeline` with a `DDIMScheduler`), recording the same per-step policy as the
//! LCM sampler so the policy-gradient baselines (DDPO, DPOK, D3PO; docs/method.md §6) share the
//! trajectory machinery.

use burn::prelude::*;

use crate::threads::run_pair;
use crate::{
    Branch, ConsistencyModel, DdimScheduler, DdimStepOutput, Error, Guidance, SamplerNoise,
    StepPolicy, Trajectory, TrajectoryStep,
};

/// What a DDIM run does: how many steps, how much noise, which guidance, what to record.
#[derive(Clone, Debug)]
pub struct DdimSamplerOptions<C> {
    /// `K`, the number of steps (20 in DDPO; 50 is diffusers' default).
    pub num_steps: usize,
    /// `η ≥ 0`: 0 is deterministic DDIM (diffusers' default), 1 the DDPM-like sampler the
    /// policy-gradient baselines train (default 0).
    pub eta: f32,
    /// Guidance at every call (default none). The baselines use
    /// [`Guidance::ClassifierFree`] with the empty prompt's embeddings as the unconditional
    /// branch: `ε = ε_u + g (ε_c − ε_u)`, two model calls per step.
    pub guidance: Guidance<C>,
    /// Also evaluate the frozen base (`predict_base`) on every state whose step is stochastic
    /// (`σ_t > 0`) and record its `x̂_0` and mean, detached (default `false`).
    pub record_base: bool,
    /// Run the base's call alongside the policy's (see [`crate::SamplerOptions::concurrent`];
    /// default `false`).
    pub concurrent: bool,
}

impl<C> DdimSamplerOptions<C> {
    /// `K` steps, `η = 0`, no guidance, no base record.
    pub fn new(num_steps: usize) -> Self {
        Self {
            num_steps,
            eta: 0.0,
            guidance: Guidance::None,
            record_base: false,
            concurrent: false,
        }
    }

    /// Sets `η`.
    pub fn with_eta(self, eta: f32) -> Self {
        Self { eta, ..self }
    }

    /// Sets the guidance.
    pub fn with_guidance(self, guidance: Guidance<C>) -> Self {
        Self { guidance, ..self }
    }

    /// Records the frozen base's prediction on every stochastic step.
    pub fn with_base(self, record_base: bool) -> Self {
        Self {
            record_base,
            ..self
        }
    }

    /// Runs the base's call alongside the policy's.
    pub fn with_concurrent(self, concurrent: bool) -> Self {
        Self { concurrent, ..self }
    }
}

/// The DDIM sampler: `K` steps of [`DdimScheduler::step`] from `x_T = noise.initial`
/// (`init_noise_sigma = 1`), re-noised with one draw `z_k` per step.
///
/// ```text
/// ε̂_k    = model(x_k, t_k, c)                                (CFG: ε_u + g (ε_c − ε_u))
/// x_{k+1} = √ā_prev x̂_0 + √(1 − ā_prev − σ_k²) ε̂_k + σ_k z_k   (t_prev = t_k − N/K)
/// ```
///
/// Each recorded [`TrajectoryStep`] holds the state `x_k`, `t_k`, `x̂_0` as `denoised`, and the
/// Gaussian policy `N(μ_k, σ_k² I)` of `x_{k+1}` as a [`StepPolicy`] (`next_timestep` is
/// `t_prev`, 0 past the end; `alpha_cumprod_next` is `ā_prev`). Steps with `σ_k = 0` (every
/// step at `η = 0`; the last one with `set_alpha_to_one`) are deterministic and carry no policy,
/// like the LCM sampler's last step. With `η > 0` and SD's `set_alpha_to_one = false` every step,
/// the last included, has one, and [`Trajectory::log_probs`] gives DDPO's `K` log-probabilities.
///
/// ```
/// use burn::prelude::*;
/// use rocm_sampler::toy::ToyEpsMlpConfig;
/// use rocm_sampler::{DdimSampler, DdimSamplerOptions};
///
/// let device = Device::flex();
/// let model = ToyEpsMlpConfig::new(4).init(&device);
/// let sampler = DdimSampler::default(); // SD 1.5's schedule, "leading", steps_offset 1
/// let options = DdimSamplerOptions::new(4).with_eta(1.0);
/// let noise = DdimSampler::noise([8, 4], 4, 0, &device); // x_T and K draws
/// let trajectory = sampler.sample_no_grad(&model, &(), noise, &options)?;
/// assert_eq!(trajectory.timesteps(), [751, 501, 251, 1]);
/// assert_eq!(trajectory.log_probs().len(), 4);
/// # Ok::<(), rocm_sampler::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct DdimSampler {
    /// The scheduler that supplies timesteps, `ā` and the step.
    pub scheduler: DdimScheduler,
}

impl DdimSampler {
    /// A sampler on the given scheduler.
    pub fn new(scheduler: DdimScheduler) -> Self {
        Self { scheduler }
    }

    /// Host-seeded noise for a `num_steps`-step run: `x_T` then `z_0 … z_{K−1}` from one
    /// ChaCha8 stream ([`SamplerNoise::from_seed`] with `K + 1` draws). The same seed gives the
    /// same `x_T` for every `η`.
    pub fn noise<const D: usize>(
        shape: [usize; D],
        num_steps: usize,
        seed: u64,
        device: &Device,
    ) -> SamplerNoise<D> {
        SamplerNoise::from_seed(shape, num_steps + 1, seed, device)
    }

    /// The timesteps a run with these options visits, or why the options are invalid
    /// (zero or too many steps, `η` negative or not finite).
    pub fn timesteps<C>(&self, options: &DdimSamplerOptions<C>) -> Result<Vec<usize>, Error> {
        if !(options.eta >= 0.0 && options.eta.is_finite()) {
            return Err(Error::BadOptions(format!(
                "eta = {} must be finite and non-negative",
                options.eta
            )));
        }
        self.scheduler.timesteps(options.num_steps)
    }

    /// Runs `K` DDIM steps from `noise.initial`, adding `σ_k noise.steps[k]` on step `k`.
    ///
    /// On an autodiff device the trajectory holds the graph of every call (the baselines sample
    /// with [`DdimSampler::sample_no_grad`] and recompute single steps with
    /// [`DdimSampler::step_state`]).
    ///
    /// # Shapes
    /// - `noise.initial` and the `K` tensors of `noise.steps`: `[B, …]`
    /// - every trajectory tensor: `[B, …]`
    ///
    /// Errors on invalid options or noise of the wrong count (`K` step draws, also at `η = 0`)
    /// or shape, before any model call.
    pub fn sample<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        noise: SamplerNoise<D>,
        options: &DdimSamplerOptions<M::Conditioning>,
    ) -> Result<Trajectory<D>, Error>
    where
        M: ConsistencyModel<D>,
    {
        let timesteps = self.timesteps(options)?;
        noise.check(timesteps.len() + 1)?;
        let SamplerNoise { initial, steps: zs } = noise;
        let mut x = initial;
        let mut steps = Vec::with_capacity(timesteps.len());
        for ((k, &t), z) in timesteps.iter().enumerate().zip(zs) {
            let (step, x_next) = self.step(model, conditioning, options, k, t, x, z);
            steps.push(step);
            x = x_next;
        }
        Ok(Trajectory {
            steps,
            final_latent: x,
        })
    }

    /// [`DdimSampler::sample`] without autodiff: the model's [`Module::valid`] copy on the
    /// noise's plain tensors; the trajectory holds plain tensors.
    pub fn sample_no_grad<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        noise: SamplerNoise<D>,
        options: &DdimSamplerOptions<M::Conditioning>,
    ) -> Result<Trajectory<D>, Error>
    where
        M: ConsistencyModel<D> + Module,
    {
        let trajectory = self.sample(&model.valid(), conditioning, noise.inner(), options)?;
        Ok(trajectory.detach())
    }

    /// One network's DDIM transition from state `x` at `timestep` of a run with these options
    /// (the policy or its frozen base, [`Branch`], under the options' guidance), without noise:
    /// `prev_sample = mean`. With a graph on an autodiff device: the baselines recompute a stored
    /// transition's `log π(x_{k+1} | x_k)` as
    /// `scheduler.step_log_prob(x_next, out.mean, out.std)`.
    ///
    /// # Shapes
    /// - `x` and every output tensor: `[B, …]`
    pub fn step_state<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        options: &DdimSamplerOptions<M::Conditioning>,
        timestep: usize,
        x: Tensor<D>,
        branch: Branch,
    ) -> DdimStepOutput<D>
    where
        M: ConsistencyModel<D>,
    {
        let prediction = options
            .guidance
            .predict(model, x.clone(), timestep, conditioning, branch);
        let prev = self.scheduler.prev_timestep(timestep, options.num_steps);
        self.scheduler
            .step(prediction, timestep, prev, x, options.eta, None)
    }

    /// Step `index` from `latent` at `timestep`: the recorded step and `x_{k+1}`.
    #[allow(clippy::too_many_arguments)]
    fn step<const D: usize, M>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        options: &DdimSamplerOptions<M::Conditioning>,
        index: usize,
        timestep: usize,
        latent: Tensor<D>,
        z: Tensor<D>,
    ) -> (TrajectoryStep<D>, Tensor<D>)
    where
        M: ConsistencyModel<D>,
    {
        let scheduler = &self.scheduler;
        let prev = scheduler.prev_timestep(timestep, options.num_steps);
        let std = scheduler.std(timestep, prev, options.eta);
        let guidance = &options.guidance;
        let policy = || {
            let prediction = guidance.predict(
                model,
                latent.clone(),
                timestep,
                conditioning,
                Branch::Policy,
            );
            scheduler.step(
                prediction,
                timestep,
                prev,
                latent.clone(),
                options.eta,
                Some(z),
            )
        };
        let base = || {
            let x = latent.clone().detach();
            let prediction =
                guidance.predict(model, x.clone(), timestep, conditioning, Branch::Base);
            let out = scheduler.step(prediction, timestep, prev, x, options.eta, None);
            (out.pred_original.detach(), out.mean.detach())
        };
        // A deterministic step has no policy and so no divergence: its base is never needed.
        let (out, base) = if options.record_base && std > 0.0 {
            let (out, base) = run_pair(options.concurrent, policy, base);
            (out, Some(base))
        } else {
            (policy(), None)
        };
        let (base_denoised, base_mean) = base.unzip();
        let policy = (std > 0.0).then(|| StepPolicy {
            next_timestep: prev.unwrap_or(0),
            alpha_cumprod_next: scheduler.alpha_cumprod_prev(prev),
            mean: out.mean,
            base_mean,
            std,
        });
        let step = TrajectoryStep {
            index,
            timestep,
            latent,
            denoised: out.pred_original,
            base_denoised,
            policy,
        };
        (step, out.prev_sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelInput, Parameterization, Prediction};

    /// Predicts `ε = 0.5 x + c`; the base predicts `ε = 0`.
    struct Half;

    impl ConsistencyModel<2> for Half {
        type Conditioning = f32;

        fn predict(&self, input: &ModelInput<2>, c: &f32) -> Prediction<2> {
            Prediction {
                output: input.latent.clone() * 0.5 + *c,
                parameterization: Parameterization::Epsilon,
            }
        }

        fn predict_base(&self, input: &ModelInput<2>, _: &f32) -> Prediction<2> {
            Prediction {
                output: input.latent.zeros_like(),
                parameterization: Parameterization::Epsilon,
            }
        }
    }

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0))
    }

    #[test]
    fn sample_follows_the_recurrence_and_records_the_policy() {
        let device = Device::flex();
        let sampler = DdimSampler::default();
        let noise = DdimSampler::noise([2, 3], 3, 1, &device);
        let options = DdimSamplerOptions::new(3).with_eta(1.0).with_base(true);
        let traj = sampler
            .sample(&Half, &0.0, noise.clone(), &options)
            .unwrap();
        assert_eq!(traj.timesteps(), [667, 334, 1]);
        let s = &sampler.scheduler;
        let mut last = noise.initial.clone();
        assert_eq!(host(traj.steps[0].latent.clone()), host(last.clone()));
        for (k, (&t, prev)) in [667, 334, 1]
            .iter()
            .zip([Some(334), Some(1), None])
            .enumerate()
        {
            assert_eq!(s.prev_timestep(t, 3), prev);
            assert!(close(
                &host(traj.steps[k].latent.clone()),
                &host(last.clone())
            ));
            // Continue from the recorded state: the reference's rounding differs in the last bit.
            let x = traj.steps[k].latent.clone();
            let (a, ap) = (s.alpha_cumprod(t), s.alpha_cumprod_prev(prev));
            let eps = x.clone() * 0.5;
            let x0 = (x.clone() - eps.clone() * (1.0 - a).sqrt()) / a.sqrt();
            let var = (1.0 - ap) / (1.0 - a) * (1.0 - a / ap);
            let mean = x0.clone() * ap.sqrt() + eps * (1.0 - ap - var).sqrt();
            let p = traj.steps[k].policy.as_ref().unwrap();
            assert!((p.std - var.sqrt()).abs() < 1e-7);
            assert_eq!(p.alpha_cumprod_next, ap);
            assert!(close(&host(traj.steps[k].denoised.clone()), &host(x0)));
            assert!(close(&host(p.mean.clone()), &host(mean.clone())));
            // The base predicts ε = 0: x̂_0 = x / √ā, μ = √ā_prev x̂_0.
            let base = x.clone() / a.sqrt() * ap.sqrt();
            assert!(close(&host(p.base_mean.clone().unwrap()), &host(base)));
            last = mean + noise.steps[k].clone() * var.sqrt();
        }
        assert!(close(&host(traj.final_latent.clone()), &host(last)));
        // SD's set_alpha_to_one = false: the last step is stochastic too.
        let lps = traj.log_probs();
        assert_eq!(lps.len(), 3);
        // Re-computing a stored transition gives the recorded policy and its log-probability.
        let again = sampler.step_state(
            &Half,
            &0.0,
            &options,
            334,
            traj.steps[1].latent.clone(),
            Branch::Policy,
        );
        let p = traj.steps[1].policy.as_ref().unwrap();
        assert_eq!(host(again.mean.clone()), host(p.mean.clone()));
        let lp = s.step_log_prob(traj.steps[2].latent.clone(), again.mean, again.std);
        assert_eq!(
            lp.into_data().try_into_vec::<f32>().unwrap(),
            lps[1].clone().into_data().try_into_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn eta_zero_is_deterministic_and_cfg_reaches_the_model() {
        let device = Device::flex();
        let sampler = DdimSampler::default();
        let run = |seed, guidance: Guidance<f32>| {
            let noise = DdimSampler::noise([2, 3], 4, seed, &device);
            let options = DdimSamplerOptions::new(4).with_guidance(guidance);
            sampler.sample(&Half, &1.0, noise, &options).unwrap()
        };
        let a = run(3, Guidance::None);
        assert!(a.steps.iter().all(|s| s.policy.is_none()));
        assert!(a.log_probs().is_empty());
        // Same x_T, other step draws: η = 0 ignores them.
        let mut b = DdimSampler::noise([2, 3], 4, 3, &device);
        b.steps = DdimSampler::noise([2, 3], 4, 9, &device).steps;
        let options = DdimSamplerOptions::new(4);
        let b = sampler.sample(&Half, &1.0, b, &options).unwrap();
        assert_eq!(host(a.final_latent.clone()), host(b.final_latent));
        // CFG at g = 1 with any unconditional branch is the conditional run.
        let cfg = run(
            3,
            Guidance::ClassifierFree {
                scale: 1.0,
                unconditional: -5.0,
            },
        );
        assert!(close(&host(cfg.final_latent), &host(a.final_latent)));
    }

    #[test]
    fn bad_options_are_errors_not_panics() {
        let device = Device::flex();
        let sampler = DdimSampler::default();
        let run = |o: DdimSamplerOptions<f32>, n: SamplerNoise<2>| {
            sampler.sample(&Half, &0.0, n, &o).map(|_| ())
        };
        let noise = DdimSampler::noise([1, 2], 2, 0, &device);
        assert!(run(DdimSamplerOptions::new(2), noise.clone()).is_ok());
        assert!(matches!(
            run(DdimSamplerOptions::new(0), noise.clone()),
            Err(Error::ZeroSteps)
        ));
        // K − 1 draws (the LCM count) are one too few.
        assert!(matches!(
            run(DdimSamplerOptions::new(3), noise.clone()),
            Err(Error::BadNoise(_))
        ));
        assert!(matches!(
            run(DdimSamplerOptions::new(2).with_eta(-1.0), noise.clone()),
            Err(Error::BadOptions(_))
        ));
        assert!(matches!(
            run(DdimSamplerOptions::new(2).with_eta(f32::NAN), noise),
            Err(Error::BadOptions(_))
        ));
    }
}
