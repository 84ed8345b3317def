//! LCM sampler throughput on a small model: one step and whole trajectories (K = 1, 2, 4, 8),
//! forward only and forward + backward, with and without per-step checkpointing.
//!
//! ```text
//! cargo bench --bench sampler_step
//! ```
#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! generates an undocumented fn

use std::time::Duration;

use burn::prelude::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rocm::sampler::toy::{ToyEpsMlp, ToyEpsMlpConfig, ToyObjective};
use rocm::sampler::{GradientMode, Sampler, SamplerNoise, SamplerOptions, gradients};

const BATCH: usize = 16;
const DIM: usize = 64;
const HIDDEN: usize = 256;

fn setup() -> (Device, ToyEpsMlp) {
    let (device, _backend) = rocm::select_device("flex").unwrap();
    let device = device.autodiff();
    let model = ToyEpsMlpConfig::new(DIM)
        .with_hidden(HIDDEN)
        .with_adapter(true)
        .init(&device);
    (device, model)
}

fn sync(t: Tensor<2>) -> f32 {
    t.sum().into_scalar::<f32>()
}

fn one_step(c: &mut Criterion) {
    let (device, model) = setup();
    let sampler = Sampler::default();
    let options = SamplerOptions::new(1).with_base(true);
    let mut group = c.benchmark_group("sampler_step/one_step");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("forward_no_grad", |b| {
        b.iter(|| {
            let noise = SamplerNoise::from_seed([BATCH, DIM], 1, 0, &device);
            sync(
                sampler
                    .sample_no_grad(&model, &(), noise, &options)
                    .unwrap()
                    .final_latent,
            )
        })
    });
    for (name, mode) in [
        ("forward_backward_plain", GradientMode::Plain),
        ("forward_backward_checkpointed", GradientMode::Checkpointed),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let noise = SamplerNoise::from_seed([BATCH, DIM], 1, 0, &device);
                let g =
                    gradients(&sampler, &model, &(), noise, &options, &ToyObjective, mode).unwrap();
                g.loss.into_scalar::<f32>()
            })
        });
    }
    group.finish();
}

fn trajectories(c: &mut Criterion) {
    let (device, model) = setup();
    let sampler = Sampler::default();
    let mut group = c.benchmark_group("sampler_step/trajectory");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for k in [1usize, 2, 4, 8] {
        let options = SamplerOptions::new(k).with_base(true);
        group.bench_with_input(BenchmarkId::new("forward_no_grad", k), &k, |b, &k| {
            b.iter(|| {
                let noise = SamplerNoise::from_seed([BATCH, DIM], k, 0, &device);
                sync(
                    sampler
                        .sample_no_grad(&model, &(), noise, &options)
                        .unwrap()
                        .final_latent,
                )
            })
        });
        for (name, mode) in [
            ("plain", GradientMode::Plain),
            ("checkpointed", GradientMode::Checkpointed),
        ] {
            group.bench_with_input(
                BenchmarkId::new(format!("forward_backward_{name}"), k),
                &k,
                |b, &k| {
                    b.iter(|| {
                        let noise = SamplerNoise::from_seed([BATCH, DIM], k, 0, &device);
                        let g =
                            gradients(&sampler, &model, &(), noise, &options, &ToyObjective, mode)
                                .unwrap();
                        g.loss.into_scalar::<f32>()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, one_step, trajectories);
criterion_main!(benches);
