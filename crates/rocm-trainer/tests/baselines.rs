//! The policy-gradient baselines (RLCM, DDPO, DPOK, D3PO) and truncated ROCM on the 2-D toy:
//! the pitfalls of docs/baselines.md, the PPO surrogate's gradient, learning within a budget,
//! and exact resume, on the LCM sampler and on DDIM (the toy's ε-predictor is both a
//! consistency model and a diffusion model).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use burn::prelude::*;
use rocm_lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm_sampler::{Branch, Guidance, Sampler, SamplerNoise, SamplerOptions, gaussian_log_prob};
use rocm_trainer::algorithm::{AlgorithmKind, LastStep, SamplerKind};
use rocm_trainer::baselines::ppo_step_loss;
use rocm_trainer::toy::{self, ProxyX, ToyPointModel};
use rocm_trainer::{Error, GuidanceKind, MissingPart, RocmTrainer, TrainConfig, grads};

/// Every policy-gradient algorithm with every sampler it trains with.
const POLICY_GRADIENT: [(AlgorithmKind, SamplerKind); 6] = [
    (AlgorithmKind::Rlcm, SamplerKind::Lcm),
    (AlgorithmKind::Ddpo, SamplerKind::Ddim),
    (AlgorithmKind::Dpok, SamplerKind::Lcm),
    (AlgorithmKind::Dpok, SamplerKind::Ddim),
    (AlgorithmKind::D3po, SamplerKind::Lcm),
    (AlgorithmKind::D3po, SamplerKind::Ddim),
];

