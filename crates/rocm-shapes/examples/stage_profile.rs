//! Scratch: seconds per training step of each stage (steady state).
#![allow(clippy::print_stdout, missing_docs)]
use burn::prelude::*;
use rocm_models::clip::{CLIPModel, CLIPTextModel};
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_models::{AutoencoderKL, TextEncoder, UNet2DConditionModel, UNet2DConditionModelConfig};
use rocm_shapes::tokenizer::WorldBpe;
use rocm_shapes::train::{self, StageOptions, StepReport, latents::LatentCache};
use rocm_shapes::world::Split;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn timed(name: &str, steps: usize, f: &mut dyn FnMut(&mut dyn FnMut(StepReport))) {
    let mut t: Vec<Instant> = Vec::new();
    f(&mut |_r| t.push(Instant::now()));
    let skip = 5;
    let per = (t[steps - 1] - t[skip - 1]).as_secs_f64() / (steps - skip) as f64;
    println!("{name}: {:.1} ms/step", per * 1e3);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).cloned().unwrap_or("all".into());
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(25);
    let bm: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let sc = |b: usize| ((b as f64) * bm) as usize;
    let world = std::path::PathBuf::from("/tmp/prof/world");
    let work = std::path::PathBuf::from(format!("/tmp/prof/pwork{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let device = Device::flex();
    let opts = |batch: usize, lr: f64| StageOptions {
        steps,
        batch,
        lr,
        seed: 0,
        checkpoint_every: 0,
    };
    if which == "batches" {
        batch_times();
        return;
    }
    let run = |s: &str| which == "all" || which == s;
    if run("vae") {
        let c = train::vae::world_vae_config();
        timed("vae b16", steps, &mut |cb| {
            train::vae::train(&c, &opts(sc(16), 2e-3), &work.join("v"), &device, cb).unwrap();
        });
    }
    if run("clip") {
        let bpe = WorldBpe::learn();
        let c = train::clip::world_clip_config(&bpe, 64, 2);
        let tok = CLIPTokenizer::from_dir(world.join("clip")).unwrap();
        timed("clip b64", steps, &mut |cb| {
            train::clip::train(&c, &tok, &opts(sc(64), 1e-3), &work.join("c"), &device, cb)
                .unwrap();
        });
    }
    if run("pref") {
        let tok = CLIPTokenizer::from_dir(world.join("clip")).unwrap();
        let init =
            CLIPModel::from_pretrained(world.join("clip"), &device.clone().autodiff()).unwrap();
        timed("pref b32", steps, &mut |cb| {
            train::pref::train(
                init.clone(),
                &tok,
                None,
                &opts(sc(32), 2e-4),
                &work.join("p"),
                &device,
                cb,
            )
            .unwrap();
        });
    }
    if run("aesthetic") {
        let init =
            CLIPModel::from_pretrained(world.join("pref"), &device.clone().autodiff()).unwrap();
        timed("aesthetic b64", steps, &mut |cb| {
            train::aesthetic::train(
                init.clone(),
                &opts(sc(64), 2e-3),
                &work.join("a"),
                &device,
                cb,
            )
            .unwrap();
        });
    }
    if run("teacher") || run("distill") {
        let text_dir = world.join("shapes-teacher/text_encoder");
        let text = TextEncoder::new(
            CLIPTokenizer::from_dir(world.join("clip")).unwrap(),
            CLIPTextModel::from_pretrained(&text_dir, &device).unwrap(),
            &device,
        );
        let vae = AutoencoderKL::from_pretrained(world.join("vae"), &device).unwrap();
        let cache = LatentCache::build(&vae, &text, Split::Train, 1 << 34, 512, &device).unwrap();
        if run("teacher") {
            let c = train::teacher::world_unet_config(64);
            timed("teacher b64", steps, &mut |cb| {
                train::teacher::train(
                    &c,
                    &cache,
                    &opts(sc(64), 1e-3),
                    &work.join("t"),
                    &device,
                    cb,
                )
                .unwrap();
            });
        }
        if run("distill") {
            let tdir = world.join("shapes-teacher/unet");
            let teacher = UNet2DConditionModel::from_pretrained(&tdir, &device).unwrap();
            let tc = UNet2DConditionModelConfig::from_file(tdir.join("config.json")).unwrap();
            let s = train::distill::DistillOptions::default();
            let c = train::distill::student_config(&tc, &s);
            timed("distill b32", steps, &mut |cb| {
                train::distill::train(
                    &teacher,
                    &c,
                    &cache,
                    &opts(sc(32), 1e-4),
                    &s,
                    &work.join("d"),
                    &device,
                    cb,
                )
                .unwrap();
            });
        }
    }
}

#[allow(dead_code)]
pub fn batch_times() {
    let o = StageOptions {
        steps: 10,
        batch: 64,
        lr: 1e-3,
        seed: 0,
        checkpoint_every: 0,
    };
    let t = Instant::now();
    for k in 0..20 {
        let _ = train::aesthetic::batch(&mut o.rng(k), Split::Train, 64);
    }
    println!(
        "aesthetic batch 64: {:.1} ms",
        t.elapsed().as_secs_f64() * 50.0
    );
    let t = Instant::now();
    for k in 0..20 {
        let _ = train::clip::batch(&o, k);
    }
    println!("clip batch 64: {:.1} ms", t.elapsed().as_secs_f64() * 50.0);
    let t = Instant::now();
    for k in 0..20 {
        let _ = train::pref::mixed_pairs(&mut o.rng(k), Split::Train, None, 32);
    }
    println!("pref batch 32: {:.1} ms", t.elapsed().as_secs_f64() * 50.0);
    let o16 = StageOptions {
        batch: 16,
        ..o.clone()
    };
    let t = Instant::now();
    for k in 0..20 {
        let _ = train::vae::batch(&o16, k);
    }
    println!("vae batch 16: {:.1} ms", t.elapsed().as_secs_f64() * 50.0);
}
