//! The teacher stage: a diffusers `UNet2DConditionModel` trained as Stable Diffusion is, with the
//! ε-prediction loss `‖ε̂(√ā_t x_0 + √(1 − ā_t) ε, t, c) − ε‖²` on the shipped VAE's scaled latents,
//! `t` uniform over SD's scaled-linear 1000-step schedule, `c` the world CLIP text tower's
//! `last_hidden_state` of the caption, replaced by the empty prompt's with probability
//! [`PROMPT_DROPOUT`] (for classifier-free guidance).

use std::path::Path;

use burn::prelude::*;
use rand::RngExt;
use rocm_models::unet_2d_condition_config::{DownBlockType, UpBlockType};
use rocm_models::{UNet2DConditionModel, UNet2DConditionModelConfig};
use rocm_sampler::NoiseSchedule;

use super::latents::{LatentCache, per_sample};
use super::{OnStep, Shard, StageOptions, StepReport, Trainer, host_noise};
use crate::Error;
use crate::export::Storage;

/// The probability that a caption is replaced by the empty prompt.
pub const PROMPT_DROPOUT: f64 = 0.1;

/// The shipped UNet: two levels of (32, 64) channels at 8 × 8 and 4 × 4 latents, one resnet
/// per down block, cross-attention in every block (4 heads), `cross_attention_dim` the text
/// width, 8 GroupNorm groups.
pub fn world_unet_config(cross_attention_dim: usize) -> UNet2DConditionModelConfig {
    UNet2DConditionModelConfig::new(
        vec![32, 64],
        vec![
            DownBlockType::CrossAttnDownBlock2D,
            DownBlockType::CrossAttnDownBlock2D,
        ],
        vec![
            UpBlockType::CrossAttnUpBlock2D,
            UpBlockType::CrossAttnUpBlock2D,
        ],
        vec![4, 4],
        cross_attention_dim,
    )
    .with_layers_per_block(1)
    .with_norm_num_groups(8)
    .with_sample_size(8)
}

/// A tiny UNet for tests (16, 32 channels).
pub fn tiny_unet_config(cross_attention_dim: usize) -> UNet2DConditionModelConfig {
    UNet2DConditionModelConfig::new(
        vec![16, 32],
        vec![
            DownBlockType::CrossAttnDownBlock2D,
            DownBlockType::DownBlock2D,
        ],
        vec![UpBlockType::UpBlock2D, UpBlockType::CrossAttnUpBlock2D],
        vec![2, 2],
        cross_attention_dim,
    )
    .with_layers_per_block(1)
    .with_norm_num_groups(4)
    .with_sample_size(8)
}

/// `x_t = √ā_t x_0 + √(1 − ā_t) ε` for per-sample timesteps `t` (diffusers' `add_noise`).
///
/// # Shapes
/// - `x0`, `noise`, output: `[B, C, h, w]`; `timesteps`: `B` values
pub fn add_noise(
    schedule: &NoiseSchedule,
    x0: Tensor<4>,
    noise: Tensor<4>,
    timesteps: &[usize],
) -> Tensor<4> {
    let device = x0.device();
    let abar: Vec<f32> = timesteps
        .iter()
        .map(|&t| schedule.alpha_cumprod(t).unwrap_or(0.0))
        .collect();
    let signal: Vec<f32> = abar.iter().map(|a| a.sqrt()).collect();
    let sigma: Vec<f32> = abar.iter().map(|a| (1.0 - a).sqrt()).collect();
    x0 * per_sample(&signal, &device) + noise * per_sample(&sigma, &device)
}

/// The float timesteps tensor `[B]` of `timesteps`.
pub fn timestep_tensor(timesteps: &[usize], device: &Device) -> Tensor<1> {
    let v: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    Tensor::from_data(TensorData::new(v, [timesteps.len()]), device)
}

/// The teacher's loss on `shard`'s rows of the batch drawn from `cache` with step `k`'s RNG (its
/// mean over those rows times [`Shard::weight`]; [`Shard::whole`] gives the batch's loss).
#[allow(clippy::too_many_arguments)]
pub fn loss(
    unet: &UNet2DConditionModel,
    cache: &LatentCache,
    schedule: &NoiseSchedule,
    options: &StageOptions,
    k: usize,
    shard: &Shard,
    device: &Device,
) -> Tensor<1> {
    let mut rng = options.rng(k);
    let batch = cache.batch(&mut rng, options.batch, PROMPT_DROPOUT, device);
    let n = schedule.num_train_timesteps();
    let timesteps: Vec<usize> = (0..options.batch).map(|_| rng.random_range(0..n)).collect();
    let noise = shard.narrow(host_noise(batch.latents.dims(), &mut rng, device));
    let timesteps = shard.slice(&timesteps);
    let noisy = add_noise(
        schedule,
        shard.narrow(batch.latents),
        noise.clone(),
        timesteps,
    );
    let eps = unet.forward(
        noisy,
        timestep_tensor(timesteps, device),
        shard.narrow(batch.text),
        None,
    );
    (eps - noise).square().mean() * shard.weight()
}

/// Trains (or resumes) the teacher on `cache`; checkpoints go to `work/checkpoint`.
pub fn train(
    config: &UNet2DConditionModelConfig,
    cache: &LatentCache,
    options: &StageOptions,
    work: &Path,
    device: &Device,
    on_step: OnStep<'_>,
) -> Result<UNet2DConditionModel, Error> {
    let ckpt = work.join("checkpoint");
    let device = device.clone().autodiff();
    options.seed_device(&device);
    let mut model = config.init(&device);
    let start = match super::checkpoint_step(&ckpt)? {
        Some(step) => {
            model.load_safetensors(ckpt.join("unet.safetensors"))?;
            step
        }
        None => 0,
    };
    let schedule = NoiseSchedule::sd15();
    let mut trainer = if start > 0 {
        Trainer::resume(model, &ckpt)?
    } else {
        Trainer::new(model)
    };
    for k in start..options.steps {
        let loss = trainer.apply_sharded(options.lr_at(k), options.batch, |unet, shard| {
            loss(unet, cache, &schedule, options, k, shard, &device)
        });
        on_step(StepReport {
            step: k + 1,
            total: options.steps,
            loss,
        });
        if options.checkpoint_due(k + 1) {
            crate::pipelines::save_unet(
                &trainer.model.valid(),
                Storage::F32,
                &ckpt.join("unet.safetensors"),
            )?;
            trainer.save_state(&ckpt)?;
            super::write_checkpoint_step(&ckpt, k + 1)?;
        }
    }
    Ok(trainer.model.valid())
}
