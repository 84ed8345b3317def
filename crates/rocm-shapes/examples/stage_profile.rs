//! Milliseconds per training step of each stage of the shapes world, at its default batch, on its
//! real data (the timing table of docs/performance.md, "Building the shapes world").
//!
//! ```text
//! cargo run --release -p rocm-shapes --example stage_profile -- [--stage vae|clip|pref|aesthetic|teacher|distill|all] \
//!     [--steps 25] [--batch-scale 1] [--world crates/rocm-shapes/assets/world]
//! ```
//!
//! Each stage trains `--steps` steps from scratch (or from the shipped folder it starts from:
//! `pref` from `clip/`, `aesthetic` from `pref/`, `distill` from `shapes-teacher/`; the
//! diffusion stages on a cache of 512 encoded scenes) in a scratch folder, and the mean time of
//! the steps after the fifth is printed. `--batch-scale` multiplies every batch. Like
//! `build_world`, it runs on mimalloc; `RAYON_NUM_THREADS` sets the threads of the main pool.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use clap::{Arg, Command};
use rocm_models::clip::{CLIPModel, CLIPTextModel};
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_models::{AutoencoderKL, TextEncoder, UNet2DConditionModel, UNet2DConditionModelConfig};
use rocm_shapes::tokenizer::WorldBpe;
use rocm_shapes::train::{self, StageOptions, StepReport, latents::LatentCache};
use rocm_shapes::world::Split;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Steps left out of the mean (the first ones allocate and warm caches).
const WARM_UP: usize = 5;

