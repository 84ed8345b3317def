//! Running [`RocmTrainer`](crate::RocmTrainer) on a diffusers pipeline ([`LcmPipeline`]): the
//! VAE as the [`LatentDecoder`] of an image reward, and the pipeline's frozen
//! [`TextEncoder`] as its [`PromptEncoder`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use burn::prelude::*;
//! use rocm_models::pipeline::LcmPipeline;
//! use rocm_trainer::{DecodedReward, RocmTrainer, TrainConfig};
//!
//! let config = TrainConfig::default(); // or the `[train]` table of a run configuration
//! let device = Device::flex().autodiff();
//! let parts = LcmPipeline::from_pretrained("SimianLuo/LCM_Dreamshaper_v7", &device)?
//!     .into_training_parts();
//! let mut unet = parts.unet;
//! rocm_lora::apply_lora(&mut unet, &config.lora.to_lora_config())?;
//! let reward = rocm_rewards::PickScore::from_pretrained(rocm_rewards::PickScore::REPO, &device)?;
//! let prompts = vec!["a photo of a cat".to_string()];
//! parts.text_encoder.check_prompts(&prompts)?;
//! let mut trainer = RocmTrainer::builder(config)
//!     .model(unet)
//!     .reward(DecodedReward::new(parts.vae.no_grad(), reward))
//!     .prompts(prompts, parts.text_encoder)
//!     .sampler(parts.sampler)
//!     .latent_shape(parts.latent_shape)
//!     .device(device)
//!     .build()?;
//! trainer.run(|_metrics| {})?;
//! # Ok(()) }
//! ```

use burn::prelude::*;
use rocm_models::{AutoencoderKL, TextEncoder};

use crate::{LatentDecoder, PromptEncoder};

/// diffusers' decoding of a final latent: `vae.decode(x / scaling_factor)`, then
/// `(img / 2 + 0.5).clamp(0, 1)` ([`AutoencoderKL::decode_to_image`]). The clamp has a zero
/// gradient outside `[0, 1]`, as in diffusers. Freeze the VAE (`vae.no_grad()`) so that no
/// gradient is computed for its weights.
///
/// # Shapes
/// - `latent`: `[B, latent_channels, h, w]`
/// - output: `[B, 3, h·f, w·f]` in `[0, 1]`
impl LatentDecoder<4> for AutoencoderKL {
    fn decode(&self, latent: Tensor<4>) -> Tensor<4> {
        self.decode_to_image(latent)
    }
}

/// The frozen CLIP text embeddings of a batch ([`TextEncoder::encode`]), detached.
///
/// # Panics
/// When a prompt does not tokenize; [`TextEncoder::check_prompts`] finds such prompts first
/// (the `rocm` crate's run wiring checks every training and evaluation prompt before it builds
/// the trainer).
impl PromptEncoder<Tensor<3>> for TextEncoder {
    fn encode(&self, prompts: &[String]) -> Tensor<3> {
        match TextEncoder::encode(self, prompts) {
            Ok(embeddings) => embeddings,
            Err(e) => panic!("prompt encoder: {e} (check prompts with TextEncoder::check_prompts)"),
        }
    }
}
