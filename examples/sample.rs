//! Text-to-image with a latent consistency model (diffusers' `LatentConsistencyModelPipeline`).
//!
//! ```text
//! cargo run --release --example sample -- --model SimianLuo/LCM_Dreamshaper_v7 \
//!     --prompt "a photo of a cat" --prompt "a watercolor of a lighthouse" \
//!     --steps 4 --guidance 8.0 --seed 0 --out out/
//! ```
//!
//! `--model` is a diffusers pipeline folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
//! `scheduler/`) or a hub id resolved in the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`), as
//! `LcmPipeline::from_pretrained` reads a name or path: an existing folder first, then an
//! `org/name` id.
//! Writes `OUT/image-<i>.png` per prompt and `OUT/grid.png` (captioned with the prompts, noise,
//! steps and guidance; `rocm::trainer::images`), with per-step progress on stderr.
//! `--lora FILE_OR_DIR` loads adapters onto the UNet (diffusers, PEFT or kohya layout, as
//! `rocm sample --lora`).
//!
//! Options that make a run comparable with diffusers exactly:
//! - `--noise FILE`: safetensors with `latents` `[B,4,h,w]` (x_0) and `noise` `[K−1,B,4,h,w]`
//!   (`noise[k]` = z_k, the scheduler's re-noising draw at step k), f32, used instead of the RNG
//!   (`rocm::tensor_files`; `rocm sample --noise` takes the same file);
//! - `--out-tensor FILE`: writes safetensors with `image` `[B,3,H,W]` f32 in `[0, 1]`, before the
//!   8-bit quantisation `(x·255).round()` of the PNGs.
//!
//! `--device auto|flex|wgpu|cuda[:N]` (default `auto`) picks a backend compiled in by Cargo
//! feature. Arguments are parsed with clap (`--help` lists them); bad input prints one line on
//! stderr and exits with code 2.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Arg, ArgAction, ArgMatches, Command};
use rocm::lora::load_adapters;
use rocm::models::pipeline::{LcmPipeline, NoiseSource};
use rocm::tensor_files::{read_noise, write_image_tensor};
use rocm::trainer::images::{numbered_caption, write_images};

mod common;

/// Parsed command line.
#[derive(Debug)]
struct Args {
    model: String,
    prompts: Vec<String>,
    steps: usize,
    guidance: f32,
    seed: u64,
    out: PathBuf,
    noise: Option<PathBuf>,
    out_tensor: Option<PathBuf>,
    lora: Option<PathBuf>,
    device: String,
}

fn cli() -> Command {
    Command::new("sample")
        .about("Text-to-image with a latent consistency model pipeline")
        .arg(
            Arg::new("model")
                .long("model")
                .required(true)
                .value_name("DIR|ORG/NAME")
                .help("A diffusers LCM pipeline folder, or a hub id in the local Hugging Face cache"),
        )
        .arg(
            Arg::new("prompt")
                .long("prompt")
                .required(true)
                .action(ArgAction::Append)
                .allow_hyphen_values(true)
                .value_name("TEXT")
                .help("A prompt (repeatable: one image each)"),
        )
        .arg(
            Arg::new("steps")
                .long("steps")
                .value_name("K")
                .default_value("4")
                .value_parser(common::at_least_one)
                .help("Sampler steps K (at least 1)"),
        )
        .arg(
            Arg::new("guidance")
                .long("guidance")
                .value_name("G")
                .default_value("8.0")
                .value_parser(clap::value_parser!(f32))
                .help("Guidance scale g (w = g - 1, embedded)"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_name("S")
                .default_value("0")
                .value_parser(clap::value_parser!(u64))
                .help("Noise seed (unused with --noise)"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .required(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Output folder: image-<i>.png and grid.png"),
        )
        .arg(
            Arg::new("noise")
                .long("noise")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("safetensors with `latents` [B,4,h,w] and `noise` [K-1,B,4,h,w] (f32), instead of the RNG"),
        )
        .arg(
            Arg::new("out-tensor")
                .long("out-tensor")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also write the images as safetensors `image` [B,3,H,W] f32 in [0, 1]"),
        )
        .arg(
            Arg::new("lora")
                .long("lora")
                .value_name("FILE_OR_DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("LoRA adapters on the UNet: a .safetensors (diffusers, PEFT or kohya layout) or a folder holding one"),
        )
        .arg(
            Arg::new("device")
                .long("device")
                .value_name("NAME")
                .default_value("auto")
                .help("auto, flex (CPU), wgpu, cuda[:N]"),
        )
}

impl Args {
    fn from_matches(m: &ArgMatches) -> Self {
        let string = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
        let path = |id: &str| m.get_one::<PathBuf>(id).cloned();
        Self {
            model: string("model"),
            prompts: m
                .get_many::<String>("prompt")
                .map(|p| p.cloned().collect())
                .unwrap_or_default(),
            steps: m.get_one::<usize>("steps").copied().unwrap_or(4),
            guidance: m.get_one::<f32>("guidance").copied().unwrap_or(8.0),
            seed: m.get_one::<u64>("seed").copied().unwrap_or(0),
            out: path("out").unwrap_or_default(),
            noise: path("noise"),
            out_tensor: path("out-tensor"),
            lora: path("lora"),
            device: string("device"),
        }
    }
}

fn main() -> ExitCode {
    common::main(cli(), |m| run(&Args::from_matches(m)))
}

fn run(args: &Args) -> Result<(), String> {
    let (device, backend) = rocm::select_device(&args.device).map_err(|e| e.to_string())?;
    eprintln!("loading {} on {backend}", args.model);
    let mut pipeline =
        LcmPipeline::from_pretrained(&args.model, &device).map_err(|e| e.to_string())?;
    if let Some(lora) = &args.lora {
        let report = load_adapters(&mut pipeline.unet, lora)
            .map_err(|e| format!("--lora {}: {e}", lora.display()))?;
        eprintln!(
            "loaded {} LoRA adapters from {}",
            report.loaded.len(),
            report.file.display()
        );
    }
    let prompts: Vec<&str> = args.prompts.iter().map(String::as_str).collect();
    let noise = match &args.noise {
        Some(path) => NoiseSource::Injected(
            read_noise(path, prompts.len(), args.steps, &device).map_err(|e| e.to_string())?,
        ),
        None => NoiseSource::Seed(args.seed),
    };
    let start = Instant::now();
    let progress = |k: usize, total: usize| {
        let secs = start.elapsed().as_secs_f32();
        eprintln!("step {k}/{total} ({secs:.1} s)");
    };
    let images = pipeline
        .generate_with_progress(&prompts, args.steps, args.guidance, noise, progress)
        .map_err(|e| e.to_string())?;
    if let Some(path) = &args.out_tensor {
        write_image_tensor(path, images.clone()).map_err(|e| e.to_string())?;
        println!("{}", path.display());
    }
    let noise = match &args.noise {
        Some(path) => format!("noise {}", path.display()),
        None => format!("seed {}", args.seed),
    };
    let header = format!(
        "{}: {noise}, {} steps, guidance {}",
        args.model, args.steps, args.guidance
    );
    let caption = numbered_caption(header, "image", &args.prompts);
    for path in write_images(&args.out, images, &caption).map_err(|e| e.to_string())? {
        println!("{}", path.display());
    }
    Ok(())
}
