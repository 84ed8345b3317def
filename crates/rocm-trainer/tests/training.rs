//! The ROCM loop on the toy point model: learning, the objective's terms, accumulation,
//! clipping, exact resume and NaN handling (a NaN reward, weight or overflowing latent stops the
//! run naming it, keeps the last checkpoint, and a resume recovers).

#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::path::PathBuf;

use burn::module::Param;
use burn::prelude::*;
use rocm_divergence::{Kl, Reduction};
use rocm_lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm_sampler::{Branch, GradientMode, Guidance, Sampler, SamplerNoise, SamplerOptions};
use rocm_trainer::toy::{self, ToyPointModel, ToyPointModelConfig};
use rocm_trainer::{
    Error, GuidanceKind, LatentReward, NonFiniteValue, RocmObjective, RocmTrainer, TrainConfig,
    checkpoint, grads,
};

/// The proxy reward: the x-coordinate of the point.
struct XReward;
impl LatentReward<2> for XReward {
    fn name(&self) -> &str {
        "x"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        let [b, _] = latent.dims();
        latent.slice(s![.., 0..1]).reshape([b])
    }
}

/// A reward of zero (keeps the graph so the loss is the divergence term alone).
struct ZeroReward;
impl LatentReward<2> for ZeroReward {
    fn name(&self) -> &str {
        "zero"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        XReward.reward(latent, &[]) * 0.0
    }
}

