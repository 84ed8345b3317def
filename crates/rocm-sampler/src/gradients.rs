//! Gradients of a trajectory objective with respect to the model's parameters, by plain
//! back-propagation through all `K` model calls or with per-step recomputation.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::GradientCheckpointingStrategy;

use crate::threads::run_pair;
use crate::{
    Branch, ConsistencyModel, Error, Sampler, SamplerNoise, SamplerOptions, Trajectory,
    TrajectoryStep,
};

/// A loss over a sampled trajectory, made of per-step terms and a final term, each per sample.
///
/// ```text
/// loss = mean_b [ Σ_k step_term_k[b] + final_term[b] ]
/// ```
///
/// ROCM's loss (docs/method.md §3) is `step_term_k = β D(π_θ(·|x_k) ‖ π_ref(·|x_k))` on the
/// non-final steps (from [`crate::StepPolicy::mean`], [`crate::StepPolicy::base_mean`] and
/// [`crate::StepPolicy::std`]; record the base with [`SamplerOptions::with_base`]) and
/// `final_term = −R(decode(x_K))`. The loss is minimised.
///
/// # Shapes
/// - `step_term` and `final_term` outputs: `[B]`
pub trait TrajectoryObjective<const D: usize> {
    /// The term of step `k`, a function of the step's (differentiable) tensors; `None` for no
    /// term (the default).
    fn step_term(&self, step: &TrajectoryStep<D>) -> Option<Tensor<1>> {
        let _ = step;
        None
    }

    /// The term of the final latent `x_K` (e.g. minus the reward of its decoded image).
    fn final_term(&self, final_latent: Tensor<D>) -> Tensor<1>;
}

/// How [`gradients`] back-propagates through the `K` model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GradientMode {
    /// Keep the graph of every call and run one backward pass: memory grows with `K`.
    #[default]
    Plain,
    /// Per-step recomputation: a forward pass without graph keeps only the step inputs `x_k`;
    /// the backward walk recomputes each call on a leaf `x_k` and back-propagates the
    /// vector-Jacobian product `⟨x_{k+1}, ∂L/∂x_{k+1}⟩ + step_term_k`. Memory is bounded by one
    /// call's graph (two with [`SamplerOptions::concurrent`], which recomputes the next step
    /// while the current one back-propagates); each call runs twice. The gradients equal
    /// [`GradientMode::Plain`]'s up to summation order. The model must be a deterministic
    /// function of its inputs: a random layer (LoRA dropout in training mode) would draw new
    /// masks on the recomputation, and the gradient would belong to another forward.
    Checkpointed,
}

/// What [`gradients`] returns.
///
/// # Shapes
/// - `trajectory` tensors: `[B, …]`, plain (no autodiff)
/// - `step_terms[k]`, `final_term`: `[B]`, plain; `loss`: `[1]`, plain
#[derive(Debug)]
pub struct TrajectoryGradients<const D: usize> {
    /// Gradients of `loss` for every parameter of the model that requires one.
    pub grads: GradientsParams,
    /// The sampled trajectory, detached.
    pub trajectory: Trajectory<D>,
    /// `step_term_k` of every step, detached (`None` where the objective had no term).
    pub step_terms: Vec<Option<Tensor<1>>>,
    /// `final_term`, detached.
    pub final_term: Tensor<1>,
    /// The loss the gradients are of.
    pub loss: Tensor<1>,
}

/// Samples a trajectory and returns the gradients of `objective` with respect to `model`'s
/// parameters (see [`TrajectoryObjective`] for the loss).
///
/// `model` and the noise must live on an autodiff device (`device.autodiff()`); the noise's
/// checkpointing strategy is used for the recomputed leaves, so create the noise on the model's
/// own `Device` value. Both modes sample exactly the same trajectory.
///
/// Errors like [`Sampler::sample`], and when the noise has no autodiff.
pub fn gradients<const D: usize, M, O>(
    sampler: &Sampler,
    model: &M,
    conditioning: &M::Conditioning,
    noise: SamplerNoise<D>,
    options: &SamplerOptions<M::Conditioning>,
    objective: &O,
    mode: GradientMode,
) -> Result<TrajectoryGradients<D>, Error>
where
    M: ConsistencyModel<D> + Module,
    O: TrajectoryObjective<D> + ?Sized,
{
    let Some(strategy) = noise.initial.gradient_checkpointing_strategy() else {
        return Err(Error::NotAutodiff(
            "the noise is on a device without autodiff".into(),
        ));
    };
    match mode {
        GradientMode::Plain => plain(sampler, model, conditioning, noise, options, objective),
        GradientMode::Checkpointed => checkpointed(
            sampler,
            model,
            conditioning,
            noise,
            options,
            objective,
            strategy,
        ),
    }
}

