//! CLIP in transformers' layout: the text tower (`CLIPTextModel`, the Stable Diffusion text encoder,
//! and `CLIPTextModelWithProjection`) and the vision tower (`CLIPVisionModel`,
//! `CLIPVisionModelWithProjection`, and `CLIPModel` holding both, [`vision`]), on one transformer
//! encoder ([`encoder`]). Field names are transformers' attribute names, so Burn parameter paths are checkpoint keys.
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
pub mod vision;

use std::path::Path;

use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::DType;

pub use config::{CLIPConfig, CLIPTextConfig, EosTokenId};
pub use encoder::{
    CLIPAttention, CLIPEncoder, CLIPEncoderConfig, CLIPEncoderLayer, CLIPMLP, HiddenAct,
};
pub use text::{
    CLIPTextEmbeddings, CLIPTextModel, CLIPTextModelWithProjection, CLIPTextOutput,
    CLIPTextTransformer,
};
pub use vision::{
    CLIPModel, CLIPVisionConfig, CLIPVisionEmbeddings, CLIPVisionModel,
    CLIPVisionModelWithProjection, CLIPVisionOutput, CLIPVisionTransformer,
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
    load_clip_safetensors_with(module, path, &[UNPREFIXED_TEXT_KEYS], &[]).map(|_| ())
}

/// [`load_clip_safetensors`] with other key remappings, and file keys in `extra` that the module
/// does not hold (such as `CLIPModel`'s scalar `logit_scale`): those are not errors but returned
/// as `f32` values (their first element), in the order of `extra`.
pub(crate) fn load_clip_safetensors_with<M: ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    remap: &[(&str, &str)],
    extra: &[&str],
) -> Result<Vec<f32>, Error> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    let weights_error = |message: String| Error::Weights {
        path: path.to_path_buf(),
        message,
    };
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .allow_partial(true);
    for &(from, to) in remap {
        store = store.with_key_remapping(from, to);
    }
    let result = module
        .load_from(&mut store)
        .map_err(|e| weights_error(e.to_string()))?;
    let mut extra_values = Vec::with_capacity(extra.len());
    for key in extra {
        let tensor = store
            .get_tensor(key)
            .map_err(|e| weights_error(e.to_string()))?
            .ok_or_else(|| weights_error(format!("missing key `{key}`")))?;
        let data = burn::store::bridge::to_data(tensor)
            .map_err(|e| weights_error(format!("`{key}`: {e}")))?
            .convert::<f32>();
        let value = data
            .try_to_vec::<f32>()
            .ok()
            .and_then(|v| v.first().copied())
            .ok_or_else(|| weights_error(format!("`{key}` is empty")))?;
        extra_values.push(value);
    }
    let unused: Vec<String> = result
        .unused
        .into_iter()
        .filter(|k| !is_ignored_buffer(k) && !extra.contains(&k.as_str()))
        .collect();
    if result.missing.is_empty() && unused.is_empty() && result.errors.is_empty() {
        return Ok(extra_values);
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
