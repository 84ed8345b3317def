//! Gradients through K sampler steps: finite differences, plain vs checkpointed.
#![allow(clippy::unwrap_used)]

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rocm_sampler::toy::{ToyEpsMlp, ToyEpsMlpConfig};
use rocm_sampler::{
    Error, GradientMode, Guidance, Sampler, SamplerNoise, SamplerOptions, TrajectoryObjective,
    TrajectoryStep, gradients, per_sample_mean, per_sample_sum,
};

/// ROCM-shaped: a KL-like divergence to the base on every non-final step plus a quadratic
/// "reward" of the output.
struct Objective;

impl TrajectoryObjective<2> for Objective {
    fn step_term(&self, step: &TrajectoryStep<2>) -> Option<Tensor<1>> {
        let policy = step.policy.as_ref()?;
        let d = policy.mean.clone() - policy.base_mean.clone().expect("base recorded");
        Some(per_sample_mean(d.square()) / (2.0 * policy.std * policy.std))
    }

    fn final_term(&self, x: Tensor<2>) -> Tensor<1> {
        let target = Tensor::<2>::ones(x.dims(), &x.device());
        per_sample_sum((x - target).square()) * 0.1
    }
}

/// No stop-gradient inside: its finite differences are its true gradient. (The base term of
/// [`Objective`] is detached by design, so finite differences through the shared base weights
/// would not match.)
struct Smooth;

impl TrajectoryObjective<2> for Smooth {
    fn step_term(&self, step: &TrajectoryStep<2>) -> Option<Tensor<1>> {
        let policy = step.policy.as_ref()?;
        Some(per_sample_mean((policy.mean.clone() - step.latent.clone() * 0.5).square()) * 0.05)
    }

    fn final_term(&self, x: Tensor<2>) -> Tensor<1> {
        Objective.final_term(x)
    }
}

fn model(device: &Device) -> ToyEpsMlp {
    ToyEpsMlpConfig::new(3)
        .with_hidden(8)
        .with_adapter(true)
        .init_seeded(7, device)
}

fn param_ids(m: &ToyEpsMlp) -> Vec<(&'static str, burn::module::ParamId, usize)> {
    let a = m.adapter.as_ref().unwrap();
    vec![
        ("linear_in.weight", m.linear_in.weight.id, 2),
        ("linear_in.bias", m.linear_in.bias.as_ref().unwrap().id, 1),
        ("time_in.weight", m.time_in.weight.id, 2),
        ("linear_out.weight", m.linear_out.weight.id, 2),
        ("linear_out.bias", m.linear_out.bias.as_ref().unwrap().id, 1),
        ("adapter.weight", a.weight.id, 2),
        ("adapter.bias", a.bias.as_ref().unwrap().id, 1),
    ]
}

fn grad_vec(grads: &GradientsParams, id: burn::module::ParamId, rank: usize) -> Vec<f32> {
    let data = match rank {
        1 => grads.get::<1>(id).map(|t| t.into_data()),
        _ => grads.get::<2>(id).map(|t| t.into_data()),
    };
    data.unwrap_or_else(|| panic!("no gradient for {id:?}"))
        .try_into_vec::<f32>()
        .unwrap()
}

fn options(k: usize) -> SamplerOptions<()> {
    SamplerOptions::new(k)
        .with_base(true)
        .with_guidance(Guidance::embedded(3.0))
}

