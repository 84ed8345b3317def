//! The cost of one ROCM training iteration (rollout with gradients through all `K` steps,
//! backward, clipping, AdamW) on the LoRA-adapted toy point model, against `K` ∈ {1, 2, 4, 8}
//! and batch ∈ {1, 8}, with and without per-step gradient checkpointing.
//!
//! ```text
//! cargo bench --bench rocm_step
//! ```
#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! generates an undocumented fn

use std::time::Duration;

use burn::prelude::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rocm::lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm::trainer::toy::{self, ToyPointModelConfig};
use rocm::trainer::{GuidanceKind, LatentReward, RocmTrainer, TrainConfig};

const HIDDEN: usize = 64;

/// A bounded reward (thousands of updates must stay finite): `−(x − 1)²` of a point's
/// x-coordinate.
struct X;

impl LatentReward<2> for X {
    fn name(&self) -> &str {
        "target_x"
    }

    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        let [b, _] = latent.dims();
        let x: Tensor<1> = latent.slice(s![.., 0..1]).reshape([b]);
        -(x - 1.0).square()
    }
}

fn rocm_step(c: &mut Criterion) {
    let (device, backend) = rocm::select_device("auto").unwrap();
    let device = device.autodiff();
    let mut group = c.benchmark_group(format!("rocm_step/{backend:?}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for checkpointing in [false, true] {
        let mode = if checkpointing {
            "checkpointed"
        } else {
            "plain"
        };
        for batch in [1, 8] {
            for k in [1, 2, 4, 8] {
                let mut model = ToyPointModelConfig::new()
                    .with_hidden(HIDDEN)
                    .init_seeded(0, &device);
                let lora = LoraConfig::new(4, 8.0, TargetModules::names(&model.all_layers()))
                    .with_init_lora_weights(InitLoraWeights::Gaussian);
                apply_lora(&mut model, &lora).unwrap();
                let config = TrainConfig {
                    num_steps: k,
                    guidance: GuidanceKind::None,
                    beta: 0.1,
                    batch_size: batch,
                    gradient_checkpointing: checkpointing,
                    concurrent: false, // the toy is too small to gain from a second thread
                    learning_rate: 1e-3,
                    iterations: 1_000_000,
                    checkpoint_every: 0,
                    ..TrainConfig::default()
                };
                let mut trainer = RocmTrainer::builder(config)
                    .model(model)
                    .reward(X)
                    .unconditional()
                    .scheduler(toy::scheduler())
                    .latent_shape([1, 2])
                    .device(device.clone())
                    .build()
                    .unwrap();
                let id = BenchmarkId::new(format!("{mode}/batch{batch}"), k);
                group.bench_function(id, |b| {
                    b.iter(|| trainer.train_iteration().unwrap().loss);
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, rocm_step);
criterion_main!(benches);