impl Sampler {
    /// [`gradients`] as a method: samples with `noise` and back-propagates `objective` through
    /// all `K` model calls, plainly or checkpointed per step.
    pub fn gradients<const D: usize, M, O>(
        &self,
        model: &M,
        conditioning: &M::Conditioning,
        noise: SamplerNoise<D>,
        options: &SamplerOptions<M::Conditioning>,
        objective: &O,
        mode: GradientMode,
    ) -> Result<TrajectoryGradients<D>, Error>
    where
        M: ConsistencyModel<D> + Module,
        O: TrajectoryObjective<D> + ?Sized,
    {
        gradients(self, model, conditioning, noise, options, objective, mode)
    }
}

fn plain<const D: usize, M, O>(
    sampler: &Sampler,
    model: &M,
    conditioning: &M::Conditioning,
    noise: SamplerNoise<D>,
    options: &SamplerOptions<M::Conditioning>,
    objective: &O,
) -> Result<TrajectoryGradients<D>, Error>
where
    M: ConsistencyModel<D> + Module,
    O: TrajectoryObjective<D> + ?Sized,
{
    let trajectory = sampler.sample(model, conditioning, noise, options)?;
    let step_terms: Vec<_> = trajectory
        .steps
        .iter()
        .map(|s| objective.step_term(s))
        .collect();
    let final_term = objective.final_term(trajectory.final_latent.clone());
    let total = step_terms
        .iter()
        .flatten()
        .fold(final_term.clone(), |acc, t| acc + t.clone());
    let loss = total.mean();
    let grads = if loss.is_tracked() {
        GradientsParams::from_grads(loss.backward(), model)
    } else {
        GradientsParams::new()
    };
    Ok(TrajectoryGradients {
        grads,
        trajectory: trajectory.detach(),
        step_terms: step_terms
            .into_iter()
            .map(|t| t.map(Tensor::inner))
            .collect(),
        final_term: final_term.inner(),
        loss: loss.inner(),
    })
}

fn checkpointed<const D: usize, M, O>(
    sampler: &Sampler,
    model: &M,
    conditioning: &M::Conditioning,
    noise: SamplerNoise<D>,
    options: &SamplerOptions<M::Conditioning>,
    objective: &O,
    strategy: GradientCheckpointingStrategy,
) -> Result<TrajectoryGradients<D>, Error>
where
    M: ConsistencyModel<D> + Module,
    O: TrajectoryObjective<D> + ?Sized,
{
    // Leaves and constants must carry the model's checkpointing strategy (docs/burn.md §8).
    let lift = |t: Tensor<D>| {
        t.inner()
            .autodiff()
            .with_gradient_checkpointing_strategy(strategy)
    };
    let zs: Vec<Tensor<D>> = noise.steps.iter().cloned().map(Tensor::inner).collect();
    // Forward without graph: the states x_k and the base predictions are all the backward needs.
    let trajectory = sampler
        .sample(&model.valid(), conditioning, noise.inner(), options)?
        .detach();

    // With `options.concurrent`, step k−1 is recomputed on a second thread while step k
    // back-propagates on this one. The two graphs must not share nodes (Burn would merge them
    // and serialise the threads), so consecutive steps alternate between the model and a copy
    // whose trainable parameters are fresh leaves with the same parameter ids.
    let replica = (options.concurrent && trajectory.num_steps() > 1)
        .then(|| model.clone().map(&mut FreshLeaves));
    let model_for = |k: usize| match &replica {
        Some(r) if k % 2 == 1 => r,
        _ => model,
    };
    // The call of step k on a leaf `x_k`, recorded with a graph: (leaf, step record, x_{k+1}).
    let recompute = |k: usize| {
        let recorded = &trajectory.steps[k];
        let leaf = lift(recorded.latent.clone()).require_grad();
        let prediction = options.guidance.predict(
            model_for(k),
            leaf.clone(),
            recorded.timestep,
            conditioning,
            Branch::Policy,
        );
        let denoised = sampler
            .scheduler
            .denoise(prediction, recorded.timestep, leaf.clone());
        let next = recorded
            .policy
            .as_ref()
            .map(|p| (p.next_timestep, lift(zs[k].clone())));
        let base = recorded.base_denoised.clone().map(lift);
        let (step, x_next) =
            sampler.record(k, recorded.timestep, leaf.clone(), denoised, base, next);
        (leaf, step, x_next)
    };

    let mut acc = GradientsAccumulator::<M>::new();
    let leaf = lift(trajectory.final_latent.clone()).require_grad();
    let final_term = objective.final_term(leaf.clone());
    let mut step_terms = vec![None; trajectory.num_steps()];
    let mut loss = final_term.clone().inner().mean();
    let total = trajectory.num_steps();
    // Steps whose model output is detached (`grad_steps`) pass no gradient to the parameters,
    // nor to anything before them: they are neither recomputed nor back-propagated.
    let trained = |k: usize| !options.detaches_step(k, total);
    let last = total.checked_sub(1).filter(|&k| trained(k));
    // The backward of the final term runs while the last step is recomputed, and so on down.
    let (mut upstream, mut current) = run_pair(
        options.concurrent,
        || backward_into(final_term.clone().mean(), &leaf, model, &mut acc),
        || last.map(&recompute),
    );
    for k in (0..total).rev() {
        let Some((leaf, step, x_next)) = current.take() else {
            // A detached step: its term from the recorded forward (same values), no gradient.
            if let Some(t) = objective.step_term(&trajectory.steps[k]) {
                let t = t.inner();
                loss = loss + t.clone().mean();
                step_terms[k] = Some(t);
            }
            continue;
        };
        let term = objective.step_term(&step);
        let vjp = upstream.take().map(|g| (x_next * g).sum());
        let local = match (vjp, &term) {
            (Some(v), Some(t)) => Some(v + t.clone().mean()),
            (Some(v), None) => Some(v),
            (None, Some(t)) => Some(t.clone().mean()),
            (None, None) => None,
        };
        if let Some(t) = &term {
            loss = loss + t.clone().inner().mean();
        }
        step_terms[k] = term.map(Tensor::inner);
        let step_model = model_for(k);
        let previous = k.checked_sub(1).filter(|&j| trained(j));
        (upstream, current) = run_pair(
            options.concurrent && previous.is_some(),
            || local.and_then(|l| backward_into(l, &leaf, step_model, &mut acc)),
            || previous.map(&recompute),
        );
    }
    Ok(TrajectoryGradients {
        grads: acc.grads(),
        trajectory,
        step_terms,
        final_term: final_term.inner(),
        loss,
    })
}