#[test]
fn plain_and_checkpointed_gradients_agree() {
    for device in [
        Device::flex().autodiff(),
        Device::flex().autodiff().gradient_checkpointing(),
    ] {
        let m = model(&device);
        let sampler = Sampler::default();
        let run = |mode| {
            let noise = SamplerNoise::from_seed([4, 3], 4, 11, &device);
            gradients(&sampler, &m, &(), noise, &options(4), &Objective, mode).unwrap()
        };
        let plain = run(GradientMode::Plain);
        let ck = run(GradientMode::Checkpointed);
        let loss = |g: &rocm_sampler::TrajectoryGradients<2>| g.loss.clone().into_scalar::<f32>();
        assert!((loss(&plain) - loss(&ck)).abs() < 1e-6 * loss(&plain).abs().max(1.0));
        assert_eq!(
            plain.trajectory.final_latent.to_data(),
            ck.trajectory.final_latent.to_data(),
            "both modes sample the same trajectory"
        );
        assert_eq!(plain.step_terms.iter().filter(|t| t.is_some()).count(), 3);
        let mut worst = 0.0f32;
        for (name, id, rank) in param_ids(&m) {
            let (a, b) = (
                grad_vec(&plain.grads, id, rank),
                grad_vec(&ck.grads, id, rank),
            );
            let scale = a.iter().fold(1e-3f32, |s, v| s.max(v.abs()));
            let err = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
                / scale;
            assert!(err < 1e-6, "{name}: relative max diff {err}");
            worst = worst.max(err);
        }
        assert_eq!(plain.grads.len(), ck.grads.len());
        eprintln!("plain vs checkpointed: worst relative gradient difference {worst:e}");
    }
}

#[test]
fn concurrency_changes_nothing_but_the_threads() {
    for device in [
        Device::flex().autodiff(),
        Device::flex().autodiff().gradient_checkpointing(),
    ] {
        let m = model(&device);
        let sampler = Sampler::default();
        for (k, mode) in [1, 2, 4]
            .into_iter()
            .flat_map(|k| [(k, GradientMode::Plain), (k, GradientMode::Checkpointed)])
        {
            let run = |concurrent| {
                let noise = SamplerNoise::from_seed([4, 3], k, 5, &device);
                let options = options(k).with_concurrent(concurrent);
                gradients(&sampler, &m, &(), noise, &options, &Objective, mode).unwrap()
            };
            let (serial, concurrent) = (run(false), run(true));
            let what = format!("K = {k}, {mode:?}");
            assert_eq!(serial.loss.to_data(), concurrent.loss.to_data(), "{what}");
            for (a, b) in serial
                .trajectory
                .steps
                .iter()
                .zip(&concurrent.trajectory.steps)
            {
                let base = |s: &TrajectoryStep<2>| s.base_denoised.as_ref().map(|t| t.to_data());
                assert_eq!(base(a), base(b), "{what}, step {}", a.index);
                // The reference is evaluated exactly on the steps that have a policy.
                assert_eq!(base(a).is_some(), a.policy.is_some(), "{what}");
            }
            for (name, id, rank) in param_ids(&m) {
                assert_eq!(
                    grad_vec(&serial.grads, id, rank),
                    grad_vec(&concurrent.grads, id, rank),
                    "{what}: {name}"
                );
            }
        }
    }
}

/// A model whose frozen base goes through LoRA's thread-local adapters-off switch, as the UNet's
/// does: `ε = out(tanh(inp(x) + t/1000))`, both layers `rocm_lora::Linear` with adapters.
#[derive(Module, Debug)]
struct LoraMlp {
    inp: rocm_lora::Linear,
    out: rocm_lora::Linear,
}

rocm_lora::impl_lora_container!(LoraMlp { inp, out });

impl LoraMlp {
    fn new(device: &Device) -> Self {
        let mut m = Self {
            inp: rocm_lora::LinearConfig::new(3, 8).init(device),
            out: rocm_lora::LinearConfig::new(8, 3).init(device),
        };
        // Random init: B ≠ 0, so the adapters change the output from the first call.
        let lora =
            rocm_lora::LoraConfig::new(2, 4.0, rocm_lora::TargetModules::names(&["inp", "out"]))
                .with_init_lora_weights(rocm_lora::InitLoraWeights::Random);
        rocm_lora::apply_lora(&mut m, &lora).unwrap();
        m
    }

    fn forward(&self, input: &rocm_sampler::ModelInput<2>) -> Tensor<2> {
        let t = input
            .timestep
            .clone()
            .div_scalar(1000.0)
            .unsqueeze_dim::<2>(1);
        self.out
            .forward((self.inp.forward(input.latent.clone()) + t).tanh())
    }
}

impl rocm_sampler::ConsistencyModel<2> for LoraMlp {
    type Conditioning = ();