/// The x-coordinate, but NaN from the `nan_at`-th call on.
struct NanAt {
    calls: Cell<usize>,
    nan_at: usize,
}
impl LatentReward<2> for NanAt {
    fn name(&self) -> &str {
        "nan_at"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        self.calls.set(self.calls.get() + 1);
        let r = XReward.reward(latent, &[]);
        if self.calls.get() >= self.nan_at {
            r * f32::NAN
        } else {
            r
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-trainer-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn config(out: &str) -> TrainConfig {
    TrainConfig {
        num_steps: 3,
        guidance: GuidanceKind::None,
        batch_size: 2,
        learning_rate: 1e-2,
        gradient_checkpointing: false,
        beta: 0.1,
        iterations: 4,
        checkpoint_every: 0,
        seed: 11,
        output_dir: temp_dir(out),
        ..TrainConfig::default()
    }
}

fn toy_model(device: &Device) -> ToyPointModel {
    let mut model = ToyPointModelConfig::new()
        .with_hidden(16)
        .with_depth(1)
        .init_seeded(7, device);
    let lora = LoraConfig::new(2, 4.0, TargetModules::names(&model.all_layers()))
        .with_init_lora_weights(InitLoraWeights::Gaussian)
        .with_seed(1);
    apply_lora(&mut model, &lora).unwrap();
    model
}

type Toy = RocmTrainer<2, ToyPointModel>;

fn trainer<R: LatentReward<2> + 'static>(reward: R, config: TrainConfig) -> Toy {
    let device = Device::flex().autodiff();
    RocmTrainer::builder(config)
        .model(toy_model(&device))
        .reward(reward)
        .unconditional()
        .scheduler(toy::scheduler())
        .latent_shape([1, 2])
        .device(device)
        .build()
        .unwrap()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// Every adapter factor of the model, flattened in traversal order.
fn adapters(model: &ToyPointModel) -> Vec<f32> {
    let mut layers = vec![&model.linear_in];
    layers.extend(model.hidden.iter());
    layers.push(&model.linear_out);
    layers
        .iter()
        .flat_map(|l| {
            let lora = l.lora.as_ref().unwrap();
            let mut v = host(lora.lora_a.val());
            v.extend(host(lora.lora_b.val()));
            v
        })
        .collect()
}

fn flat_grads(model: &ToyPointModel, g: &burn::optim::GradientsParams) -> Vec<f32> {
    grads::flat_gradients(model, g)
        .into_iter()
        .flat_map(host)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn training_raises_the_proxy_and_changes_only_adapters() {
    let mut t = trainer(
        XReward,
        TrainConfig {
            beta: 0.0,
            ..config("learn")
        },
    );
    let seeds: Vec<u64> = (100..132).collect();
    let prompts = vec![String::new(); seeds.len()];
    let mean = |v: Vec<f32>| v.iter().sum::<f32>() / v.len() as f32;
    let before = mean(t.evaluate(Branch::Policy, &prompts, &seeds).unwrap());
    let base_before = host(t.model().hidden[0].weight.val());
    let adapters_before = adapters(t.model());
    let first = t.train_iteration().unwrap();
    for _ in 0..14 {
        t.train_iteration().unwrap();
    }
    let after = mean(t.evaluate(Branch::Policy, &prompts, &seeds).unwrap());
    assert!(after > before + 0.1, "proxy reward {before} -> {after}");
    assert_eq!(host(t.model().hidden[0].weight.val()), base_before);
    assert!(max_diff(&adapters(t.model()), &adapters_before) > 1e-3);
    assert_eq!((first.step, t.step()), (1, 15));
    assert_eq!(first.divergence_per_step.len(), 2); // K − 1 non-final steps
    assert_eq!(first.divergence_mean, 0.0); // B = 0 at init: π_θ = π_ref
    assert!((first.loss + first.reward_mean).abs() < 1e-5); // β = 0: loss = −R
}

#[test]
fn beta_adds_exactly_the_divergence_gradient_and_skips_the_last_step() {
    let mut t = trainer(
        XReward,
        TrainConfig {
            beta: 0.0,
            ..config("beta")
        },
    );
    for _ in 0..3 {
        t.train_iteration().unwrap(); // move the adapters away from π_ref
    }
    let model = t.model();
    let device = Device::flex().autodiff();
    let sampler = Sampler::default();
    let options = SamplerOptions::new(3)
        .with_guidance(Guidance::None)
        .with_base(true);
    let run = |reward: &dyn LatentReward<2>, beta: f64| {
        let objective = RocmObjective {
            reward,
            divergence: &Kl,
            beta,
            reduction: Reduction::Mean,
            prompts: &[],
        };
        let noise = SamplerNoise::from_seed([4, 2], 3, 5, &device);
        sampler
            .gradients(model, &(), noise, &options, &objective, GradientMode::Plain)
            .unwrap()
    };
    let plain = run(&XReward, 0.0);
    let regularised = run(&XReward, 1.0);
    let divergence_only = run(&ZeroReward, 1.0);
    assert!(plain.step_terms.iter().all(Option::is_none));
    let present: Vec<bool> = regularised.step_terms.iter().map(Option::is_some).collect();
    assert_eq!(present, [true, true, false], "no term on the last step");
    let d: f32 = regularised
        .step_terms
        .iter()
        .flatten()
        .map(|t| host(t.clone().mean())[0])
        .sum();
    assert!(d > 0.0);
    let (g0, g1) = (
        flat_grads(model, &plain.grads),
        flat_grads(model, &regularised.grads),
    );
    let gd = flat_grads(model, &divergence_only.grads);
    assert!(max_diff(&g0, &g1) > 1e-6, "β > 0 must change the gradient");
    let sum: Vec<f32> = g0.iter().zip(&gd).map(|(a, b)| a + b).collect();
    assert!(max_diff(&sum, &g1) < 1e-5, "{}", max_diff(&sum, &g1));
}

#[test]
fn two_micro_batches_of_one_equal_one_batch_of_two() {
    // f32 rounding differs with the batch split (and, checkpointed, the summation order):
    // equal within 1e-6 relative to the largest gradient.
    for checkpointing in [false, true] {
        let one = config("accum");
        let mut whole = trainer(XReward, one.clone());
        let micro = TrainConfig {
            batch_size: 1,
            gradient_accumulation_steps: 2,
            gradient_checkpointing: checkpointing,
            ..one
        };
        let mut split = trainer(XReward, micro);
        // Two iterations: the second has non-zero adapters, so the divergence term is active.
        for _ in 0..2 {
            let a = whole.iteration_gradients().unwrap();
            let b = split.iteration_gradients().unwrap();
            let ga = flat_grads(whole.model(), &a.grads);
            let gb = flat_grads(split.model(), &b.grads);
            let scale = ga.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(scale > 1e-4);
            let diff = max_diff(&ga, &gb);
            assert!(diff <= 1e-6 * scale, "{checkpointing}: {diff} of {scale}");
            assert!((a.loss - b.loss).abs() < 1e-6);
            assert!((a.reward_mean - b.reward_mean).abs() < 1e-6);
            whole.train_iteration().unwrap();
            split.train_iteration().unwrap();
        }
        assert!(max_diff(&adapters(whole.model()), &adapters(split.model())) < 1e-5);
    }
}

#[test]
fn the_global_norm_is_clipped_and_reported_unclipped() {
    let mut t = trainer(
        XReward,
        TrainConfig {
            max_grad_norm: 1e-3,
            ..config("clip")
        },
    );
    let mut g = t.iteration_gradients().unwrap().grads;
    let norm = grads::global_norm(t.model(), &g);
    assert!(norm > 1e-2, "{norm}");
    let reported = grads::clip_global_norm(t.model(), &mut g, 1e-3);
    assert_eq!(reported, norm);
    assert!((grads::global_norm(t.model(), &g) - 1e-3).abs() < 1e-6);
    let m = t.train_iteration().unwrap();
    assert!(m.grad_norm > 1e-3);
}

#[test]
fn resuming_from_a_checkpoint_continues_bit_for_bit() {
    let mut straight = trainer(XReward, config("resume-a"));
    let all: Vec<_> = (0..4)
        .map(|_| straight.train_iteration().unwrap())
        .collect();

    let cfg = config("resume-b");
    let root = cfg.output_dir.join("checkpoints");
    let mut first = trainer(XReward, cfg.clone());
    for _ in 0..2 {
        first.train_iteration().unwrap();
    }
    let dir = first.save_checkpoint(&root).unwrap();
    drop(first);
    assert_eq!(
        checkpoint::latest_checkpoint(&root).unwrap(),
        Some(dir.clone())
    );

    let mut resumed = trainer(XReward, cfg.clone());
    resumed.resume(&dir).unwrap();
    assert_eq!(resumed.step(), 2);
    let rest: Vec<_> = (0..2).map(|_| resumed.train_iteration().unwrap()).collect();
    for (a, b) in all[2..].iter().zip(&rest) {
        assert_eq!(a.without_time(), b.without_time());
    }
    assert_eq!(adapters(straight.model()), adapters(resumed.model()));

    // The LoRA file loads with rocm-lora's loader into a fresh model.
    let mut fresh = toy_model(&Device::flex());
    let lora = dir.join(rocm_lora::DIFFUSERS_WEIGHTS);
    let report = rocm_lora::load_adapters(&mut fresh, &lora).unwrap();
    assert_eq!(report.loaded.len(), 3);
    std::fs::remove_dir_all(&cfg.output_dir).ok();
}

#[test]
fn a_nan_reward_stops_the_run_and_keeps_the_last_checkpoint() {
    let cfg = TrainConfig {
        checkpoint_every: 1,
        iterations: 5,
        eval_every: 1,
        eval_prompts: vec![String::new()],
        eval_seeds: vec![0, 1],
        ..config("nan")
    };
    let reward = NanAt {
        calls: Cell::new(0),
        nan_at: 5, // calls: step 1, eval 1, step 2, eval 2, step 3
    };
    let mut t = trainer(reward, cfg.clone());
    let err = t.run(|_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                step: 3,
                what: NonFiniteValue::Reward { sample: 0 },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("training step 3: reward of sample 0 is not finite (NaN)"),
        "{err}"
    );
    let root = cfg.output_dir.join("checkpoints");
    let latest = checkpoint::latest_checkpoint(&root).unwrap().unwrap();
    assert_eq!(latest, checkpoint::checkpoint_dir(&root, 2));
    let mut again = trainer(XReward, cfg.clone());
    again.resume(&latest).unwrap();
    assert_eq!(again.step(), 2);
    let lines = std::fs::read_to_string(cfg.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    let csv = std::fs::read_to_string(cfg.output_dir.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("step,reward_mean,divergence_mean,loss,grad_norm,lr,seconds,"));
    assert_eq!(csv.lines().count(), 3);
    let eval = std::fs::read_to_string(cfg.output_dir.join("eval.jsonl")).unwrap();
    assert_eq!(eval.lines().count(), 2);
    std::fs::remove_dir_all(&cfg.output_dir).ok();
}

/// Trains 2 iterations (checkpoints 1 and 2), then resumes with `damage` done to the model
/// into a 4-iteration run, which must stop at step 3 keeping checkpoint 2; a resume with the
/// undamaged model then finishes the run to the bits of an uninterrupted one. Returns the
/// damaged run's error.
fn damaged_run_stops_and_resume_recovers(
    name: &str,
    damage: impl FnOnce(&mut ToyPointModel),
) -> Error {
    let cfg = TrainConfig {
        checkpoint_every: 1,
        iterations: 4,
        ..config(name)
    };
    let root = cfg.output_dir.join("checkpoints");
    let mut first = trainer(
        XReward,
        TrainConfig {
            iterations: 2,
            ..cfg.clone()
        },
    );
    first.run(|_| {}).unwrap();

    let device = Device::flex().autodiff();
    let mut model = toy_model(&device);
    damage(&mut model);
    let mut damaged = RocmTrainer::builder(cfg.clone())
        .model(model)
        .reward(XReward)
        .unconditional()
        .scheduler(toy::scheduler())
        .latent_shape([1, 2])
        .device(device)
        .build()
        .unwrap();
    damaged
        .resume(&checkpoint::checkpoint_dir(&root, 2))
        .unwrap();
    let err = damaged.run(|_| {}).unwrap_err();
    eprintln!("{name}: {err}");
    assert!(err.to_string().starts_with("training step 3: "), "{err}");
    let latest = checkpoint::latest_checkpoint(&root).unwrap().unwrap();
    assert_eq!(latest, checkpoint::checkpoint_dir(&root, 2));

    let mut resumed = trainer(XReward, cfg.clone());
    resumed.resume(&latest).unwrap();
    resumed.run(|_| {}).unwrap();
    let mut straight = trainer(XReward, config(&format!("{name}-straight")));
    for _ in 0..4 {
        straight.train_iteration().unwrap();
    }
    assert_eq!(adapters(straight.model()), adapters(resumed.model()));
    std::fs::remove_dir_all(&cfg.output_dir).ok();
    err
}

#[test]
fn a_nan_weight_stops_the_run_naming_the_parameter_and_resume_recovers() {
    let err = damaged_run_stops_and_resume_recovers("nan-weight", |m| {
        let w = m.hidden[0].weight.val();
        m.hidden[0].weight = Param::from_tensor(w.mul_scalar(f32::NAN)).set_require_grad(false);
    });
    assert!(
        matches!(&err, Error::NonFinite { step: 3, what: NonFiniteValue::Weight(p), .. } if p == "hidden.0.weight"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("weight `hidden.0.weight` is not finite (NaN)"),
        "{err}"
    );
}

#[test]
fn an_overflowing_latent_stops_the_run_naming_the_latent_and_resume_recovers() {
    // Finite weights whose output overflows f32: the sampler's states become infinite.
    let err = damaged_run_stops_and_resume_recovers("inf-latent", |m| {
        let b = m.linear_out.bias.as_ref().unwrap().val();
        let huge = b.zeros_like().add_scalar(f32::MAX);
        m.linear_out.bias = Some(Param::from_tensor(huge).set_require_grad(false));
    });
    assert!(
        matches!(&err, Error::NonFinite { step: 3, what: NonFiniteValue::Latent { k, .. }, .. } if *k >= 1),
        "{err}"
    );
    assert!(err.to_string().contains("latent x_"), "{err}");
}

#[test]
fn a_nan_adapter_weight_is_named_by_its_path() {
    let device = Device::flex().autodiff();
    let mut model = toy_model(&device);
    let lora = model.linear_in.lora.as_mut().unwrap();
    let nan = Tensor::<2>::full(lora.lora_a.val().dims(), f32::NAN, &device);
    lora.lora_a = Param::from_tensor(nan);
    let mut t = RocmTrainer::builder(config("nan-adapter"))
        .model(model)
        .reward(XReward)
        .unconditional()
        .scheduler(toy::scheduler())
        .latent_shape([1, 2])
        .device(device)
        .build()
        .unwrap();
    let err = t.train_iteration().unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { step: 1, what: NonFiniteValue::Weight(p), .. } if p == "linear_in.lora.lora_a"),
        "{err}"
    );
    assert_eq!(t.step(), 0);
}

#[test]
fn evaluation_runs_every_eval_every_and_at_the_end_without_grids_for_points() {
    let cfg = TrainConfig {
        checkpoint_every: 0,
        iterations: 3,
        eval_every: 2,
        eval_prompts: vec![String::new()],
        eval_seeds: vec![0, 1],
        ..config("eval-end")
    };
    let mut t = trainer(XReward, cfg.clone());
    t.run(|_| {}).unwrap();
    let eval = std::fs::read_to_string(cfg.output_dir.join("eval.jsonl")).unwrap();
    let steps: Vec<u64> = eval
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [2, 3]);
    // The last line is what `evaluate` gives for the same pairs now.
    let (prompts, seeds) = t.evaluation_pairs();
    assert_eq!((prompts.len(), seeds.as_slice()), (2, [0u64, 1].as_slice()));
    let (rewards, images) = t
        .evaluate_with_images(Branch::Policy, &prompts, &seeds)
        .unwrap();
    assert!(images.is_none(), "points have no images");
    let last: serde_json::Value = serde_json::from_str(eval.lines().last().unwrap()).unwrap();
    let logged: Vec<f32> = last["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(logged, rewards);
    assert!(!cfg.output_dir.join(rocm_trainer::SAMPLES_DIR).exists());
    std::fs::remove_dir_all(&cfg.output_dir).ok();
}