/// Replaces every trainable parameter by a detached copy that is a new autodiff leaf with the
/// same [`burn::module::ParamId`]: the same values and gradients keyed the same way, in a graph
/// of its own.
struct FreshLeaves;

impl burn::module::ModuleMapper for FreshLeaves {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        param.map(|t| {
            if t.is_require_grad() {
                t.detach().require_grad()
            } else {
                t
            }
        })
    }
}

/// Back-propagates `local` (if it depends on anything), adds the model's parameter gradients to
/// `acc` and returns the (plain) gradient of `local` with respect to `leaf`.
fn backward_into<const D: usize, M: Module>(
    local: Tensor<1>,
    leaf: &Tensor<D>,
    model: &M,
    acc: &mut GradientsAccumulator<M>,
) -> Option<Tensor<D>> {
    if !local.is_tracked() {
        return None;
    }
    let grads = local.backward();
    let upstream = leaf.grad(&grads);
    acc.accumulate(model, GradientsParams::from_grads(grads, model));
    upstream
}

#[cfg(test)]
mod tests {
    use burn::module::Param;

    use super::*;
    use crate::{ModelInput, Parameterization, Prediction};

    /// Predicts the sample `x̂_0 = θ` (a learnable centre), whatever the input.
    #[derive(Module, Debug)]
    struct Centre {
        centre: Param<Tensor<2>>,
    }

    impl ConsistencyModel<2> for Centre {
        type Conditioning = ();

        fn predict(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
            let output = self.centre.val().expand(input.latent.dims());
            Prediction {
                output,
                parameterization: Parameterization::Sample,
            }
        }

        fn predict_base(&self, input: &ModelInput<2>, c: &()) -> Prediction<2> {
            self.predict(input, c)
        }
    }

    struct SumOfOutput;

    impl TrajectoryObjective<2> for SumOfOutput {
        fn final_term(&self, x: Tensor<2>) -> Tensor<1> {
            crate::per_sample_sum(x)
        }
    }

    #[test]
    fn two_step_gradient_has_the_closed_form() {
        // x_1 = √ā_1 (c_skip0 x_0 + c_out0 θ) + σ z,  out = c_skip1 x_1 + c_out1 θ
        // ⇒ ∂ mean_b Σ_i out / ∂θ_i = c_out1 + c_skip1 √ā_1 c_out0.
        let device = Device::flex().autodiff();
        let model = Centre {
            centre: Param::from_tensor(Tensor::zeros([1, 3], &device)),
        };
        let sampler = Sampler::default();
        let options = SamplerOptions::new(2);
        let [t0, t1] = [999, 499];
        let (_, c_out0) = sampler.scheduler.boundary_condition(t0);
        let (c_skip1, c_out1) = sampler.scheduler.boundary_condition(t1);
        let (scale, _) = sampler.scheduler.transition_scales(t1);
        let want = c_out1 + c_skip1 * f64::from(scale) * c_out0;
        for mode in [GradientMode::Plain, GradientMode::Checkpointed] {
            let noise = SamplerNoise::from_seed([4, 3], 2, 3, &device);
            let out = sampler
                .gradients(&model, &(), noise, &options, &SumOfOutput, mode)
                .unwrap();
            assert_eq!(out.trajectory.timesteps(), [t0, t1]);
            let g = out.grads.get::<2>(model.centre.id).unwrap();
            let g = g.into_data().try_into_vec::<f32>().unwrap();
            assert!(
                g.iter().all(|v| (f64::from(*v) - want).abs() < 1e-6),
                "{mode:?}: {g:?} vs {want}"
            );
            assert!(out.step_terms.iter().all(Option::is_none));
        }
    }
}