    fn predict(&self, input: &rocm_sampler::ModelInput<2>, _: &()) -> rocm_sampler::Prediction<2> {
        rocm_sampler::Prediction {
            output: self.forward(input),
            parameterization: rocm_sampler::Parameterization::Epsilon,
        }
    }

    fn predict_base(
        &self,
        input: &rocm_sampler::ModelInput<2>,
        _: &(),
    ) -> rocm_sampler::Prediction<2> {
        rocm_sampler::Prediction {
            output: rocm_lora::with_adapters_disabled(|| self.forward(input)),
            parameterization: rocm_sampler::Parameterization::Epsilon,
        }
    }
}

/// With the base behind the thread-local switch, running it on another thread (concurrent) must
/// still give the base: the same reference, loss and gradients as serially, the reference is
/// the adapters-off network's (sampling `Base(&m)` reproduces it), and it differs from the
/// policy's (so the adapters are really off there, not merely equal on both paths).
#[test]
fn concurrency_keeps_a_thread_local_base_off() {
    let device = Device::flex().autodiff();
    let m = LoraMlp::new(&device);
    let sampler = Sampler::default();
    let options = |concurrent| {
        SamplerOptions::new(4)
            .with_base(true)
            .with_concurrent(concurrent)
    };
    for mode in [GradientMode::Plain, GradientMode::Checkpointed] {
        let run = |concurrent| {
            let noise = SamplerNoise::from_seed([4, 3], 4, 5, &device);
            gradients(
                &sampler,
                &m,
                &(),
                noise,
                &options(concurrent),
                &Objective,
                mode,
            )
            .unwrap()
        };
        let (serial, concurrent) = (run(false), run(true));
        assert_eq!(serial.loss.to_data(), concurrent.loss.to_data(), "{mode:?}");
        for (a, b) in serial
            .trajectory
            .steps
            .iter()
            .zip(&concurrent.trajectory.steps)
        {
            let Some(base) = a.base_denoised.as_ref() else {
                continue;
            };
            let other = b.base_denoised.as_ref().expect("both record the base");
            assert_eq!(
                base.to_data(),
                other.to_data(),
                "{mode:?}, step {}",
                a.index
            );
            // The base on this state, evaluated directly with the adapters off.
            let direct = rocm_lora::with_adapters_disabled(|| {
                let out = Guidance::<()>::None.predict(
                    &m,
                    a.latent.clone(),
                    a.timestep,
                    &(),
                    rocm_sampler::Branch::Policy,
                );
                sampler.scheduler.denoise(out, a.timestep, a.latent.clone())
            });
            let diff = (direct - other.clone()).abs().max().into_scalar::<f32>();
            assert!(
                diff < 1e-6,
                "{mode:?}, step {}: base off by {diff}",
                a.index
            );
            let policy_gap = (a.denoised.clone() - base.clone())
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(policy_gap > 1e-4, "{mode:?}: the adapters change nothing");
        }
        assert_eq!(serial.grads.len(), concurrent.grads.len());
    }
    // Sampling the explicit base value, concurrently: every step is the adapters-off network.
    let noise = SamplerNoise::from_seed([4, 3], 4, 5, &device);
    let base_run = sampler
        .sample(&rocm_sampler::Base(&m), &(), noise.clone(), &options(true))
        .unwrap();
    let off = rocm_lora::with_adapters_disabled(|| {
        sampler
            .sample(&m, &(), noise.clone(), &options(false))
            .unwrap()
    });
    let tuned = sampler.sample(&m, &(), noise, &options(true)).unwrap();
    assert_eq!(base_run.final_latent.to_data(), off.final_latent.to_data());
    assert_ne!(
        base_run.final_latent.to_data(),
        tuned.final_latent.to_data()
    );
}

/// The loss as a plain function of the model, for finite differences.
fn loss_of(m: &ToyEpsMlp, k: usize) -> f64 {
    let device = Device::flex();
    let sampler = Sampler::default();
    let noise = SamplerNoise::from_seed([4, 3], k, 11, &device);
    let traj = sampler.sample_no_grad(m, &(), noise, &options(k)).unwrap();
    let mut total = Smooth.final_term(traj.final_latent.clone());
    for step in &traj.steps {
        if let Some(t) = Smooth.step_term(step) {
            total = total + t;
        }
    }
    total
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| f64::from(*v))
        .sum::<f64>()
        / 4.0
}