fn config_with(algorithm: AlgorithmKind, sampler: SamplerKind, out: &str) -> TrainConfig {
    TrainConfig {
        sampler: Some(sampler),
        ..config(algorithm, out)
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-baselines-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn config(algorithm: AlgorithmKind, out: &str) -> TrainConfig {
    TrainConfig {
        algorithm,
        num_steps: 4,
        guidance: GuidanceKind::None,
        batch_size: 8,
        gradient_checkpointing: false,
        concurrent: false,
        learning_rate: 3e-3,
        beta: 0.0,
        iterations: 30,
        checkpoint_every: 0,
        eval_every: 0,
        seed: 3,
        output_dir: temp_dir(out),
        ..TrainConfig::default()
    }
}

fn lora(model: &mut ToyPointModel) {
    let config = LoraConfig::new(4, 8.0, TargetModules::names(&model.all_layers()))
        .with_init_lora_weights(InitLoraWeights::Gaussian)
        .with_seed(2);
    apply_lora(model, &config).unwrap();
}

/// The pretrained toy base.
fn base() -> ToyPointModel {
    toy::pretrained(&Device::flex().autodiff())
}

fn trainer(base: &ToyPointModel, config: TrainConfig) -> RocmTrainer<2, ToyPointModel> {
    let mut model = base.clone();
    lora(&mut model);
    RocmTrainer::builder(config)
        .model(model)
        .reward(ProxyX)
        .unconditional()
        .scheduler(toy::scheduler())
        .ddim_scheduler(toy::ddim_scheduler())
        .latent_shape([1, 2])
        .device(Device::flex().autodiff())
        .build()
        .unwrap()
}

fn mean_x(t: &RocmTrainer<2, ToyPointModel>) -> f64 {
    let seeds: Vec<u64> = (10_000..10_256).collect();
    let r = t.evaluate_unconditional(Branch::Policy, &seeds).unwrap();
    r.iter().map(|v| f64::from(*v)).sum::<f64>() / r.len() as f64
}

/// Pitfall: the log-prob recomputed in training must equal the stored one (ratio ≡ 1 on the
/// first and only update of a rollout), or PPO's 1e-4 window silently clips samples.
#[test]
fn the_first_ratio_is_one_and_nothing_is_clipped() {
    let base = base();
    for (algorithm, sampler) in POLICY_GRADIENT {
        let mut t = trainer(&base, config_with(algorithm, sampler, "ratio"));
        let m = t.train_iteration().unwrap();
        // ½ mean (lp − lp_old)² < ½ (1e-6)²: the recomputed log-probs match to 1e-6.
        assert!(
            m.approx_kl < 0.5e-12,
            "{algorithm:?} on {sampler:?}: approx_kl {}",
            m.approx_kl
        );
        if algorithm != AlgorithmKind::D3po {
            assert_eq!(m.clipfrac, 0.0, "{algorithm:?}");
        }
        assert!(
            m.grad_norm > 0.0 && m.grad_norm.is_finite(),
            "{algorithm:?}: {m:?}"
        );
        assert_eq!(
            (m.reward_queries, m.images_sampled),
            (16, 16),
            "{algorithm:?}"
        );
        assert!(m.reward_std > 0.0);
    }
}

/// RLCM's faithful last step trains one more transition than `skip`; both learn.
#[test]
fn rlcm_last_step_modes_differ_in_the_trained_transitions() {
    let base = base();
    let mut a = config(AlgorithmKind::Rlcm, "last-a");
    a.rlcm.last_step = LastStep::Skip;
    let b = config(AlgorithmKind::Rlcm, "last-b");
    let (mut ta, mut tb) = (trainer(&base, a), trainer(&base, b));
    let (ga, gb) = (
        ta.iteration_gradients().unwrap(),
        tb.iteration_gradients().unwrap(),
    );
    // The same rollouts and rewards, different gradients (one more term, a different average).
    assert_eq!(ga.reward_mean, gb.reward_mean);
    let (fa, fb) = (
        grads::flat_gradients(ta.model(), &ga.grads),
        grads::flat_gradients(tb.model(), &gb.grads),
    );
    let norm = |f: &[Tensor<1>]| {
        f.iter()
            .map(|t| t.clone().square().sum().into_scalar::<f32>())
            .sum::<f32>()
    };
    assert!((norm(&fa) - norm(&fb)).abs() > 0.0);
}

/// The PPO surrogate's gradient through the model equals central finite differences (a window
/// wide enough that the perturbations stay inside it).
#[test]
fn ppo_gradient_matches_finite_differences() {
    let device = Device::flex().autodiff();
    let mut model = toy::ToyPointModelConfig::new()
        .with_hidden(8)
        .with_depth(1)
        .init_seeded(1, &device);
    let lora_config = LoraConfig::new(2, 4.0, TargetModules::names(&model.all_layers()))
        .with_init_lora_weights(InitLoraWeights::Random)
        .with_seed(4);
    apply_lora(&mut model, &lora_config).unwrap();
    let sampler = Sampler::new(toy::scheduler());
    let options = SamplerOptions::<()>::new(3).with_guidance(Guidance::None);
    let noise = SamplerNoise::from_seed([6, 2], 3, 9, &device);
    let traj = sampler
        .sample_no_grad(&model, &(), noise, &options)
        .unwrap();
    let step = &traj.steps[1];
    let policy = step.policy.clone().unwrap();
    let x = Tensor::<2>::from_data(step.latent.clone().into_data(), &device);
    let x_next = Tensor::<2>::from_data(traj.steps[2].latent.clone().into_data(), &device);
    let scale = policy.alpha_cumprod_next.sqrt();
    let lp_old = gaussian_log_prob(x_next.clone(), policy.mean.clone(), policy.std);
    let lp_old = Tensor::<1>::from_data(lp_old.into_data(), &device);
    let adv = Tensor::<1>::from_floats([1.0, -0.5, 2.0, -1.5, 0.3, 0.8], &device);
    let loss_of = |m: &ToyPointModel| {
        let f = sampler.denoise_state(m, &(), &options, step.timestep, x.clone(), Branch::Policy);
        let lp = gaussian_log_prob(x_next.clone(), f * scale, policy.std);
        ppo_step_loss(lp, lp_old.clone(), adv.clone(), 0.5, 10.0).loss
    };
    let loss = loss_of(&model);
    let g = loss.backward();
    let lora_b = model.linear_out.lora.as_ref().unwrap().lora_b.clone();
    let analytic = lora_b
        .grad(&g)
        .unwrap()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let values = lora_b.val().into_data().try_into_vec::<f32>().unwrap();
    let dims = lora_b.val().dims();
    let h = 2e-3f32;
    for i in 0..values.len() {
        let eval = |delta: f32| {
            let mut v = values.clone();
            v[i] += delta;
            let mut m = model.clone();
            m.linear_out.lora.as_mut().unwrap().lora_b = burn::module::Param::from_tensor(
                Tensor::<2>::from_data(TensorData::new(v, dims), &device).require_grad(),
            );
            f64::from(loss_of(&m).into_scalar::<f32>())
        };
        let numeric = (eval(h) - eval(-h)) / (2.0 * f64::from(h));
        let err = (numeric - f64::from(analytic[i])).abs();
        assert!(
            err < 2e-3 * numeric.abs().max(1e-2),
            "param {i}: {numeric} vs {}",
            analytic[i]
        );
    }
}

/// Every algorithm raises the toy's proxy reward (the x-coordinate) within the same budget.
#[test]
fn every_algorithm_raises_the_proxy_within_the_budget() {
    let base = base();
    let runs = std::iter::once((AlgorithmKind::Rocm, SamplerKind::Lcm)).chain(POLICY_GRADIENT);
    for (algorithm, sampler) in runs {
        let mut c = config_with(algorithm, sampler, "budget");
        if algorithm == AlgorithmKind::Rocm {
            c.beta = 0.1;
        }
        let mut t = trainer(&base, c);
        let before = mean_x(&t);
        for _ in 0..30 {
            t.train_iteration().unwrap();
        }
        let after = mean_x(&t);
        eprintln!("{algorithm:?} on {sampler:?}: {before:.3} -> {after:.3}");
        assert!(
            after > before + 0.1,
            "{algorithm:?} on {sampler:?}: {before} -> {after}"
        );
    }
}

/// Truncated backprop: through all K steps it is plain ROCM; through fewer it differs.
#[test]
fn truncated_backprop_is_rocm_at_k_and_differs_below() {
    let base = base();
    let run = |steps: usize| {
        let mut c = config(AlgorithmKind::Rocm, "trunc");
        c.backprop_steps = steps;
        c.beta = 0.1;
        let mut t = trainer(&base, c);
        let g = t.iteration_gradients().unwrap();
        grads::flat_gradients(t.model(), &g.grads)
            .into_iter()
            .flat_map(|t| t.into_data().try_into_vec::<f32>().unwrap())
            .collect::<Vec<f32>>()
    };
    let (full, all, one) = (run(0), run(4), run(1));
    assert_eq!(full, all);
    assert_ne!(full, one);
    // Checkpointed recomputation skips the detached steps and gives the same gradient.
    let mut c = config(AlgorithmKind::Rocm, "trunc-ck");
    c.backprop_steps = 1;
    c.beta = 0.1;
    c.gradient_checkpointing = true;
    let mut t = trainer(&base, c);
    let g = t.iteration_gradients().unwrap();
    let ck: Vec<f32> = grads::flat_gradients(t.model(), &g.grads)
        .into_iter()
        .flat_map(|t| t.into_data().try_into_vec::<f32>().unwrap())
        .collect();
    for (a, b) in one.iter().zip(&ck) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1e-3), "{a} vs {b}");
    }
}

