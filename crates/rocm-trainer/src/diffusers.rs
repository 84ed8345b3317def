//! Running [`RocmTrainer`](crate::RocmTrainer) on a diffusers pipeline ([`LcmPipeline`]): the
//! VAE as the [`LatentDecoder`] of an image reward, and the pipeline's CLIP tokenizer and frozen
//! text encoder as its [`PromptEncoder`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use burn::prelude::*;
//! use rocm_models::pipeline::LcmPipeline;
//! use rocm_sampler::Sampler;
//! use rocm_trainer::{DecodedReward, RocmTrainer, TextEncoder, TrainConfig};
//!
//! let config = TrainConfig::load("configs/lcm_dreamshaper_pickscore.toml")?;
//! let device = Device::flex().autodiff();
//! let pipeline = LcmPipeline::from_hub(&config.pretrained_model, &device)?;
//! let latent_shape = pipeline.latent_shape(1);
//! let sampler = Sampler::new(pipeline.scheduler.clone());
//! let mut unet = pipeline.unet;
//! rocm_lora::apply_lora(&mut unet, &config.lora.to_lora_config())?;
//! let reward = rocm_rewards::PickScore::from_pretrained(rocm_rewards::PickScore::REPO, &device)?;
//! let reward = DecodedReward::new(pipeline.vae.no_grad(), reward);
//! let encoder = TextEncoder::new(pipeline.tokenizer, pipeline.text_encoder, &device);
//! let prompts = vec!["a photo of a cat".to_string()];
//! let divergence = config.divergence()?;
//! let mut trainer = RocmTrainer::new(
//!     unet, reward, divergence, encoder, prompts, latent_shape, config, device,
//! )?
//! .with_sampler(sampler);
//! trainer.run(|_metrics| {})?;
//! # Ok(()) }
//! ```

use burn::prelude::*;
use rocm_models::AutoencoderKL;
use rocm_models::clip::CLIPTextModel;
use rocm_models::tokenizer::CLIPTokenizer;

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

/// The [`PromptEncoder`] of a diffusers pipeline: its CLIP tokenizer (padded/truncated to its
/// length) and its frozen text encoder, whose `last_hidden_state` conditions the UNet (as
/// diffusers' `encode_prompt` without `clip_skip`). The embeddings carry no gradient: the text
/// encoder's weights are frozen and its output detached.
#[derive(Debug)]
pub struct TextEncoder {
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    device: Device,
}

impl TextEncoder {
    /// Wraps a pipeline's tokenizer and text encoder (frozen here); ids are created on `device`,
    /// the text encoder's device.
    pub fn new(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, device: &Device) -> Self {
        Self {
            tokenizer,
            text_encoder: text_encoder.no_grad(),
            device: device.clone(),
        }
    }

    /// The text embeddings of `prompts`, or the tokenizer's error (which names the prompt).
    ///
    /// # Shapes
    /// - output: `[prompts.len(), max_length, hidden_size]`
    pub fn try_encode(&self, prompts: &[String]) -> Result<Tensor<3>, rocm_models::Error> {
        let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let ids = self.tokenizer.encode_to_tensor(&texts, &self.device)?;
        Ok(self.text_encoder.forward(ids).last_hidden_state.detach())
    }

    /// Checks that every prompt tokenizes (call it on the training and evaluation prompts before
    /// training: [`PromptEncoder::encode`] cannot return an error).
    pub fn check_prompts<'a>(
        &self,
        prompts: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), rocm_models::Error> {
        prompts
            .into_iter()
            .try_for_each(|p| self.tokenizer.tokenize(p).map(drop))
    }
}

impl PromptEncoder<Tensor<3>> for TextEncoder {
    /// [`TextEncoder::try_encode`].
    ///
    /// # Panics
    /// When a prompt does not tokenize; [`TextEncoder::check_prompts`] finds such prompts first.
    fn encode(&self, prompts: &[String]) -> Tensor<3> {
        match self.try_encode(prompts) {
            Ok(embeddings) => embeddings,
            Err(e) => panic!("prompt encoder: {e} (check prompts with TextEncoder::check_prompts)"),
        }
    }
}