fn perturbed(m: &ToyEpsMlp, which: &str, i: usize, delta: f32) -> ToyEpsMlp {
    let bump2 = |p: &Param<Tensor<2>>| {
        let t = p.val().inner();
        let shape = t.dims();
        let mut v = t.into_data().try_into_vec::<f32>().unwrap();
        v[i] += delta;
        Param::from_tensor(Tensor::from_data(
            TensorData::new(v, shape),
            &Device::flex(),
        ))
    };
    let bump1 = |p: &Param<Tensor<1>>| {
        let t = p.val().inner();
        let mut v = t.into_data().try_into_vec::<f32>().unwrap();
        let n = v.len();
        v[i] += delta;
        Param::from_tensor(Tensor::from_data(TensorData::new(v, [n]), &Device::flex()))
    };
    let mut m = m.valid();
    match which {
        "linear_in.weight" => m.linear_in.weight = bump2(&m.linear_in.weight),
        "linear_out.bias" => m.linear_out.bias = Some(bump1(m.linear_out.bias.as_ref().unwrap())),
        "adapter.weight" => {
            let a = m.adapter.as_mut().unwrap();
            a.weight = bump2(&a.weight);
        }
        _ => unreachable!(),
    }
    m
}

#[test]
fn gradients_match_central_finite_differences() {
    let device = Device::flex().autodiff();
    let m = model(&device);
    let k = 3;
    let noise = SamplerNoise::from_seed([4, 3], k, 11, &device);
    let sampler = Sampler::default();
    let g = gradients(
        &sampler,
        &m,
        &(),
        noise,
        &options(k),
        &Smooth,
        GradientMode::Checkpointed,
    )
    .unwrap();
    let analytic_loss = f64::from(g.loss.clone().into_scalar::<f32>());
    assert!((analytic_loss - loss_of(&m, k)).abs() < 1e-5 * analytic_loss.abs().max(1.0));
    let ids = param_ids(&m);
    let mut worst = 0.0f64;
    for (name, entries) in [
        ("linear_in.weight", [0, 5, 13]),
        ("linear_out.bias", [0, 1, 2]),
        ("adapter.weight", [0, 4, 7]),
    ] {
        let (_, id, rank) = ids.iter().find(|(n, _, _)| *n == name).copied().unwrap();
        let analytic = grad_vec(&g.grads, id, rank);
        for i in entries {
            let central = |h: f32| {
                (loss_of(&perturbed(&m, name, i, h), k) - loss_of(&perturbed(&m, name, i, -h), k))
                    / (2.0 * f64::from(h))
            };
            // Richardson extrapolation cancels the O(h²) term; h is large enough that f32
            // round-off of a loss ~1e3 (≈1e-4) stays below 1e-3 of these gradients.
            let fd = (4.0 * central(3e-3) - central(6e-3)) / 3.0;
            let err = (fd - f64::from(analytic[i])).abs() / fd.abs().max(1.0);
            worst = worst.max(err);
            assert!(
                err < 5e-3,
                "{name}[{i}]: analytic {} vs finite difference {fd}",
                analytic[i]
            );
        }
    }
    eprintln!("finite differences: worst relative error {worst:e}");
}

#[test]
fn gradients_need_autodiff() {
    let device = Device::flex();
    let m = model(&device);
    let noise = SamplerNoise::from_seed([2, 3], 2, 0, &device);
    let r = gradients(
        &Sampler::default(),
        &m,
        &(),
        noise,
        &options(2),
        &Objective,
        GradientMode::Checkpointed,
    );
    assert!(matches!(r, Err(Error::NotAutodiff(_))));
}