fn cli() -> Command {
    Command::new("stage_profile")
        .about("Milliseconds per training step of each stage of the shapes world")
        .arg(Arg::new("stage").long("stage").default_value("all"))
        .arg(
            Arg::new("steps")
                .long("steps")
                .default_value("25")
                .value_parser(clap::value_parser!(usize)),
        )
        .arg(
            Arg::new("batch-scale")
                .long("batch-scale")
                .default_value("1")
                .value_parser(clap::value_parser!(f64)),
        )
        .arg(
            Arg::new("world")
                .long("world")
                .value_parser(clap::value_parser!(PathBuf))
                .help("The shipped folders (default: the crate's assets/world)"),
        )
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs one stage's `train` with a callback, returning the mean seconds of the steps after
/// [`WARM_UP`].
fn timed(
    name: &str,
    steps: usize,
    train: impl FnOnce(&mut dyn FnMut(StepReport)) -> Result<(), String>,
) -> Result<(), String> {
    let mut times = Vec::new();
    train(&mut |_| times.push(Instant::now()))?;
    let (Some(first), Some(last)) = (times.get(WARM_UP - 1), times.last()) else {
        return Err(format!("--steps must exceed {WARM_UP}"));
    };
    let per = (*last - *first).as_secs_f64() / (steps - WARM_UP) as f64;
    println!("{name}: {:.1} ms/step", per * 1e3);
    Ok(())
}

fn run() -> Result<(), String> {
    let m = cli().try_get_matches().map_err(|e| e.to_string())?;
    let stage = m.get_one::<String>("stage").cloned().unwrap_or_default();
    let steps = m.get_one::<usize>("steps").copied().unwrap_or(25);
    let scale = m.get_one::<f64>("batch-scale").copied().unwrap_or(1.0);
    let world = m
        .get_one::<PathBuf>("world")
        .cloned()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/world"));
    if stage != "all" {
        rocm_shapes::build::Stage::parse(&stage).map_err(|e| e.to_string())?;
    }
    if steps <= WARM_UP || scale <= 0.0 {
        return Err(format!(
            "--steps must exceed {WARM_UP} and --batch-scale be positive"
        ));
    }
    let work = std::env::temp_dir().join(format!("rocm-stage-profile-{}", std::process::id()));
    let device = Device::flex();
    let e = |e: rocm_shapes::Error| e.to_string();
    let opts = |batch: usize, lr: f64| StageOptions {
        steps,
        batch: ((batch as f64 * scale).round() as usize).max(1),
        lr,
        seed: 0,
        checkpoint_every: 0,
    };
    let run = |s: &str| stage == "all" || stage == s;
    let sub = |s: &str| work.join(s);
    let tokenizer = || CLIPTokenizer::from_dir(world.join("clip")).map_err(|e| e.to_string());
    let clip_at = |dir: &Path| {
        CLIPModel::from_pretrained(dir, &device.clone().autodiff()).map_err(|e| e.to_string())
    };
    if run("vae") {
        let c = train::vae::world_vae_config();
        let o = opts(16, 2e-3);
        timed(&format!("vae (batch {})", o.batch), steps, |cb| {
            train::vae::train(&c, &o, &sub("vae"), &device, cb)
                .map(drop)
                .map_err(e)
        })?;
    }
    if run("clip") {
        let c = train::clip::world_clip_config(&WorldBpe::learn(), 64, 2);
        let (tok, o) = (tokenizer()?, opts(64, 1e-3));
        timed(&format!("clip (batch {})", o.batch), steps, |cb| {
            train::clip::train(&c, &tok, &o, &sub("clip"), &device, cb)
                .map(drop)
                .map_err(e)
        })?;
    }
    if run("pref") {
        let (tok, init, o) = (tokenizer()?, clip_at(&world.join("clip"))?, opts(32, 2e-4));
        timed(&format!("pref (batch {})", o.batch), steps, |cb| {
            train::pref::train(init, &tok, None, &o, &sub("pref"), &device, cb)
                .map(drop)
                .map_err(e)
        })?;
    }
    if run("aesthetic") {
        let (init, o) = (clip_at(&world.join("pref"))?, opts(64, 2e-3));
        timed(&format!("aesthetic (batch {})", o.batch), steps, |cb| {
            train::aesthetic::train(init, &o, &sub("aesthetic"), &device, cb)
                .map(drop)
                .map_err(e)
        })?;
    }
    if run("teacher") || run("distill") {
        let teacher_dir = world.join("shapes-teacher");
        let text = TextEncoder::new(
            tokenizer()?,
            CLIPTextModel::from_pretrained(teacher_dir.join("text_encoder"), &device)
                .map_err(|e| e.to_string())?,
            &device,
        );
        let vae = AutoencoderKL::from_pretrained(world.join("vae"), &device)
            .map_err(|e| e.to_string())?;
        let cache =
            LatentCache::build(&vae, &text, Split::Train, 1 << 34, 512, &device).map_err(e)?;
        if run("teacher") {
            let width = rocm_models::clip::CLIPConfig::from_file(world.join("clip/config.json"))
                .map_err(|e| e.to_string())?
                .text_config
                .hidden_size;
            let c = train::teacher::world_unet_config(width);
            let o = opts(64, 1e-3);
            timed(&format!("teacher (batch {})", o.batch), steps, |cb| {
                train::teacher::train(&c, &cache, &o, &sub("teacher"), &device, cb)
                    .map(drop)
                    .map_err(e)
            })?;
        }
        if run("distill") {
            let unet_dir = teacher_dir.join("unet");
            let teacher = UNet2DConditionModel::from_pretrained(&unet_dir, &device)
                .map_err(|e| e.to_string())?;
            let tc = UNet2DConditionModelConfig::from_file(unet_dir.join("config.json"))
                .map_err(|e| e.to_string())?;
            let s = train::distill::DistillOptions::default();
            let (c, o) = (train::distill::student_config(&tc, &s), opts(32, 1e-4));
            timed(&format!("distill (batch {})", o.batch), steps, |cb| {
                train::distill::train(&teacher, &c, &cache, &o, &s, &sub("distill"), &device, cb)
                    .map(drop)
                    .map_err(e)
            })?;
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