/// Every baseline saves and resumes exactly: 2 + 2 iterations equal 4 (stat tracker included).
#[test]
fn every_algorithm_resumes_bit_for_bit() {
    let base = base();
    for (algorithm, sampler) in POLICY_GRADIENT {
        let mut c = config_with(
            algorithm,
            sampler,
            &format!("resume-{algorithm:?}-{sampler:?}"),
        );
        c.iterations = 4;
        let mut straight = trainer(&base, c.clone());
        let all: Vec<_> = (0..4)
            .map(|_| straight.train_iteration().unwrap().without_time())
            .collect();
        let mut first = trainer(&base, c.clone());
        for _ in 0..2 {
            first.train_iteration().unwrap();
        }
        let dir = first
            .save_checkpoint(&c.output_dir.join("checkpoints"))
            .unwrap();
        let mut resumed = trainer(&base, c.clone());
        resumed.resume(&dir).unwrap();
        let rest: Vec<_> = (0..2)
            .map(|_| resumed.train_iteration().unwrap().without_time())
            .collect();
        assert_eq!(rest, all[2..], "{algorithm:?} on {sampler:?}");
        std::fs::remove_dir_all(&c.output_dir).ok();
    }
}

/// DDIM rollouts: every one of the K steps is a trained transition (SD's `set_alpha_to_one =
/// false` keeps the last σ > 0), the run needs a DDIM schedule, and its evaluation samples with
/// DDIM (η from `[train.ddim]`), not the LCM sampler.
#[test]
fn ddim_runs_train_every_step_and_need_their_schedule() {
    let base = base();
    let mut model = base.clone();
    lora(&mut model);
    let err = RocmTrainer::builder(config(AlgorithmKind::Ddpo, "no-ddim"))
        .model(model)
        .reward(ProxyX)
        .unconditional()
        .scheduler(toy::scheduler())
        .latent_shape([1, 2])
        .device(Device::flex().autodiff())
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::MissingPart(MissingPart::DdimScheduler)),
        "{err}"
    );
    assert!(err.to_string().contains("ddim_scheduler"), "{err}");
    // The same seeds: DDIM's evaluation differs from the LCM sampler's, and depends on η.
    let seeds: Vec<u64> = (0..16).collect();
    let eval = |c: TrainConfig| {
        trainer(&base, c)
            .evaluate_unconditional(Branch::Policy, &seeds)
            .unwrap()
    };
    let lcm = eval(config_with(AlgorithmKind::D3po, SamplerKind::Lcm, "e1"));
    let ddim = eval(config_with(AlgorithmKind::D3po, SamplerKind::Ddim, "e2"));
    let mut half = config_with(AlgorithmKind::D3po, SamplerKind::Ddim, "e3");
    half.ddim.eta = 0.5;
    assert_ne!(lcm, ddim);
    assert_ne!(ddim, eval(half));
    // DPOK on DDIM reports the KL to the base at all K steps (the last one is stochastic too).
    let mut t = trainer(
        &base,
        config_with(AlgorithmKind::Dpok, SamplerKind::Ddim, "kl-k"),
    );
    let m = t.train_iteration().unwrap();
    assert_eq!(m.divergence_per_step.len(), 4);
    assert!(
        m.divergence_per_step
            .iter()
            .all(|d| d.is_finite() && *d >= 0.0)
    );
    // A DDPO iteration samples B × samples_per_prompt images and its loss is finite.
    let mut t = trainer(&base, config(AlgorithmKind::Ddpo, "k-steps"));
    let g = t.iteration_gradients().unwrap();
    assert_eq!(g.images_sampled, 16);
    assert!(g.loss.is_finite());
}
