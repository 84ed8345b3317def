//! The VAE stage: a diffusers `AutoencoderKL` trained on renders with an L1 + L2 reconstruction
//! loss and a small KL term; its `scaling_factor` is measured afterwards as `1 / std` of the
//! latent means of training renders (as Stable Diffusion's 0.18215 was) and written to its config.

use std::path::Path;

use burn::prelude::*;
use rocm_models::{AutoencoderKL, AutoencoderKLConfig};

use super::{
    OnStep, Shard, StageOptions, StepReport, Trainer, host_noise, host_values, random_render,
    random_scene,
};
use crate::Error;
use crate::export::{Storage, save_module};
use crate::render::{Image, render};
use crate::world::{IMAGE_SIZE, Split};

/// The shipped VAE's architecture: three levels (32 → 16 → 8 pixels; 16, 32, 32 channels),
/// 4 latent channels.
pub fn world_vae_config() -> AutoencoderKLConfig {
    AutoencoderKLConfig::new(vec![16, 32, 32])
        .with_layers_per_block(1)
        .with_norm_num_groups(8)
        .with_latent_channels(4)
}

/// A tiny VAE for tests.
pub fn tiny_vae_config() -> AutoencoderKLConfig {
    AutoencoderKLConfig::new(vec![8, 16])
        .with_layers_per_block(1)
        .with_norm_num_groups(4)
}

/// The KL weight of the loss (per latent element, against the per-pixel reconstruction terms).
pub const KL_WEIGHT: f64 = 1e-4;

/// The VAE's training loss on `shard`'s rows of the batch `images` (in `[0, 1]`):
/// `mean|x̂ − x| + mean(x̂ − x)² + KL_WEIGHT · KL` on the `[−1, 1]` scale, times
/// [`Shard::weight`], the latent sampled from the posterior with host noise drawn from `rng` for
/// the whole batch (so a shard's rows see the noise they would in one batch).
pub fn loss(
    model: &AutoencoderKL,
    images: &[Image],
    rng: &mut rand::rngs::ChaCha8Rng,
    shard: &Shard,
    device: &Device,
) -> Tensor<1> {
    let x = Image::batch(shard.slice(images), device) * 2.0 - 1.0;
    let (mean, logvar) = model.encode(x.clone());
    let [_, c, h, w] = mean.dims();
    let eps = shard.narrow(host_noise([images.len(), c, h, w], rng, device));
    let z = mean.clone() + (logvar.clone() * 0.5).exp() * eps;
    let diff = model.decode(z) - x;
    let recon = diff.clone().abs().mean() + diff.square().mean();
    let kl = (mean.square() + logvar.clone().exp() - logvar - 1.0).mean() * 0.5;
    (recon + kl * KL_WEIGHT) * shard.weight()
}

/// A batch of VAE training images: 85 % clean renders, the rest with random perturbations.
pub fn batch(options: &StageOptions, k: usize) -> Vec<Image> {
    let mut rng = options.rng(k);
    (0..options.batch)
        .map(|_| {
            let scene = random_scene(&mut rng, Split::Train);
            random_render(&mut rng, &scene, 0.85, true)
        })
        .collect()
}

/// Trains (or resumes) the VAE; checkpoints go to `work/checkpoint`. Returns the model.
pub fn train(
    config: &AutoencoderKLConfig,
    options: &StageOptions,
    work: &Path,
    device: &Device,
    on_step: OnStep<'_>,
) -> Result<AutoencoderKL, Error> {
    let ckpt = work.join("checkpoint");
    let device = device.clone().autodiff();
    options.seed_device(&device);
    let mut model = config.init(&device);
    let start = match super::checkpoint_step(&ckpt)? {
        Some(step) => {
            model.load_safetensors(ckpt.join("model.safetensors"))?;
            step
        }
        None => 0,
    };
    let mut trainer = if start > 0 {
        Trainer::resume(model, &ckpt)?
    } else {
        Trainer::new(model)
    };
    for k in start..options.steps {
        let images = batch(options, k);
        let loss = trainer.apply_sharded(options.lr_at(k), options.batch, |model, shard| {
            let mut noise = options.rng(k + (1 << 40));
            loss(model, &images, &mut noise, shard, &device)
        });
        on_step(StepReport {
            step: k + 1,
            total: options.steps,
            loss,
        });
        let done = k + 1;
        if options.checkpoint_due(done) {
            save_module(
                &trainer.model.valid(),
                &[],
                Storage::F32,
                &ckpt.join("model.safetensors"),
            )?;
            trainer.save_state(&ckpt)?;
            super::write_checkpoint_step(&ckpt, done)?;
        }
    }
    Ok(trainer.model.valid())
}

/// `1 / std` of the latent means of `n` training renders.
pub fn measure_scaling_factor(vae: &AutoencoderKL, n: usize, device: &Device) -> f64 {
    let images: Vec<Image> = Split::Train.scenes(1 << 33, n).iter().map(render).collect();
    let mut values = Vec::new();
    for chunk in images.chunks(64) {
        let (mean, _) = vae.encode(Image::batch(chunk, device) * 2.0 - 1.0);
        values.extend(host_values(mean));
    }
    let m = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - m).powi(2))
        .sum::<f64>()
        / values.len() as f64;
    1.0 / var.sqrt().max(1e-8)
}

/// Mean PSNR (dB) of `decode(mean(encode(x)))` over `images`.
pub fn psnr(vae: &AutoencoderKL, images: &[Image], device: &Device) -> f64 {
    let mut total = 0.0;
    for chunk in images.chunks(64) {
        let x = Image::batch(chunk, device);
        let (mean, _) = vae.encode(x.clone() * 2.0 - 1.0);
        let y = rocm_models::to_unit_range(vae.decode(mean));
        let per = host_values(
            (y - x)
                .square()
                .reshape([chunk.len(), 3 * IMAGE_SIZE * IMAGE_SIZE])
                .mean_dim(1),
        );
        total += per
            .iter()
            .map(|&mse| -10.0 * f64::from(mse.max(1e-10)).log10())
            .sum::<f64>();
    }
    total / images.len() as f64
}

/// The diffusers `vae/config.json` of `config` with the measured `scaling_factor`.
pub fn diffusers_config(config: &AutoencoderKLConfig, scaling_factor: f64) -> serde_json::Value {
    let levels = config.block_out_channels.len();
    serde_json::json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "block_out_channels": config.block_out_channels,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "latent_channels": config.latent_channels,
        "layers_per_block": config.layers_per_block,
        "norm_num_groups": config.norm_num_groups,
        "sample_size": IMAGE_SIZE,
        "scaling_factor": scaling_factor,
        "shift_factor": null,
        "latents_mean": null,
        "latents_std": null,
        "force_upcast": false,
        "use_quant_conv": config.use_quant_conv,
        "use_post_quant_conv": config.use_post_quant_conv,
        "mid_block_add_attention": config.mid_block_add_attention,
    })
}

/// Writes the diffusers folder (`config.json` + f16 `diffusion_pytorch_model.safetensors`).
pub fn export(
    vae: &AutoencoderKL,
    config: &AutoencoderKLConfig,
    scaling_factor: f64,
    dir: &Path,
) -> Result<(), Error> {
    crate::io::write_json(
        &dir.join("config.json"),
        &diffusers_config(config, scaling_factor),
    )?;
    save_module(
        vae,
        &[],
        Storage::F16,
        &dir.join("diffusion_pytorch_model.safetensors"),
    )
}
