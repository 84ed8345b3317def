//! How much of colour and shape survives the world's VAE: the hidden preference's detector
//! ([`colour_and_shape_right`]) on renders of held-out scenes and on their VAE reconstructions
//! `decode(mean(encode(x)))`, by split, object count, size and shape. A latent diffusion model
//! of the world samples through this decoder, so the reconstructions' accuracy is roughly the
//! ceiling of the teacher's and the LCM's "colour and shape right" (generated latents need not
//! be encodings of renders, so a model can land slightly above it).
//!
//! ```text
//! cargo run --release -p rocm-shapes --example vae_ceiling -- [--vae crates/rocm-shapes/assets/world/vae] [--scenes 600]
//! ```
//!
//! Prints a Markdown table. Any error prints one line on stderr and exits with code 2.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use burn::prelude::*;
use clap::{Arg, Command};
use rocm_models::AutoencoderKL;
use rocm_shapes::evaluate::{colour_and_shape_right, reconstructions};
use rocm_shapes::{Image, Scene, Split, render};

fn cli() -> Command {
    Command::new("vae_ceiling")
        .about("Detector accuracy on renders and on their VAE reconstructions")
        .arg(
            Arg::new("vae")
                .long("vae")
                .value_parser(clap::value_parser!(PathBuf))
                .help("An AutoencoderKL folder (default: the shipped world VAE)"),
        )
        .arg(
            Arg::new("scenes")
                .long("scenes")
                .default_value("600")
                .value_parser(clap::value_parser!(usize))
                .help("Scenes per split"),
        )
}

/// The groups a scene counts in.
fn groups(split: Split, scene: &Scene) -> Vec<String> {
    let first = &scene.objects[0];
    let mut keys = vec![format!("{split:?}: all")];
    if scene.objects.len() == 2 {
        keys.push(format!("{split:?}: two objects"));
    } else {
        keys.push(format!("{split:?}: one object, {:?}", first.size));
        keys.push(format!(
            "{split:?}: one object, {:?} {:?}",
            first.size, first.shape
        ));
    }
    keys
}

fn run() -> Result<(), String> {
    let args = cli().try_get_matches().map_err(|e| {
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            print!("{e}");
            std::process::exit(0);
        }
        e.to_string()
    })?;
    let vae_dir = args
        .get_one::<PathBuf>("vae")
        .cloned()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/world/vae"));
    let n = *args.get_one::<usize>("scenes").expect("has a default");
    let device = Device::default();
    let vae = AutoencoderKL::from_pretrained(&vae_dir, &device)
        .map_err(|e| format!("{}: {e}", vae_dir.display()))?;
    // group → (renders right, reconstructions right, scenes)
    let mut table: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for split in [Split::Test, Split::Compositional] {
        let scenes = split.scenes(0, n);
        let images: Vec<Image> = scenes.iter().map(render).collect();
        let rebuilt = reconstructions(&vae, &images, &device);
        for ((scene, image), rebuilt) in scenes.iter().zip(&images).zip(&rebuilt) {
            let clean = colour_and_shape_right(image, &scene.caption);
            let through = colour_and_shape_right(rebuilt, &scene.caption);
            for key in groups(split, scene) {
                let e = table.entry(key).or_default();
                e.0 += usize::from(clean);
                e.1 += usize::from(through);
                e.2 += 1;
            }
        }
    }
    println!("VAE: {}; {n} scenes per split\n", vae_dir.display());
    println!("| scenes | count | renders right | reconstructions right |");
    println!("|---|---|---|---|");
    for (key, (clean, through, count)) in table {
        let pct = |k: usize| 100.0 * k as f64 / count.max(1) as f64;
        println!(
            "| {key} | {count} | {:.1} % | {:.1} % |",
            pct(clean),
            pct(through)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                e.lines()
                    .next()
                    .unwrap_or("failed")
                    .trim_start_matches("error: ")
            );
            ExitCode::from(2)
        }
    }
}
