//! Helpers of the shapes world's stage tests.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses some of them

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_models::clip::{CLIPConfig, CLIPModel};
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_shapes::tokenizer::WorldBpe;
use rocm_shapes::train::latents::LatentCache;
use rocm_shapes::train::{StageOptions, StepReport, clip, teacher, vae};

/// A fresh scratch folder under the system's temporary folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-shapes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Stage options with seed 3 and no checkpoints.
pub fn options(steps: usize, batch: usize, lr: f64) -> StageOptions {
    StageOptions {
        steps,
        batch,
        lr,
        seed: 3,
        checkpoint_every: 0,
    }
}

/// Runs a stage, returning its per-step losses.
pub fn losses(run: impl FnOnce(&mut dyn FnMut(StepReport))) -> Vec<f32> {
    let mut out = Vec::new();
    run(&mut |r| out.push(r.loss));
    out
}

/// A random CLIP of width 16 and one layer per tower on the world tokenizer.
pub fn tiny_clip(bpe: &WorldBpe, device: &Device) -> (CLIPConfig, CLIPModel) {
    let config = clip::world_clip_config(bpe, 16, 1);
    let model = config.init(device);
    (config, model)
}

/// The world tokenizer, written to `dir` and loaded back.
pub fn tokenizer(dir: &Path) -> CLIPTokenizer {
    WorldBpe::learn().write(dir).unwrap();
    CLIPTokenizer::from_dir(dir).unwrap()
}

/// A latent cache of 32 training scenes from a random tiny VAE and text tower (the diffusion
/// stages' data path), with the tokenizer written to `dir`.
pub fn tiny_cache(dir: &Path, device: &Device) -> LatentCache {
    let bpe = WorldBpe::learn();
    let tok = tokenizer(dir);
    let (config, _) = tiny_clip(&bpe, device);
    let text = rocm_models::TextEncoder::new(tok, config.text_config.init(device), device);
    let vae = vae::tiny_vae_config().init(device);
    LatentCache::build(&vae, &text, rocm_shapes::Split::Train, 0, 32, device).unwrap()
}

/// A tiny UNet on the tiny VAE's latents and the tiny CLIP's text width.
pub fn tiny_unet_config() -> rocm_models::UNet2DConditionModelConfig {
    // The tiny CLIP's text width is 16; the tiny VAE's latents are 4 × 16 × 16.
    teacher::tiny_unet_config(16).with_sample_size(16)
}
