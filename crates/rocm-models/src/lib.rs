//! Ports of the diffusers/transformers models that ROCM fine-tunes and decodes with:
//! `UNet2DConditionModel`, the `AutoencoderKL` decoder, the CLIP text (and vision) towers and the
//! CLIP tokenizer, built from Hugging Face model folders and loaded by weight name.
//!
//! The UNet implements [`rocm_sampler::ConsistencyModel`]; its attention projections and
//! convolutions accept [`rocm_lora`] adapters.
//!
//! # UNet and VAE
//! - [`UNet2DConditionModel`] (`unet_2d_condition`, blocks in `unet_2d_blocks`, `resnet`,
//!   `transformer_2d`, `attention`, `embeddings`, `downsampling`, `upsampling`) from
//!   `unet/config.json` ([`UNet2DConditionModelConfig::from_file`], presets `sd15()`,
//!   `lcm_dreamshaper_v7()`, `tiny()`), weights by diffusers key name
//!   ([`UNet2DConditionModel::from_pretrained`]; fp16 files are cast to f32; strict).
//! - [`AutoencoderKL`] (`autoencoder_kl`, `vae`): `encode` → `(mean, logvar)`, `decode` of
//!   latents already divided by `scaling_factor`, [`to_unit_range`] for `(x/2+0.5).clamp(0,1)`.
//! - Struct fields are diffusers' attribute names, so Burn's parameter path is the weight key and
//!   [`rocm_lora::apply_lora`] targets diffusers module paths (`…attn1.to_q`, `…to_out.0`). The
//!   only remapping is `ff.net.0`/`ff.net.2` → `ff.net_0`/`ff.net_2`.
//!
//! # Pipeline
//! [`LcmPipeline`] (`pipeline`): diffusers' `LatentConsistencyModelPipeline` from a model folder or
//! the hub cache: prompts → CLIP → LCM sampler on the UNet (`w = g − 1`) → VAE → images in `[0, 1]`.

pub mod error;
pub use error::Error;
pub mod bounds;
pub mod clip;
pub mod hub;
pub mod pipeline;
pub mod text_encoder;
pub mod tokenizer;

// UNet2DConditionModel and AutoencoderKL (diffusers module names).
pub mod attention;
pub mod autoencoder_kl;
pub mod downsampling;
pub mod embeddings;
mod load;
pub mod resnet;
pub mod transformer_2d;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod unet_2d_condition_config;
pub mod upsampling;
pub mod vae;
pub use autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig, to_unit_range};
pub use pipeline::{LcmPipeline, NoiseSource, PipelineError};
pub use text_encoder::TextEncoder;
pub use unet_2d_condition::{DIFFUSERS_WEIGHT_FILES, UNet2DConditionModel};
pub use unet_2d_condition_config::UNet2DConditionModelConfig;