#[test]
fn invalid_options_are_errors_in_both_modes() {
    let device = Device::flex().autodiff();
    let m = model(&device);
    for mode in [GradientMode::Plain, GradientMode::Checkpointed] {
        let noise = SamplerNoise::from_seed([2, 3], 2, 0, &device);
        let r = gradients(
            &Sampler::default(),
            &m,
            &(),
            noise,
            &options(3),
            &Objective,
            mode,
        );
        assert!(matches!(r, Err(Error::BadNoise(_))), "{mode:?}");
        let noise = SamplerNoise::from_seed([2, 3], 2, 0, &device);
        let r = gradients(
            &Sampler::default(),
            &m,
            &(),
            noise,
            &options(0),
            &Objective,
            mode,
        );
        assert!(matches!(r, Err(Error::ZeroSteps)), "{mode:?}");
    }
}

#[test]
fn no_grad_sampling_keeps_no_autodiff() {
    let device = Device::flex().autodiff();
    let m = model(&device);
    let noise = SamplerNoise::from_seed([2, 3], 4, 0, &device);
    let traj = Sampler::default()
        .sample_no_grad(&m, &(), noise.clone(), &options(4))
        .unwrap();
    assert!(!traj.final_latent.is_autodiff() && !traj.steps[0].denoised.is_autodiff());
    let tracked = Sampler::default()
        .sample(&m, &(), noise, &options(4))
        .unwrap();
    assert!(tracked.final_latent.is_tracked());
    assert_eq!(
        tracked.detach().final_latent.to_data(),
        traj.final_latent.to_data()
    );
}

/// A model conditioned on a tensor (like text embeddings), to check that autodiff conditioning
/// mixes with the checkpointed pass's plain forward.
#[derive(Module, Debug)]
struct Conditioned {
    inner: ToyEpsMlp,
}

impl rocm_sampler::ConsistencyModel<2> for Conditioned {
    type Conditioning = Tensor<2>;

    fn predict(
        &self,
        input: &rocm_sampler::ModelInput<2>,
        c: &Tensor<2>,
    ) -> rocm_sampler::Prediction<2> {
        let shifted = rocm_sampler::ModelInput {
            latent: input.latent.clone() + c.clone(),
            ..input.clone()
        };
        self.inner.predict(&shifted, &())
    }

    fn predict_base(
        &self,
        input: &rocm_sampler::ModelInput<2>,
        c: &Tensor<2>,
    ) -> rocm_sampler::Prediction<2> {
        let shifted = rocm_sampler::ModelInput {
            latent: input.latent.clone() + c.clone(),
            ..input.clone()
        };
        self.inner.predict_base(&shifted, &())
    }
}

#[test]
fn autodiff_conditioning_and_classifier_free_guidance_work_in_both_modes() {
    use rocm_sampler::ConsistencyModel as _;
    for device in [
        Device::flex().autodiff(),
        Device::flex().autodiff().gradient_checkpointing(),
    ] {
        let m = Conditioned {
            inner: model(&device),
        };
        let cond = Tensor::<2>::from_floats([[0.1, 0.2, 0.3], [0.0, -0.1, 0.2]], &device);
        let uncond = Tensor::<2>::zeros([2, 3], &device);
        let options =
            SamplerOptions::new(3)
                .with_base(true)
                .with_guidance(Guidance::ClassifierFree {
                    scale: 2.0,
                    unconditional: uncond,
                });
        let run = |mode| {
            let noise = SamplerNoise::from_seed([2, 3], 3, 5, &device);
            gradients(
                &Sampler::default(),
                &m,
                &cond,
                noise,
                &options,
                &Objective,
                mode,
            )
            .unwrap()
        };
        let (plain, ck) = (run(GradientMode::Plain), run(GradientMode::Checkpointed));
        let id = m.inner.linear_in.weight.id;
        let (a, b) = (grad_vec(&plain.grads, id, 2), grad_vec(&ck.grads, id, 2));
        let scale = a.iter().fold(1e-3f32, |s, v| s.max(v.abs()));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-6 * scale));
        let _ = m.predict_base(
            &rocm_sampler::ModelInput {
                latent: Tensor::zeros([2, 3], &device),
                timestep: Tensor::zeros([2], &device),
                guidance: None,
            },
            &cond,
        );
    }
}
