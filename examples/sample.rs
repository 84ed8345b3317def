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
//! Writes `OUT/image-<i>.png` per prompt and `OUT/grid.png` (`rocm::trainer::images`), with
//! per-step progress on stderr. The `rocm sample` command does the same, with LoRA adapters.
//!
//! Options that make a run comparable with diffusers exactly:
//! - `--noise FILE`: safetensors with `latents` `[B,4,h,w]` (x_0) and `noise` `[K−1,B,4,h,w]`
//!   (`noise[k]` = z_k, the scheduler's re-noising draw at step k), f32, used instead of the RNG;
//! - `--out-tensor FILE`: writes safetensors with `image` `[B,3,H,W]` f32 in `[0, 1]`, before the
//!   8-bit quantisation `(x·255).round()` of the PNGs.
//!
//! `--device auto|flex|wgpu|cuda[:N]` (default `auto`) picks a backend compiled in by Cargo
//! feature. Arguments are parsed with clap (`--help` lists them); bad input prints one line on
//! stderr and exits with code 2.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use clap::{Arg, ArgAction, ArgMatches, Command};
use rocm::models::pipeline::{LcmPipeline, NoiseSource};
use rocm::sampler::SamplerNoise;
use rocm::trainer::images::write_images;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

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
    let pipeline = LcmPipeline::from_pretrained(&args.model, &device).map_err(|e| e.to_string())?;
    let prompts: Vec<&str> = args.prompts.iter().map(String::as_str).collect();
    let noise = match &args.noise {
        Some(path) => NoiseSource::Injected(read_noise(path, prompts.len(), args.steps, &device)?),
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
        let shape = images.dims();
        let pixels: Vec<f32> = images
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("reading the images back: {e:?}"))?;
        std::fs::create_dir_all(&args.out)
            .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
        write_tensor(path, "image", &pixels, &shape)?;
        println!("{}", path.display());
    }
    for path in write_images(&args.out, images).map_err(|e| e.to_string())? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Reads `latents` `[B,C,h,w]` and `noise` `[K−1,B,C,h,w]` (f32) from a safetensors file.
fn read_noise(
    path: &Path,
    batch: usize,
    steps: usize,
    device: &Device,
) -> Result<SamplerNoise<4>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{} is not a safetensors file: {e}", path.display()))?;
    let get = |name: &str, rank: usize| -> Result<(Vec<usize>, Vec<f32>), String> {
        let view = file
            .tensor(name)
            .map_err(|_| format!("{}: no tensor `{name}`", path.display()))?;
        if view.dtype() != Dtype::F32 || view.shape().len() != rank {
            return Err(format!(
                "{}: `{name}` is {:?} {:?}, expected a rank-{rank} F32 tensor",
                path.display(),
                view.dtype(),
                view.shape()
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((view.shape().to_vec(), values))
    };
    let (latent_shape, latents) = get("latents", 4)?;
    let (noise_shape, noise) = get("noise", 5)?;
    let expected_noise: Vec<usize> = std::iter::once(steps - 1)
        .chain(latent_shape.clone())
        .collect();
    if latent_shape[0] != batch || noise_shape != expected_noise {
        return Err(format!(
            "{}: latents {latent_shape:?} and noise {noise_shape:?} do not fit {batch} prompt(s) and \
             {steps} steps: expected latents [{batch}, C, h, w] and noise [{}, {batch}, C, h, w]",
            path.display(),
            steps - 1
        ));
    }
    let shape: [usize; 4] = [
        latent_shape[0],
        latent_shape[1],
        latent_shape[2],
        latent_shape[3],
    ];
    let numel: usize = shape.iter().product();
    let tensor = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), device);
    let steps = noise.chunks_exact(numel.max(1)).map(tensor).collect();
    Ok(SamplerNoise::new(tensor(&latents), steps))
}

/// Writes one f32 tensor to a safetensors file.
fn write_tensor(path: &Path, name: &str, values: &[f32], shape: &[usize]) -> Result<(), String> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, shape.to_vec(), &bytes).map_err(|e| e.to_string())?;
    let tensors: HashMap<String, TensorView> = HashMap::from([(name.to_string(), view)]);
    safetensors::serialize_to_file(tensors, None, path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
