//! Every divergence on an SD-sized latent `[1, 4, 64, 64]`: forward, and forward + backward to
//! the policy mean, on the backend `select_device("auto")` picks (flex CPU by default).
//!
//! ```text
//! cargo bench --bench divergence
//! ```
#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! generates an undocumented fn

use std::time::Duration;

use burn::prelude::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use rocm::divergence::{DiagGaussian, DivergenceKind, Reduction};

const SHAPE: [usize; 4] = [1, 4, 64, 64];

fn latent(seed: u64, device: &Device) -> Tensor<4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = SHAPE.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample(rand_distr::StandardNormal))
        .collect();
    Tensor::from_data(TensorData::new(v, SHAPE), device)
}

fn bench(c: &mut Criterion) {
    let (device, backend) = rocm::select_device("auto").unwrap();
    let train = device.clone().autodiff();
    // A late ROCM step: ā = 0.8431, σ = √(1 − ā); the base mean is a small perturbation.
    let std = (1.0f64 - 0.8431).sqrt();
    let mut group = c.benchmark_group(format!("divergence/{backend}"));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for div in DivergenceKind::ALL.map(DivergenceKind::build) {
        let mu_p = latent(1, &device);
        let mu_q = mu_p.clone() + latent(2, &device) * 0.1;
        group.bench_function(BenchmarkId::new("forward", div.name()), |b| {
            b.iter(|| {
                let p = DiagGaussian::with_scalar_std(mu_p.clone(), std);
                let q = DiagGaussian::with_scalar_std(mu_q.clone(), std);
                div.divergence(&p, &q, Reduction::Mean).into_scalar::<f32>()
            })
        });
        let mu_p = Tensor::<4>::from_data(mu_p.into_data(), &train);
        let mu_q = Tensor::<4>::from_data(mu_q.into_data(), &train);
        group.bench_function(BenchmarkId::new("forward_backward", div.name()), |b| {
            b.iter(|| {
                let leaf = mu_p.clone().detach().require_grad();
                let p = DiagGaussian::with_scalar_std(leaf.clone(), std);
                let q = DiagGaussian::with_scalar_std(mu_q.clone().detach(), std);
                let grads = div.divergence(&p, &q, Reduction::Mean).sum().backward();
                leaf.grad(&grads).unwrap().sum().into_scalar::<f32>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
