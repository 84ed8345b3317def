//! Times the slice kernels of `rocm_kernels::cpu` alone (no Burn tensors, no autodiff): median
//! milliseconds of the attention forward and backward at the `small` UNet's levels, and of
//! GroupNorm + SiLU forward and backward at the `small` UNet's and VAE's sizes, and of the 3×3
//! convolution's forward at the UNet's and VAE's sizes.
//!
//! ```text
//! cargo run --release -p rocm-kernels --example slice_kernels
//! ```

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::time::Instant;

use rocm_kernels::cpu::attention::{self, AttentionShape};
use rocm_kernels::cpu::conv3x3::{self, Conv3x3Shape};
use rocm_kernels::cpu::group_norm::{self, GroupNormShape};

fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

fn main() {
    // (batch × heads, queries, keys, head size): self-attention at the 16 × 16 and 8 × 8 levels,
    // cross-attention to 77 text tokens, the VAE's one-head attention.
    for (problems, queries, keys, head) in [
        (8, 256, 256, 8),
        (8, 256, 77, 8),
        (8, 64, 64, 16),
        (1, 256, 256, 64),
    ] {
        let shape = AttentionShape {
            problems,
            queries,
            keys,
            head,
            value: head,
            scale: 1.0 / (head as f32).sqrt(),
        };
        let values = |n: usize| -> Vec<f32> { (0..n).map(|i| (i as f32 * 0.37).sin()).collect() };
        let (q, kv) = (
            values(problems * queries * head),
            values(problems * keys * head),
        );
        let mut o = vec![0.0f32; q.len()];
        let f = median_ms(50, || attention::forward(shape, &q, &kv, &kv, &mut o));
        let b = median_ms(50, || {
            let _ = attention::backward(shape, &q, &kv, &kv, &o);
        });
        println!(
            "attention {problems} x {queries} queries x {keys} keys x {head}: forward {f:.3} ms, \
             backward {b:.3} ms"
        );
    }
    for (channels, side, groups) in [(64, 16, 32), (32, 128, 32), (64, 64, 32)] {
        let shape = GroupNormShape {
            batch: 1,
            channels,
            spatial: side * side,
            groups,
            epsilon: 1e-6,
            silu: true,
        };
        let len = channels * side * side;
        let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        let (gamma, beta) = (vec![1.1f32; channels], vec![0.1f32; channels]);
        let mut y = vec![0.0f32; len];
        let f = median_ms(50, || group_norm::forward(shape, &x, &gamma, &beta, &mut y));
        let b = median_ms(50, || {
            let _ = group_norm::backward(shape, &x, &gamma, &beta, &x, &mut y, false);
        });
        println!(
            "group_norm + silu {channels} x {side}x{side} ({groups} groups): forward {f:.3} ms, backward {b:.3} ms"
        );
    }
    // (channels, side): the `small` UNet's three levels, the VAE's 64 and 128 px maps.
    for (channels, side) in [(64, 16), (128, 8), (256, 4), (64, 64), (32, 128)] {
        let shape = Conv3x3Shape {
            images: 1,
            channels,
            out: channels,
            h: side,
            w: side,
        };
        let x: Vec<f32> = (0..channels * side * side)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let weight: Vec<f32> = (0..channels * channels * 9)
            .map(|i| (i as f32 * 0.91).sin())
            .collect();
        let mut y = vec![0.0f32; x.len()];
        let f = median_ms(50, || conv3x3::forward(shape, &x, &weight, &mut y));
        let gflops = 2.0 * (channels * channels * 9 * side * side) as f64 / (f * 1e6);
        println!("conv3x3 {channels} x {side}x{side}: forward {f:.3} ms ({gflops:.0} GFLOP/s)");
    }
}
