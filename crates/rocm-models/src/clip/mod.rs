//! CLIP in transformers' layout: the text tower (`CLIPTextModel`, the Stable Diffusion text encoder,
//! and `CLIPTextModelWithProjection`), on a transformer encoder ([`encoder`]) that the vision tower
//! shares. Field names are transformers' attribute names, so Burn parameter paths are checkpoint keys.
//!
//! ```no_run
//! # use burn::prelude::*;
//! # use rocm_models::{clip::CLIPTextModel, tokenizer::CLIPTokenizer};
//! # fn main() -> Result<(), rocm_models::Error> {
//! let device = Device::default();
//! let tokenizer = CLIPTokenizer::from_dir("LCM_Dreamshaper_v7/tokenizer")?;
//! let text_encoder = CLIPTextModel::from_pretrained("LCM_Dreamshaper_v7/text_encoder", &device)?;
//! let ids = tokenizer.encode_to_tensor(&["a photo of a cat"], &device)?;
//! let context = text_encoder.forward(ids).last_hidden_state; // [1, 77, 768]
//! # Ok(()) }
//! ```

pub mod config;
pub mod encoder;
pub mod text;

use std::path::Path;

use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::DType;

pub use config::{CLIPTextConfig, EosTokenId};
pub use encoder::{
    CLIPAttention, CLIPEncoder, CLIPEncoderConfig, CLIPEncoderLayer, CLIPMLP, HiddenAct,
};
pub use text::{
    CLIPTextEmbeddings, CLIPTextModel, CLIPTextModelWithProjection, CLIPTextOutput,
    CLIPTextTransformer,
};

use crate::Error;

/// transformers 5 saves a bare `CLIPTextModel` / `CLIPVisionModel` without the `text_model.` /
/// `vision_model.` prefix that 4.x files and hub checkpoints have; map such keys onto the prefix.
const UNPREFIXED_TEXT_KEYS: (&str, &str) = (
    r"^(embeddings|encoder|final_layer_norm)\.",
    "text_model.$1.",
);

/// Non-persistent buffers that transformers 4.x wrote into checkpoints; accepted and ignored.
fn is_ignored_buffer(key: &str) -> bool {
    key.ends_with("embeddings.position_ids")
}

/// Strict safetensors load for CLIP modules: Linear weights transposed, norms renamed, floats cast to
/// f32 (fp16 files load), `position_ids` buffers ignored, unprefixed transformers-5 text keys mapped.
/// Any other missing or unused key is an [`Error::WeightsMismatch`] naming the file and keys.
pub(crate) fn load_clip_safetensors<M: ModuleSnapshot>(
    module: &mut M,
    path: &Path,
) -> Result<(), Error> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .with_key_remapping(UNPREFIXED_TEXT_KEYS.0, UNPREFIXED_TEXT_KEYS.1)
        .allow_partial(true);
    let result = module.load_from(&mut store).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let unused: Vec<String> = result
        .unused
        .into_iter()
        .filter(|k| !is_ignored_buffer(k))
        .collect();
    if result.missing.is_empty() && unused.is_empty() && result.errors.is_empty() {
        return Ok(());
    }
    Err(Error::WeightsMismatch {
        path: path.to_path_buf(),
        missing: result.missing.into_iter().map(|(key, _)| key).collect(),
        unused,
        errors: result.errors.iter().map(|e| format!("{e:?}")).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_position_id_buffers_are_ignored() {
        assert!(is_ignored_buffer("text_model.embeddings.position_ids"));
        assert!(is_ignored_buffer("vision_model.embeddings.position_ids"));
        assert!(!is_ignored_buffer(
            "text_model.embeddings.position_embedding.weight"
        ));
    }
}
