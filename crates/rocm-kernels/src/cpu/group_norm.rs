//! GroupNorm (optionally followed by SiLU) forward and backward over a contiguous
//! `[batch, channels, spatial]` buffer.
//!
//! With `m = (channels / groups) · spatial` elements per group, mean `μ`, biased variance `σ²`,
//! `r = 1/√(σ² + ε)`, `x̂ = (x − μ) r`, `z = γ_c x̂ + β_c` and `y = silu(z)` (or `y = z`):
//!
//! - `dz = dy · silu'(z)` (or `dz = dy`), `dγ_c = Σ dz x̂`, `dβ_c = Σ dz` over batch and space;
//! - `dx̂ = γ_c dz`, `dx = r (dx̂ − mean_g(dx̂) − x̂ · mean_g(dx̂ x̂))`.
//!
//! Sums run in 8 `f32` lanes per block of 256 elements, blocks added in `f64`. The backward
//! recomputes the statistics (one pass over the group) rather than storing them. One rayon task
//! per (sample, group).

use rayon::prelude::*;

use super::CHUNK;
use super::exp::sigmoid;
use super::silu::silu_derivative;

/// The layout and constants of one GroupNorm call.
#[derive(Debug, Clone, Copy)]
pub struct GroupNormShape {
    /// Batch size.
    pub batch: usize,
    /// Channels (divisible by `groups`).
    pub channels: usize,
    /// Elements per channel (product of the spatial dimensions).
    pub spatial: usize,
    /// Number of groups.
    pub groups: usize,
    /// Added to the variance.
    pub epsilon: f64,
    /// Apply SiLU after the affine.
    pub silu: bool,
}

impl GroupNormShape {
    fn channels_per_group(&self) -> usize {
        self.channels / self.groups
    }

    /// The first channel of the `i`-th block of [`group_len`](Self::group_len) elements (blocks run
    /// over samples, then groups).
    fn first_channel(&self, i: usize) -> usize {
        (i % self.groups) * self.channels_per_group()
    }

    fn group_len(&self) -> usize {
        self.channels_per_group() * self.spatial
    }

    fn check(&self, x: &[f32], gamma: &[f32], beta: &[f32]) {
        assert!(
            self.groups > 0 && self.channels.is_multiple_of(self.groups),
            "group_norm: {} channels are not divisible into {} groups",
            self.channels,
            self.groups
        );
        assert_eq!(
            x.len(),
            self.batch * self.channels * self.spatial,
            "group_norm: input length"
        );
        assert_eq!(gamma.len(), self.channels, "group_norm: gamma length");
        assert_eq!(beta.len(), self.channels, "group_norm: beta length");
    }
}

/// Mean and `1/√(σ² + ε)` of one group, two passes.
#[inline(always)]
fn statistics(x: &[f32], epsilon: f64) -> (f32, f32) {
    let n = x.len().max(1) as f64;
    let mean = (sum_map(x, |v| v) / n) as f32;
    let var = sum_map(x, |v| (v - mean) * (v - mean)) / n;
    (mean, (1.0 / (var + epsilon).sqrt()) as f32)
}

/// Lanes of the partial sums: wide enough for AVX2, and a shape LLVM's SLP vectoriser keeps in
/// registers (it does not reorder a plain `f32` sum by itself).
const LANES: usize = 8;
/// Elements summed in `f32` lanes before the block's total is added in `f64`.
const BLOCK: usize = 256;

/// `Σ f(v)` over `x`: 8 `f32` lanes per block of 256 elements, blocks accumulated in `f64`.
#[inline(always)]
fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut lanes = block.chunks_exact(LANES);
        for c in &mut lanes {
            for j in 0..LANES {
                acc[j] += f(c[j]);
            }
        }
        let tail: f32 = lanes.remainder().iter().map(|&v| f(v)).sum();
        total += (acc.iter().sum::<f32>() + tail) as f64;
    }
    total
}

/// For one channel: `dx̂ = γ dz` into `dxc`, returning `(Σ dz, Σ dz x̂)`. Three simple passes
/// (element-wise `dz`, the two sums in lanes, the scaling by γ), each of which LLVM vectorises;
/// one fused loop with the `exp` inside did not vectorise. `SILU` is a constant so that the
/// element-wise loop has no branch.
#[inline(always)]
fn channel_pass<const SILU: bool>(
    xc: &[f32],
    dyc: &[f32],
    dxc: &mut [f32],
    (mean, rstd, g, b): (f32, f32, f32, f32),
) -> (f64, f64) {
    if SILU {
        let (a, c) = (rstd * g, b - mean * rstd * g);
        for ((d, &v), &gy) in dxc.iter_mut().zip(xc).zip(dyc) {
            *d = gy * silu_derivative(v * a + c);
        }
    } else {
        dxc.copy_from_slice(dyc);
    }
    let (mut sdz, mut sdz_xhat) = (0.0f64, 0.0f64);
    for (db, xb) in dxc.chunks(BLOCK).zip(xc.chunks(BLOCK)) {
        let (d8, d_tail) = db.as_chunks::<LANES>();
        let (x8, x_tail) = xb.as_chunks::<LANES>();
        let (mut a1, mut a2) = ([0.0f32; LANES], [0.0f32; LANES]);
        for (dl, xl) in d8.iter().zip(x8) {
            for j in 0..LANES {
                a1[j] += dl[j];
                a2[j] += dl[j] * ((xl[j] - mean) * rstd);
            }
        }
        let (mut t1, mut t2) = (0.0f32, 0.0f32);
        for (&dz, &v) in d_tail.iter().zip(x_tail) {
            t1 += dz;
            t2 += dz * ((v - mean) * rstd);
        }
        sdz += (a1.iter().sum::<f32>() + t1) as f64;
        sdz_xhat += (a2.iter().sum::<f32>() + t2) as f64;
    }
    for d in dxc.iter_mut() {
        *d *= g;
    }
    (sdz, sdz_xhat)
}

