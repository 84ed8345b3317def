//! One LCM sampler step on the `small` benchmark UNet (`rocm::bench`, the workload of
//! `examples/bench_rocm.rs`): forward without a graph, and forward + backward into the LoRA
//! adapters, plain and with per-step checkpointing. One ROCM iteration of `bench_rocm` is 8 such
//! steps plus 7 reference calls and the VAE decoder.
//!
//! ```text
//! cargo bench --bench per_step_backprop
//! ```
#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! generates an undocumented fn

use std::time::Duration;

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use rocm::bench::{BenchModels, BenchSize};
use rocm::sampler::{
    GradientMode, Guidance, Sampler, SamplerNoise, SamplerOptions, TrajectoryObjective,
    TrajectoryStep, gradients, per_sample_mean,
};

/// A quadratic of the step's output: the backward pass reaches every adapter.
struct Quadratic;

impl TrajectoryObjective<4> for Quadratic {
    fn step_term(&self, _step: &TrajectoryStep<4>) -> Option<Tensor<1>> {
        None
    }

    fn final_term(&self, x: Tensor<4>) -> Tensor<1> {
        per_sample_mean(x.square())
    }
}

fn per_step_backprop(c: &mut Criterion) {
    let (device, backend) = rocm::select_device("auto").unwrap();
    let device = device.autodiff();
    let models = BenchModels::new(BenchSize::Small, &device).unwrap();
    let sampler = Sampler::default();
    let options = SamplerOptions::new(1).with_guidance(Guidance::embedded(7.5));
    let shape = models.latent_shape;
    let mut group = c.benchmark_group(format!("per_step_backprop/small/{backend}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("forward_no_grad", |b| {
        b.iter(|| {
            let noise = SamplerNoise::from_seed(shape, 1, 0, &device);
            let t = sampler
                .sample_no_grad(&models.unet, &models.conditioning, noise, &options)
                .unwrap();
            t.final_latent.sum().into_scalar::<f32>()
        })
    });
    for (name, mode) in [
        ("forward_backward_plain", GradientMode::Plain),
        ("forward_backward_checkpointed", GradientMode::Checkpointed),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let noise = SamplerNoise::from_seed(shape, 1, 0, &device);
                let g = gradients(
                    &sampler,
                    &models.unet,
                    &models.conditioning,
                    noise,
                    &options,
                    &Quadratic,
                    mode,
                )
                .unwrap();
                g.loss.into_scalar::<f32>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, per_step_backprop);
criterion_main!(benches);
