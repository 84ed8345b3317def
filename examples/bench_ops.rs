//! The building blocks of the `bench_rocm` workload, one at a time, on the CPU: what a ROCM
//! iteration is made of, timed per operation so that it can be compared with PyTorch
//! (`benches/python/bench_ops.py` prints the same table; `docs/performance.md` has both).
//!
//! ```text
//! cargo run --release --example bench_ops [-- --iters N]
//! ```
//!
//! Every row is the median over `N` runs (default 20) in milliseconds of the forward pass without
//! a graph, and of forward + backward with the gradient taken with respect to the input only
//! (weights frozen, as in LoRA training): 3×3 convolutions at the UNet's and the VAE's sizes,
//! GroupNorm(32) followed by SiLU, SiLU alone, nearest 2× upsampling and 8-head self-attention
//! over 256 tokens (the `small` UNet's 16×16 level). The convolution, GroupNorm + SiLU, SiLU and
//! attention run twice, as Burn's own ops and as rocm-kernels' fused kernels (`rocm::kernels`; the
//! weights here are frozen, so the fused convolution takes every size), same run. Arguments are parsed with clap (`--help`
//! lists them); bad input prints one line on stderr and exits with code 2.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::process::ExitCode;
use std::time::Instant;

use burn::nn::GroupNormConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::{attention, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use clap::{Arg, Command};
use rocm::kernels::{
    KernelMode, attention as kernel_attention, conv2d, group_norm_silu, set_mode, silu,
};

mod common;

/// `[channels, height = width]` of the convolution rows: the `small` UNet's three levels and
/// the `small` VAE's two largest.
const CONV_SHAPES: [(usize, usize); 5] = [(64, 16), (128, 8), (256, 4), (64, 64), (32, 128)];

/// Median wall-clock milliseconds of `f` over `n` runs, after two warm-up runs.
fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    f();
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

fn normal<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Forward on the plain device (no autodiff, `plain = true`) and forward + backward on the
/// autodiff device (gradient of `sum(op(x))` with respect to `x`). `op(x, plain)` must take its
/// weights from the same device as `x`.
fn time_op(
    n: usize,
    x: &Tensor<4>,
    op: impl Fn(Tensor<4>, bool) -> Tensor<4>,
) -> Result<(f64, f64), String> {
    let forward = median_ms(n, || {
        op(x.clone().inner(), true).sum().into_scalar::<f32>();
    });
    let mut missing = false;
    let backward = median_ms(n, || {
        let leaf = x.clone().require_grad();
        let grads = op(leaf.clone(), false).sum().backward();
        match leaf.grad(&grads) {
            Some(g) => {
                g.sum().into_scalar::<f32>();
            }
            None => missing = true,
        }
    });
    if missing {
        return Err("no gradient reached the input".into());
    }
    Ok((forward, backward))
}

fn run(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (device, backend) = rocm::select_device("auto")?;
    let device = device.autodiff();
    device.seed(0);
    println!("bench_ops on {backend}: median ms over {n} runs (forward | forward + backward)");
    let conv = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    for (c, hw) in CONV_SHAPES {
        let x = normal([1, c, hw, hw], &device);
        let (w, b) = (normal([c, c, 3, 3], &device), normal([c], &device));
        let on = |t: &Tensor<4>, plain: bool| if plain { t.clone().inner() } else { t.clone() };
        let norm = GroupNormConfig::new(32, c).init(&device).no_grad();
        let plain_norm = norm.valid();
        for (mode, name) in [
            (KernelMode::Composed, "composed"),
            (KernelMode::Fused, "fused"),
        ] {
            set_mode(mode);
            let (cf, cb) = time_op(n, &x, |x, plain| {
                let b = if plain { b.clone().inner() } else { b.clone() };
                conv2d(x, on(&w, plain), Some(b), conv.clone())
            })?;
            let (gf, gb) = time_op(n, &x, |x, plain| {
                group_norm_silu(if plain { &plain_norm } else { &norm }, x)
            })?;
            let (sf, sb) = time_op(n, &x, |x, _| silu(x))?;
            println!(
                "c={c:<3} {hw:>3}x{hw:<3} {name:<8}  conv3x3 {cf:>7.3} | {cb:>7.3}   \
                 groupnorm+silu {gf:>7.3} | {gb:>7.3}   silu {sf:>7.3} | {sb:>7.3}"
            );
        }
    }
    let x = normal([1, 64, 64, 64], &device);
    let options = InterpolateOptions::new(InterpolateMode::Nearest)
        .with_align_corners(false)
        .with_output_size([128, 128]);
    let (f, b) = time_op(n, &x, |x, _| interpolate(x, options.clone()))?;
    println!("nearest 2x upsampling, c=64 64x64 -> 128x128  {f:>7.3} | {b:>7.3}");
    // [batch, heads, tokens, head_dim] as one 4-D input: q = k = v = x.
    // Burn's op ("composed": Autodiff runs it as a composed graph) against rocm-kernels' fused one.
    let x = normal([1, 8, 256, 8], &device);
    let (f, b) = time_op(n, &x, |x, _| {
        attention(x.clone(), x.clone(), x, None, None, Default::default())
    })?;
    println!("self-attention, 8 heads x 256 tokens x 8 composed {f:>7.3} | {b:>7.3}");
    set_mode(KernelMode::Fused);
    let (f, b) = time_op(n, &x, |x, _| kernel_attention(x.clone(), x.clone(), x))?;
    println!("self-attention, 8 heads x 256 tokens x 8 fused    {f:>7.3} | {b:>7.3}");
    Ok(())
}

fn cli() -> Command {
    Command::new("bench_ops")
        .about("The bench_rocm workload's operations, timed one at a time")
        .arg(
            Arg::new("iters")
                .long("iters")
                .value_name("N")
                .default_value("20")
                .value_parser(common::at_least_one)
                .help("Runs per row (the median is printed; at least 1)"),
        )
}

fn main() -> ExitCode {
    common::main(cli(), |m| {
        run(m.get_one::<usize>("iters").copied().unwrap_or(20))
    })
}
