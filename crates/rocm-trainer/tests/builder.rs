//! The trainer builder: required parts, the divergence that trains, and the frozen base as an
//! explicit value (also with concurrent sampling).

#![allow(clippy::unwrap_used)]

use burn::prelude::*;
use rocm_divergence::{DiagGaussian, DivergenceConfig, FDivergence, Kl};
use rocm_lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm_sampler::Branch;
use rocm_trainer::toy::{self, ProxyX, ToyPointModel, ToyPointModelConfig};
use rocm_trainer::{Error, GuidanceKind, MissingPart, RocmTrainer, TrainConfig, TrainerBuilder};

fn config(concurrent: bool) -> TrainConfig {
    TrainConfig {
        num_steps: 4,
        guidance: GuidanceKind::None,
        batch_size: 4,
        gradient_checkpointing: false,
        concurrent,
        iterations: 2,
        checkpoint_every: 0,
        eval_every: 0,
        ..TrainConfig::default()
    }
}

/// The untrained toy (no adapters yet).
fn plain(device: &Device) -> ToyPointModel {
    ToyPointModelConfig::new()
        .with_hidden(16)
        .with_depth(1)
        .init_seeded(3, device)
}

/// The toy with adapters that change its output from the start (`B ≠ 0`).
fn adapted(device: &Device) -> ToyPointModel {
    let mut model = plain(device);
    let lora = LoraConfig::new(2, 4.0, TargetModules::names(&model.all_layers()))
        .with_init_lora_weights(InitLoraWeights::Random)
        .with_seed(5);
    apply_lora(&mut model, &lora).unwrap();
    model
}

fn builder(model: ToyPointModel, config: TrainConfig) -> TrainerBuilder<2, ToyPointModel> {
    let device = Device::flex().autodiff();
    RocmTrainer::builder(config)
        .model(model)
        .reward(ProxyX)
        .unconditional()
        .scheduler(toy::scheduler())
        .latent_shape([1, 2])
        .device(device)
}

#[test]
fn every_missing_part_is_a_typed_error() {
    let device = Device::flex().autodiff();
    let build = |skip: MissingPart| {
        let mut b = RocmTrainer::<2, ToyPointModel>::builder(config(false));
        if skip != MissingPart::Model {
            b = b.model(plain(&device));
        }
        if skip != MissingPart::Reward {
            b = b.reward(ProxyX);
        }
        if skip != MissingPart::Prompts {
            b = b.unconditional();
        }
        if skip != MissingPart::Sampler {
            b = b.scheduler(toy::scheduler());
        }
        if skip != MissingPart::LatentShape {
            b = b.latent_shape([1, 2]);
        }
        if skip != MissingPart::Device {
            b = b.device(device.clone());
        }
        b.build().err()
    };
    for part in [
        MissingPart::Model,
        MissingPart::Reward,
        MissingPart::Prompts,
        MissingPart::Sampler,
        MissingPart::LatentShape,
        MissingPart::Device,
    ] {
        let err = build(part).unwrap_or_else(|| panic!("built without the {part}"));
        assert!(matches!(err, Error::MissingPart(p) if p == part), "{err}");
        assert!(err.to_string().contains(part.call()), "{err}");
    }
    // The schedule is never silently SD 1.5's: without one the build fails (above); a plain
    // device (no autodiff) is refused too.
    let err = builder(plain(&device), config(false))
        .device(Device::flex())
        .build()
        .err()
        .unwrap();
    assert!(err.to_string().contains("autodiff"), "{err}");
}

#[test]
fn the_configured_divergence_is_the_one_that_trains() {
    let device = Device::flex().autodiff();
    for kind in rocm_divergence::DivergenceKind::ALL {
        let c = TrainConfig {
            divergence: kind.into(),
            ..config(false)
        };
        let t = builder(plain(&device), c).build().unwrap();
        assert_eq!(t.divergence_name(), kind.name());
        assert_eq!(t.config().divergence.kind(), kind);
    }
}

/// A divergence of a downstream crate: half the squared distance of the means.
struct HalfSquared;
impl FDivergence for HalfSquared {
    fn name(&self) -> &str {
        "half_squared"
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        (p.mean().clone() - q.mean().clone()).square() / 2.0
    }
}

#[test]
fn a_custom_divergence_is_recorded_and_cannot_disagree() {
    let device = Device::flex().autodiff();
    let t = builder(adapted(&device), config(false))
        .custom_divergence(HalfSquared)
        .build()
        .unwrap();
    assert_eq!(t.divergence_name(), "half_squared");
    let saved = t.config().clone();
    assert_eq!(saved.custom_divergence.as_deref(), Some("half_squared"));
    // The saved configuration says what trained: it round-trips through TOML …
    let reread = TrainConfig::from_toml_str(&saved.to_toml(), "saved.toml").unwrap();
    assert_eq!(reread, saved);
    // … and cannot be built with another divergence, nor without the custom one.
    let err = builder(adapted(&device), reread.clone())
        .custom_divergence(Kl)
        .build()
        .err()
        .unwrap();
    assert!(err.to_string().contains("half_squared"), "{err}");
    let err = builder(adapted(&device), reread).build().err().unwrap();
    assert!(err.to_string().contains("custom_divergence"), "{err}");
    // Training with it: its values, not the configured KL's ((μp − μq)² / 2σ² per element).
    let mut custom = builder(adapted(&device), config(false))
        .custom_divergence(HalfSquared)
        .build()
        .unwrap();
    let c = TrainConfig {
        divergence: DivergenceConfig::Kl,
        ..config(false)
    };
    let mut kl = builder(adapted(&device), c).build().unwrap();
    let (a, b) = (
        custom.train_iteration().unwrap(),
        kl.train_iteration().unwrap(),
    );
    assert!(a.divergence_mean > 0.0 && b.divergence_mean > 0.0);
    assert_ne!(a.divergence_mean, b.divergence_mean);
}

/// Scores of the base with the adapters off (`Branch::Base`), with concurrent sampling on, are
/// those of the same network without adapters; the adapted policy's differ.
#[test]
fn base_evaluation_with_concurrency_gives_the_base_scores() {
    let device = Device::flex().autodiff();
    let seeds: Vec<u64> = (0..8).collect();
    let prompts = vec![String::new(); seeds.len()];
    for concurrent in [false, true] {
        let tuned = builder(adapted(&device), config(concurrent))
            .build()
            .unwrap();
        let reference = builder(plain(&device), config(concurrent)).build().unwrap();
        let base = tuned.evaluate(Branch::Base, &prompts, &seeds).unwrap();
        let want = reference
            .evaluate(Branch::Policy, &prompts, &seeds)
            .unwrap();
        assert_eq!(base, want, "concurrent = {concurrent}");
        let policy = tuned.evaluate(Branch::Policy, &prompts, &seeds).unwrap();
        assert_ne!(policy, want, "the adapters change the samples");
    }
}