/// Groups per rayon task: at least [`CHUNK`] elements a task (the UNet's 4 × 4 and 8 × 8 levels
/// have a few hundred elements a group, too little to be worth a wake-up each).
fn groups_per_task(len: usize) -> usize {
    CHUNK.div_ceil(len.max(1))
}

/// `y = [silu](γ x̂ + β)` for every group of `x`.
pub fn forward(shape: GroupNormShape, x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    shape.check(x, gamma, beta);
    assert_eq!(y.len(), x.len(), "group_norm: output length");
    let len = shape.group_len();
    if len == 0 {
        return;
    }
    y.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .with_min_len(groups_per_task(len))
        .for_each(|(i, (y, x))| {
            let first = shape.first_channel(i);
            forward_group(shape, x, &gamma[first..], &beta[first..], y)
        });
}

simd_fn! {
    /// One group: `x`, `y` its elements, `gamma`, `beta` starting at its first channel.
    fn forward_group<'a>(
        shape: GroupNormShape,
        x: &'a [f32],
        gamma: &'a [f32],
        beta: &'a [f32],
        y: &'a mut [f32],
    ) {
        let s = shape.spatial;
        let (mean, rstd) = statistics(x, shape.epsilon);
        for c in 0..shape.channels_per_group() {
            let a = gamma[c] * rstd;
            let b = beta[c] - mean * a;
            let (xc, yc) = (&x[c * s..(c + 1) * s], &mut y[c * s..(c + 1) * s]);
            if shape.silu {
                for (o, &v) in yc.iter_mut().zip(xc) {
                    let z = v * a + b;
                    *o = z * sigmoid(z);
                }
            } else {
                for (o, &v) in yc.iter_mut().zip(xc) {
                    *o = v * a + b;
                }
            }
        }
    }
}

/// The gradients of [`forward`]: `dx` always, `(dγ, dβ)` when `affine_grads` (else `None`).
pub fn backward(
    shape: GroupNormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    affine_grads: bool,
) -> Option<(Vec<f32>, Vec<f32>)> {
    shape.check(x, gamma, beta);
    assert_eq!(dy.len(), x.len(), "group_norm backward: gradient length");
    assert_eq!(dx.len(), x.len(), "group_norm backward: output length");
    let (len, cpg) = (shape.group_len(), shape.channels_per_group());
    if len == 0 {
        return affine_grads.then(|| (vec![0.0; shape.channels], vec![0.0; shape.channels]));
    }
    // Per (sample, group): that group's channels' partial dγ and dβ.
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(len)
        .zip(x.par_chunks(len).zip(dy.par_chunks(len)))
        .enumerate()
        .with_min_len(groups_per_task(len))
        .map(|(i, (dx, (x, dy)))| {
            let first = shape.first_channel(i);
            backward_group(shape, x, &gamma[first..], &beta[first..], dy, dx)
        })
        .collect();
    affine_grads.then(|| {
        let (mut dgamma, mut dbeta) = (vec![0.0f64; shape.channels], vec![0.0f64; shape.channels]);
        for (i, (dg, db)) in partials.iter().enumerate() {
            let first = shape.first_channel(i);
            for c in 0..cpg {
                dgamma[first + c] += dg[c];
                dbeta[first + c] += db[c];
            }
        }
        (
            dgamma.into_iter().map(|v| v as f32).collect(),
            dbeta.into_iter().map(|v| v as f32).collect(),
        )
    })
}

simd_fn! {
    /// One group's `dx` (into `dx`) and its channels' `(Σ dz x̂, Σ dz)`: the partial dγ, dβ.
    fn backward_group<'a>(
        shape: GroupNormShape,
        x: &'a [f32],
        gamma: &'a [f32],
        beta: &'a [f32],
        dy: &'a [f32],
        dx: &'a mut [f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let (cpg, s) = (shape.channels_per_group(), shape.spatial);
        let (mean, rstd) = statistics(x, shape.epsilon);
        let (mut dgamma, mut dbeta) = (vec![0.0f64; cpg], vec![0.0f64; cpg]);
        // Pass 1: dx̂ = γ dz into `dx`, and the sums of dx̂ and dx̂·x̂ (and dγ, dβ).
        let (mut sum_dxhat, mut sum_dxhat_xhat) = (0.0f64, 0.0f64);
        for c in 0..cpg {
            let (g, b) = (gamma[c], beta[c]);
            let range = c * s..(c + 1) * s;
            let (xc, dyc, dxc) = (&x[range.clone()], &dy[range.clone()], &mut dx[range]);
            let (sdz, sdz_xhat) = if shape.silu {
                channel_pass::<true>(xc, dyc, dxc, (mean, rstd, g, b))
            } else {
                channel_pass::<false>(xc, dyc, dxc, (mean, rstd, g, b))
            };
            dgamma[c] = sdz_xhat;
            dbeta[c] = sdz;
            sum_dxhat += g as f64 * sdz;
            sum_dxhat_xhat += g as f64 * sdz_xhat;
        }
        let m = x.len() as f64;
        let (m1, m2) = ((sum_dxhat / m) as f32, (sum_dxhat_xhat / m) as f32);
        // Pass 2: dx = r (dx̂ − mean(dx̂) − x̂ mean(dx̂ x̂)).
        for (d, &v) in dx.iter_mut().zip(x) {
            let xhat = (v - mean) * rstd;
            *d = rstd * (*d - m1 - xhat * m2);
        }
        (dgamma, dbeta)
    }
}
