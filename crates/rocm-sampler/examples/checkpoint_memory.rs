//! Peak memory of trajectory gradients with and without per-step checkpointing.
//!
//! ```text
//! cargo run --release -p rocm-sampler --example checkpoint_memory [-- STEPS]
//! ```
//!
//! Each mode runs in its own child process (this program re-invoked with `child <mode>`), so the
//! peak resident set size (`VmHWM` of `/proc/self/status`, Linux only) of one does not hide the
//! other's. The model is a toy epsilon MLP (d = 512, h = 4096) on a batch of 512 latents, on the
//! flex CPU backend.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::process::Command;
use std::time::Instant;

use burn::prelude::*;
use rocm_sampler::toy::{ToyEpsMlpConfig, ToyObjective};
use rocm_sampler::{GradientMode, Sampler, SamplerNoise, SamplerOptions, gradients};

const BATCH: usize = 512;
const DIM: usize = 512;
const HIDDEN: usize = 4096;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn child(mode: &str, steps: usize) {
    let device = Device::flex().autodiff();
    let model = ToyEpsMlpConfig::new(DIM)
        .with_hidden(HIDDEN)
        .with_adapter(true)
        .init_seeded(0, &device); // host RNG: the same weights in both children
    let noise = SamplerNoise::from_seed([BATCH, DIM], steps, 0, &device);
    let options = SamplerOptions::new(steps).with_base(true);
    let mode = if mode == "plain" {
        GradientMode::Plain
    } else {
        GradientMode::Checkpointed
    };
    // One no-grad call first, so that the baseline includes the weights and the allocator warm-up.
    let _ = Sampler::default().sample_no_grad(
        &model,
        &(),
        noise.clone(),
        &SamplerOptions::new(1).with_timesteps(vec![999]),
    );
    let before = vm_hwm_kib();
    let start = Instant::now();
    let g = gradients(
        &Sampler::default(),
        &model,
        &(),
        noise,
        &options,
        &ToyObjective,
        mode,
    )
    .unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let loss = g.loss.into_scalar::<f32>();
    let w = model.linear_in.weight.id;
    let grad_norm = g
        .grads
        .get::<2>(w)
        .unwrap()
        .square()
        .sum()
        .sqrt()
        .into_scalar::<f32>();
    println!("{before} {} {elapsed:.3} {loss} {grad_norm}", vm_hwm_kib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return child(&args[2], args[3].parse().unwrap());
    }
    let steps: usize = args.get(1).map_or(8, |s| s.parse().unwrap());
    println!("toy eps-MLP d={DIM} h={HIDDEN}, batch {BATCH}, K={steps}, flex CPU, f32");
    println!(
        "{:<13} {:>13} {:>9} {:>14} {:>7} {:>12} {:>14}",
        "mode", "baseline MiB", "peak MiB", "grad-pass MiB", "time s", "loss", "|dL/dW_in|"
    );
    let mut extra = Vec::new();
    for mode in ["plain", "checkpointed"] {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["child", mode, &steps.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let f: Vec<&str> = text.split_whitespace().collect();
        let (base, peak): (f64, f64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        let (base, peak) = (base / 1024.0, peak / 1024.0);
        extra.push(peak - base);
        println!(
            "{mode:<13} {base:>13.1} {peak:>9.1} {:>14.1} {:>7} {:>12} {:>14}",
            peak - base,
            f[2],
            f[3],
            f[4]
        );
    }
    println!(
        "gradient-pass memory ratio plain / checkpointed: {:.2}",
        extra[0] / extra[1]
    );
}
