//! transformers' `CLIPTextConfig` (`text_encoder/config.json`), read with plain serde.

use std::path::Path;

use serde::Deserialize;

use super::encoder::{CLIPEncoderConfig, HiddenAct};
use super::vision::CLIPVisionConfig;
use crate::Error;
use crate::bounds::{Fields, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH};

/// The fields of transformers' `CLIPTextConfig` that shape the model, with its defaults
/// (transformers 4.x and 5.x files both parse; unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CLIPTextConfig {
    /// Vocabulary size (49408).
    pub vocab_size: usize,
    /// Width `d` (512 in transformers' default, 768 for ViT-L/14, 1024 for ViT-H/14).
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Width of `text_projection` (only `CLIPTextModelWithProjection`).
    pub projection_dim: Option<usize>,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Context length (77).
    pub max_position_embeddings: usize,
    /// `quick_gelu` (OpenAI CLIP) or `gelu` (exact, e.g. OpenCLIP ViT-H/14).
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// The end-of-text id whose first position gives the pooled output; `2` selects transformers'
    /// legacy `argmax(input_ids)` pooling. transformers allows a list: the first entry is used.
    pub eos_token_id: EosTokenId,
}

/// `eos_token_id`: one id or a list of ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EosTokenId {
    /// A single id.
    One(i64),
    /// Several ids; the first is used.
    Many(Vec<i64>),
}

impl EosTokenId {
    /// The id used for pooling.
    pub fn first(&self) -> i64 {
        match self {
            Self::One(id) => *id,
            Self::Many(ids) => ids.first().copied().unwrap_or(49407),
        }
    }
}

impl Default for CLIPTextConfig {
    /// transformers' `CLIPTextConfig()` defaults.
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: Some(512),
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: EosTokenId::One(49407),
        }
    }
}

impl CLIPTextConfig {
    /// The text tower of OpenAI CLIP ViT-L/14 (Stable Diffusion 1.x, LCM Dreamshaper v7): 12 layers,
    /// width 768, 12 heads, MLP 3072, quick_gelu, projection 768.
    pub fn vit_l14_text() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: Some(768),
            num_attention_heads: 12,
            ..Self::default()
        }
    }

    /// The text tower of OpenCLIP ViT-H/14 (PickScore, HPSv2): 24 layers, width 1024, 16 heads,
    /// MLP 4096, exact gelu, projection 1024.
    pub fn vit_h14_text() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            projection_dim: Some(1024),
            num_hidden_layers: 24,
            num_attention_heads: 16,
            hidden_act: "gelu".into(),
            ..Self::default()
        }
    }

    /// The text tower of OpenAI CLIP ViT-B/32: transformers' defaults.
    pub fn vit_b32_text() -> Self {
        Self::default()
    }

    /// Parses a `config.json`; `path` only names the source in errors.
    pub fn from_json_str(json: &str, path: &Path) -> Result<Self, Error> {
        let config: Self = crate::load::parse_json(json, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads `text_encoder/config.json` (or any CLIP text config file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::from_json_str(&crate::load::read_to_string(path)?, path)
    }

    fn validate(&self, path: &Path) -> Result<(), Error> {
        let unsupported = |field: &str, value: String, reason: &str| Error::UnsupportedConfig {
            path: path.to_path_buf(),
            field: field.into(),
            value,
            reason: reason.into(),
        };
        let fields = Fields::new(path);
        fields.size("vocab_size", self.vocab_size, MAX_VOCAB)?;
        fields.size("hidden_size", self.hidden_size, MAX_WIDTH)?;
        fields.size("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH)?;
        fields.size("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS)?;
        fields.size(
            "max_position_embeddings",
            self.max_position_embeddings,
            MAX_POSITIONS,
        )?;
        if let Some(d) = self.projection_dim {
            fields.size("projection_dim", d, MAX_WIDTH)?;
        }
        fields.positive("layer_norm_eps", self.layer_norm_eps)?;
        HiddenAct::parse(&self.hidden_act).ok_or_else(|| {
            unsupported(
                "hidden_act",
                self.hidden_act.clone(),
                "supported: quick_gelu, gelu",
            )
        })?;
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(unsupported(
                "num_attention_heads",
                self.num_attention_heads.to_string(),
                "must divide hidden_size",
            ));
        }
        Ok(())
    }

    /// The encoder-stack settings (shared with the vision tower).
    pub fn encoder(&self) -> CLIPEncoderConfig {
        CLIPEncoderConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            hidden_act: HiddenAct::parse(&self.hidden_act).unwrap_or(HiddenAct::QuickGelu),
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// transformers' `CLIPConfig` (`config.json` of a `CLIPModel`: `text_config`, `vision_config`,
/// `projection_dim`, `logit_scale_init_value`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CLIPConfig {
    /// The text tower.
    pub text_config: CLIPTextConfig,
    /// The vision tower.
    pub vision_config: CLIPVisionConfig,
    /// Width of both projections.
    pub projection_dim: usize,
    /// `logit_scale` before loading (ln(1/0.07)).
    pub logit_scale_init_value: f32,
}

impl Default for CLIPConfig {
    fn default() -> Self {
        Self {
            text_config: CLIPTextConfig::default(),
            vision_config: CLIPVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

impl CLIPConfig {
    /// Reads a `CLIPModel` `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let config: Self = crate::load::read_json(path)?;
        let fields = Fields::new(path);
        fields.size("projection_dim", config.projection_dim, MAX_WIDTH)?;
        fields.finite(
            "logit_scale_init_value",
            f64::from(config.logit_scale_init_value),
        )?;
        config.text_config.validate(path)?;
        config.vision_config.encoder(path)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_transformers_4_sd15_text_encoder_config() {
        let json = r#"{"_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
            "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu",
            "hidden_size": 768, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
            "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768,
            "torch_dtype": "float32", "transformers_version": "4.30.0", "vocab_size": 49408}"#;
        let config = CLIPTextConfig::from_json_str(json, Path::new("config.json")).expect("parse");
        assert_eq!(config.eos_token_id.first(), 2);
        assert_eq!(
            CLIPTextConfig {
                eos_token_id: EosTokenId::One(49407),
                ..config
            },
            CLIPTextConfig::vit_l14_text()
        );
    }

    #[test]
    fn eos_list_and_defaults() {
        let config =
            CLIPTextConfig::from_json_str(r#"{"eos_token_id": [49407, 1]}"#, Path::new("c.json"))
                .expect("parse");
        assert_eq!(
            (
                config.eos_token_id.first(),
                config.hidden_size,
                config.vocab_size
            ),
            (49407, 512, 49408)
        );
    }

    #[test]
    fn unsupported_activation_names_file_and_field() {
        let err =
            CLIPTextConfig::from_json_str(r#"{"hidden_act": "relu"}"#, Path::new("te/config.json"))
                .expect_err("relu is not supported");
        let message = err.to_string();
        assert!(
            message.contains("te/config.json") && message.contains("hidden_act"),
            "{message}"
        );
    }
}
