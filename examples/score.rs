//! Scores PNG images with a reward model.
//!
//! ```text
//! cargo run --release --example score -- --reward pickscore --model PickScore_v1 --image a.png --prompt "a cat"
//! ```
//!
//! Options: `--reward NAME` (`aesthetic`, `clipscore`, `clipscore-paper`, `pickscore`, `hpsv2`, `color`,
//! `compressibility`), `--model DIR` (a transformers `CLIPModel` folder or hub id; for `hpsv2` a folder with
//! an open_clip checkpoint; for `aesthetic` the CLIP ViT-L/14 folder; default: the reward's usual hub
//! id, `rocm::reward::RewardKind::default_model`, looked up in the local Hugging Face cache), `--head FILE` (aesthetic head, default:
//! the LAION head embedded in rocm-rewards, `AestheticHead::laion`), `--image FILE` (repeatable),
//! `--prompt TEXT`, `--device NAME` (`auto`, `flex`, `wgpu`, `cuda`). Prints `path<TAB>score` per image.
//! Grayscale, palette, 16-bit and RGBA PNGs are converted to 8-bit RGB (alpha dropped, as PIL's
//! `convert("RGB")`); any size works (the reward resizes). Arguments are parsed with clap (`--help` lists
//! them); a missing or corrupt file, or a bad option, prints one line on stderr and exits with code 2.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::prelude::*;
use clap::{Arg, ArgAction, ArgMatches, Command};
use rocm::rewards::RewardModel;

mod common;

/// Parsed command line.
struct Args {
    reward: String,
    model: Option<String>,
    head: Option<PathBuf>,
    images: Vec<PathBuf>,
    prompt: String,
    device: String,
}

fn cli() -> Command {
    Command::new("score")
        .about("Scores PNG images with a reward model")
        .arg(
            Arg::new("reward")
                .long("reward")
                .required(true)
                .value_name("NAME")
                .help("aesthetic, clipscore, clipscore-paper, pickscore, hpsv2, color, compressibility"),
        )
        .arg(
            Arg::new("model")
                .long("model")
                .value_name("DIR")
                .help("The reward's model: a folder or hub id (default: the reward's usual hub id)"),
        )
        .arg(
            Arg::new("head")
                .long("head")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("The aesthetic head (.pth or .safetensors; default: the embedded LAION head)"),
        )
        .arg(
            Arg::new("image")
                .long("image")
                .required(true)
                .action(ArgAction::Append)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("A PNG to score (repeatable)"),
        )
        .arg(
            Arg::new("prompt")
                .long("prompt")
                .default_value("")
                .allow_hyphen_values(true)
                .value_name("TEXT")
                .help("The prompt the images are scored against"),
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
        let string = |id: &str| m.get_one::<String>(id).cloned();
        Self {
            reward: string("reward").unwrap_or_default(),
            model: string("model"),
            head: m.get_one::<PathBuf>("head").cloned(),
            images: m
                .get_many::<PathBuf>("image")
                .map(|p| p.cloned().collect())
                .unwrap_or_default(),
            prompt: string("prompt").unwrap_or_default(),
            device: string("device").unwrap_or_default(),
        }
    }
}

fn main() -> ExitCode {
    common::main(cli(), |m| run(&Args::from_matches(m)))
}

/// Reads a PNG as `[1, 3, H, W]` RGB in `[0, 1]`.
fn read_png(path: &Path, device: &Device) -> Result<Tensor<4>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let corrupt = |e: png::DecodingError| format!("{} is not a valid PNG: {e}", path.display());
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(corrupt)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(format!("{}: palette not expanded", path.display())),
    };
    let mut planar = vec![0.0f32; 3 * h * w];
    for p in 0..h * w {
        let px = &buf[p * channels..(p + 1) * channels];
        for c in 0..3 {
            let v = if channels < 3 { px[0] } else { px[c] };
            planar[c * h * w + p] = f32::from(v) / 255.0;
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(planar, [1, 3, h, w]),
        device,
    ))
}

fn run(args: &Args) -> Result<(), String> {
    let (device, _) = rocm::select_device(&args.device).map_err(|e| e.to_string())?;
    // Read every image first: a bad file fails before any model is loaded.
    let images = args
        .images
        .iter()
        .map(|p| read_png(p, &device))
        .collect::<Result<Vec<_>, _>>()?;
    let kind: rocm::reward::RewardKind =
        args.reward.parse().map_err(|e| format!("--reward: {e}"))?;
    let reward = kind
        .load(args.model.as_deref(), args.head.as_deref(), &device)
        .map_err(|e| e.to_string())?;
    for (path, image) in args.images.iter().zip(images) {
        let score = reward
            .reward(image, std::slice::from_ref(&args.prompt))
            .into_scalar::<f32>();
        println!("{}\t{score}", path.display());
    }
    Ok(())
}
