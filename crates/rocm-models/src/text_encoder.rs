//! [`TextEncoder`]: prompts → the frozen CLIP text embeddings that condition a UNet, the one
//! place that tokenizes and encodes prompts (the pipeline and the trainer both use it).

use burn::prelude::*;

use crate::Error;
use crate::clip::CLIPTextModel;
use crate::tokenizer::CLIPTokenizer;

/// Encodes `prompts` as diffusers' `encode_prompt` does without `clip_skip`: tokenized (padded
/// and truncated to the tokenizer's length), CLIP's `last_hidden_state`, detached (the text
/// encoder is frozen: no gradient ever reaches it or flows from the embeddings).
///
/// # Shapes
/// - output: `[prompts.len(), max_length, hidden_size]`
pub fn encode_prompts<S: AsRef<str>>(
    tokenizer: &CLIPTokenizer,
    text_encoder: &CLIPTextModel,
    prompts: &[S],
    device: &Device,
) -> Result<Tensor<3>, Error> {
    let texts: Vec<&str> = prompts.iter().map(AsRef::as_ref).collect();
    let ids = tokenizer.encode_to_tensor(&texts, device)?;
    Ok(text_encoder.forward(ids).last_hidden_state.detach())
}

/// A pipeline's CLIP tokenizer and frozen text encoder, as one value: what conditions a
/// training run's UNet on its prompts.
#[derive(Debug)]
pub struct TextEncoder {
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    device: Device,
}

impl TextEncoder {
    /// Wraps a tokenizer and a text encoder (frozen here: `no_grad`); ids are created on
    /// `device`, the text encoder's device.
    pub fn new(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, device: &Device) -> Self {
        Self {
            tokenizer,
            text_encoder: text_encoder.no_grad(),
            device: device.clone(),
        }
    }

    /// The text embeddings of `prompts` ([`encode_prompts`]), or the tokenizer's error (which
    /// names the prompt).
    ///
    /// # Shapes
    /// - output: `[prompts.len(), max_length, hidden_size]`
    pub fn encode<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Tensor<3>, Error> {
        encode_prompts(&self.tokenizer, &self.text_encoder, prompts, &self.device)
    }

    /// Checks that every prompt tokenizes: call it on a run's prompts before training, so that
    /// no batch fails half-way.
    pub fn check_prompts<'a>(
        &self,
        prompts: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), Error> {
        prompts
            .into_iter()
            .try_for_each(|p| self.tokenizer.tokenize(p).map(drop))
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &CLIPTokenizer {
        &self.tokenizer
    }

    /// The (frozen) text encoder.
    pub fn text_encoder(&self) -> &CLIPTextModel {
        &self.text_encoder
    }
}
