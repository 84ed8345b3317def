//! ROCM on a model, reward and divergence of your own: what a downstream crate writes.
//!
//! ```text
//! cargo run --release --example custom_model [-- --iterations 60]
//! ```
//!
//! The model is a 2-D ε-predicting MLP whose layers are `rocm_lora::Linear` (so LoRA can adapt
//! them and the frozen base is the same network with its adapters off); the reward pulls points
//! towards `(1, 1)`; the divergence is half the squared distance of the two policies' means. The
//! trainer is wired with [`RocmTrainer::builder`]: every part named, nothing defaulted. Prints
//! the mean reward of fixed evaluation samples before and after training, and the divergence
//! the run trained with, one `key value` line each.

#![allow(clippy::print_stdout)] // an example owns the terminal

use burn::prelude::*;
use clap::{Arg, Command, value_parser};
use rocm::divergence::{DiagGaussian, FDivergence};
use rocm::lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm::lora::{Linear, LinearConfig, impl_lora_container, with_adapters_disabled};
use rocm::sampler::{
    Branch, ConsistencyModel, LcmScheduler, ModelInput, Parameterization, Prediction,
};
use rocm::trainer::{GuidanceKind, LatentReward, RocmTrainer, TrainConfig};

/// The user's model: `ε = out(tanh(inp(x) + t/1000))`.
#[derive(Module, Debug)]
struct PointNet {
    inp: Linear,
    out: Linear,
}

impl_lora_container!(PointNet { inp, out });

impl PointNet {
    fn new(device: &Device) -> Self {
        Self {
            inp: LinearConfig::new(2, 32).init(device),
            out: LinearConfig::new(32, 2).init(device),
        }
    }

    fn eps(&self, input: &ModelInput<2>) -> Prediction<2> {
        let t = input
            .timestep
            .clone()
            .div_scalar(1000.0)
            .unsqueeze_dim::<2>(1);
        let output = self
            .out
            .forward((self.inp.forward(input.latent.clone()) + t).tanh());
        Prediction {
            output,
            parameterization: Parameterization::Epsilon,
        }
    }
}

impl ConsistencyModel<2> for PointNet {
    type Conditioning = ();
    fn predict(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
        self.eps(input)
    }
    fn predict_base(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
        with_adapters_disabled(|| self.eps(input))
    }
}

/// The user's reward: `−‖x − (1, 1)‖²`.
struct NearOneOne;

impl LatentReward<2> for NearOneOne {
    fn name(&self) -> &str {
        "near_one_one"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        let [b, _] = latent.dims();
        -(latent - 1.0).square().sum_dim(1).reshape([b])
    }
}

/// The user's divergence: half the squared distance of the means, per element.
struct HalfSquared;

impl FDivergence for HalfSquared {
    fn name(&self) -> &str {
        "half_squared"
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        (p.mean().clone() - q.mean().clone()).square() / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let matches = Command::new("custom_model")
        .about("ROCM on a model, reward and divergence of your own")
        .arg(
            Arg::new("iterations")
                .long("iterations")
                .default_value("60")
                .value_parser(value_parser!(usize))
                .help("Training iterations"),
        )
        .get_matches();
    let iterations = matches
        .get_one::<usize>("iterations")
        .copied()
        .unwrap_or(60);

    // The wiring: a model with adapters, a config, and the builder.
    let device = Device::flex().autodiff();
    let mut model = PointNet::new(&device);
    let lora = LoraConfig::new(4, 8.0, TargetModules::names(&["inp", "out"]))
        .with_init_lora_weights(InitLoraWeights::Gaussian);
    apply_lora(&mut model, &lora)?;
    let config = TrainConfig {
        num_steps: 4,
        guidance: GuidanceKind::None,
        batch_size: 32,
        learning_rate: 1e-2,
        iterations,
        ..TrainConfig::default()
    };
    let mut trainer = RocmTrainer::builder(config)
        .model(model)
        .reward(NearOneOne)
        .custom_divergence(HalfSquared)
        .unconditional()
        .scheduler(LcmScheduler::default())
        .latent_shape([1, 2])
        .device(device)
        .build()?;

    let seeds: Vec<u64> = (0..64).collect();
    let mean = |v: Vec<f32>| v.iter().map(|r| f64::from(*r)).sum::<f64>() / v.len() as f64;
    let before = mean(trainer.evaluate_unconditional(Branch::Policy, &seeds)?);
    for _ in 0..iterations {
        trainer.train_iteration()?;
    }
    let after = mean(trainer.evaluate_unconditional(Branch::Policy, &seeds)?);
    let base = mean(trainer.evaluate_unconditional(Branch::Base, &seeds)?);
    println!("divergence {}", trainer.divergence_name());
    println!("reward_before {before}");
    println!("reward_after {after}");
    println!("reward_base {base}");
    Ok(())
}
