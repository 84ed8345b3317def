//! transformers' CLIP vision tower (`CLIPVisionModel`, `CLIPVisionModelWithProjection`) and the dual
//! encoder `CLIPModel` (text + vision + projections + `logit_scale`). Checkpoint keys:
//! `vision_model.embeddings.{patch_embedding.weight, class_embedding, position_embedding.weight}`,
//! `vision_model.pre_layrnorm` (transformers' spelling), `vision_model.encoder.layers.N.…`,
//! `vision_model.post_layernorm`, `visual_projection.weight`, `text_projection.weight`, `logit_scale`.

use std::path::Path;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::Deserialize;

use super::config::CLIPConfig;
use super::encoder::{CLIPEncoder, CLIPEncoderConfig, HiddenAct};
use super::load_clip_safetensors_with;
use super::text::{CLIPTextOutput, CLIPTextTransformer};
use crate::Error;
use crate::bounds::{Fields, MAX_LAYERS, MAX_SAMPLE_SIZE, MAX_WIDTH};

/// transformers 5 saves a bare `CLIPVisionModel` without the `vision_model.` prefix.
const UNPREFIXED_VISION_KEYS: (&str, &str) = (
    r"^(embeddings|encoder|pre_layrnorm|post_layernorm)\.",
    "vision_model.$1.",
);

/// The fields of transformers' `CLIPVisionConfig` that shape the model, with its defaults (ViT-B/32).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CLIPVisionConfig {
    /// Width `d` (768 for ViT-B/32, 1024 for ViT-L/14, 1280 for ViT-H/14).
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Width of `visual_projection` (`CLIPVisionModelWithProjection`).
    pub projection_dim: Option<usize>,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Input side (224).
    pub image_size: usize,
    /// Patch side (32, 14).
    pub patch_size: usize,
    /// `quick_gelu` (OpenAI) or `gelu` (OpenCLIP ViT-H/14).
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for CLIPVisionConfig {
    /// transformers' `CLIPVisionConfig()` defaults (ViT-B/32).
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: Some(512),
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl CLIPVisionConfig {
    /// OpenAI CLIP ViT-B/32.
    pub fn vit_b32() -> Self {
        Self::default()
    }

    /// OpenAI CLIP ViT-L/14: 24 layers, width 1024, 16 heads, MLP 4096, patch 14, projection 768.
    pub fn vit_l14() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            projection_dim: Some(768),
            num_hidden_layers: 24,
            num_attention_heads: 16,
            patch_size: 14,
            ..Self::default()
        }
    }

    /// OpenCLIP ViT-H/14 (PickScore, HPSv2): 32 layers, width 1280, 16 heads, MLP 5120, patch 14,
    /// exact gelu, projection 1024.
    pub fn vit_h14() -> Self {
        Self {
            hidden_size: 1280,
            intermediate_size: 5120,
            projection_dim: Some(1024),
            num_hidden_layers: 32,
            num_attention_heads: 16,
            patch_size: 14,
            hidden_act: "gelu".into(),
            ..Self::default()
        }
    }

    /// Reads a `config.json` of a `CLIPVisionModel`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let config: Self = crate::load::read_json(path)?;
        config.encoder(path)?;
        Ok(config)
    }

    /// The encoder settings; an unsupported activation or head count names `path`.
    pub(crate) fn encoder(&self, path: &Path) -> Result<CLIPEncoderConfig, Error> {
        let unsupported = |field: &str, value: String, reason: &str| Error::UnsupportedConfig {
            path: path.to_path_buf(),
            field: field.into(),
            value,
            reason: reason.into(),
        };
        let fields = Fields::new(path);
        fields.size("hidden_size", self.hidden_size, MAX_WIDTH)?;
        fields.size("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH)?;
        fields.size("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS)?;
        fields.size("num_channels", self.num_channels, MAX_WIDTH)?;
        fields.size("image_size", self.image_size, MAX_SAMPLE_SIZE)?;
        if let Some(d) = self.projection_dim {
            fields.size("projection_dim", d, MAX_WIDTH)?;
        }
        fields.positive("layer_norm_eps", self.layer_norm_eps)?;
        let act = HiddenAct::parse(&self.hidden_act).ok_or_else(|| {
            unsupported(
                "hidden_act",
                self.hidden_act.clone(),
                "supported: quick_gelu, gelu",
            )
        })?;
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            let heads = self.num_attention_heads.to_string();
            return Err(unsupported(
                "num_attention_heads",
                heads,
                "must divide hidden_size",
            ));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            let patch = self.patch_size.to_string();
            return Err(unsupported("patch_size", patch, "must divide image_size"));
        }
        Ok(CLIPEncoderConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            hidden_act: act,
            layer_norm_eps: self.layer_norm_eps,
        })
    }

    /// Builds the vision transformer with freshly initialised weights.
    ///
    /// # Panics
    /// On a config that [`CLIPVisionConfig::from_file`] would reject.
    pub fn init_transformer(&self, device: &Device) -> CLIPVisionTransformer {
        let encoder = self
            .encoder(Path::new("<config>"))
            .unwrap_or_else(|e| panic!("CLIPVisionConfig: {e}"));
        let (d, p) = (self.hidden_size, self.patch_size);
        let positions = (self.image_size / p).pow(2) + 1;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        CLIPVisionTransformer {
            embeddings: CLIPVisionEmbeddings {
                class_embedding: Param::from_tensor(Tensor::zeros([d], device)),
                patch_embedding: Conv2dConfig::new([self.num_channels, d], [p, p])
                    .with_stride([p, p])
                    .with_bias(false)
                    .init(device),
                position_embedding: EmbeddingConfig::new(positions, d).init(device),
            },
            pre_layrnorm: norm(),
            encoder: encoder.init(device),
            post_layernorm: norm(),
        }
    }

    /// Builds `CLIPVisionModel` with freshly initialised weights.
    pub fn init(&self, device: &Device) -> CLIPVisionModel {
        CLIPVisionModel {
            vision_model: self.init_transformer(device),
        }
    }

    /// Builds `CLIPVisionModelWithProjection` (`projection_dim`, or `hidden_size` when unset).
    pub fn init_with_projection(&self, device: &Device) -> CLIPVisionModelWithProjection {
        let projection = self.projection_dim.unwrap_or(self.hidden_size);
        CLIPVisionModelWithProjection {
            vision_model: self.init_transformer(device),
            visual_projection: no_bias_linear(self.hidden_size, projection, device),
        }
    }
}

fn no_bias_linear(input: usize, output: usize, device: &Device) -> Linear {
    LinearConfig::new(input, output)
        .with_bias(false)
        .init(device)
}

/// Patch embedding (a stride-`p` convolution without bias), a learned class token, and learned
/// absolute position embeddings.
#[derive(Module, Debug)]
pub struct CLIPVisionEmbeddings {
    /// The class token `[d]`.
    pub class_embedding: Param<Tensor<1>>,
    /// `Conv2d(channels, d, p, stride p, bias=False)`.
    pub patch_embedding: Conv2d,
    /// `[(image_size / p)² + 1, d]`.
    pub position_embedding: Embedding,
}

impl CLIPVisionEmbeddings {
    /// # Shapes
    /// - `pixel_values`: `[batch, 3, image_size, image_size]` → `[batch, 1 + patches, d]`
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let patches = self.patch_embedding.forward(pixel_values);
        let [b, d, gh, gw] = patches.dims();
        let positions = self.position_embedding.weight.dims()[0];
        assert_eq!(
            gh * gw + 1,
            positions,
            "CLIP vision: {gh}×{gw} patches + class token do not match {positions} position embeddings \
             (wrong image size?)"
        );
        let patches = patches.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .repeat_dim(0, b);
        let position = self.position_embedding.weight.val().unsqueeze_dim::<3>(0);
        Tensor::cat(vec![class, patches], 1) + position
    }
}

/// The outputs of the vision tower.
#[derive(Debug, Clone)]
pub struct CLIPVisionOutput {
    /// `[batch, 1 + patches, d]` (before `post_layernorm`, as transformers returns it).
    pub last_hidden_state: Tensor<3>,
    /// `[batch, d]`: `post_layernorm` of the class token.
    pub pooler_output: Tensor<2>,
}

/// transformers' `CLIPVisionTransformer`: embeddings, `pre_layrnorm`, the (non-causal) encoder,
/// `post_layernorm` on the class token.
#[derive(Module, Debug)]
pub struct CLIPVisionTransformer {
    /// Patch, class and position embeddings.
    pub embeddings: CLIPVisionEmbeddings,
    /// LayerNorm before the encoder (transformers' spelling).
    pub pre_layrnorm: LayerNorm,
    /// The encoder stack.
    pub encoder: CLIPEncoder,
    /// LayerNorm of the pooled class token.
    pub post_layernorm: LayerNorm,
}

impl CLIPVisionTransformer {
    /// # Shapes
    /// - `pixel_values`: `[batch, 3, H, W]` (normalised) → `[batch, 1 + patches, d]`, `[batch, d]`
    pub fn forward(&self, pixel_values: Tensor<4>) -> CLIPVisionOutput {
        let x = self
            .pre_layrnorm
            .forward(self.embeddings.forward(pixel_values));
        let last_hidden_state = self.encoder.forward(x, false);
        let [b, _, d] = last_hidden_state.dims();
        let class = last_hidden_state
            .clone()
            .slice(s![.., 0..1, ..])
            .reshape([b, d]);
        CLIPVisionOutput {
            pooler_output: self.post_layernorm.forward(class),
            last_hidden_state,
        }
    }
}

/// transformers' `CLIPVisionModel`.
#[derive(Module, Debug)]
pub struct CLIPVisionModel {
    /// The transformer (`vision_model.*` keys).
    pub vision_model: CLIPVisionTransformer,
}

impl CLIPVisionModel {
    /// Loads a folder with `config.json` + `model.safetensors` (keys with or without the
    /// `vision_model.` prefix); strict.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let mut model = CLIPVisionConfig::from_file(dir.join("config.json"))?.init(device);
        load_clip_safetensors_with(
            &mut model,
            &weights_in(dir)?,
            &[UNPREFIXED_VISION_KEYS],
            &[],
        )?;
        Ok(model)
    }

    /// # Shapes
    /// - `pixel_values`: `[batch, 3, H, W]` → see [`CLIPVisionOutput`]
    pub fn forward(&self, pixel_values: Tensor<4>) -> CLIPVisionOutput {
        self.vision_model.forward(pixel_values)
    }
}

/// transformers' `CLIPVisionModelWithProjection`: the tower plus `visual_projection` (no bias).
#[derive(Module, Debug)]
pub struct CLIPVisionModelWithProjection {
    /// The transformer (`vision_model.*` keys).
    pub vision_model: CLIPVisionTransformer,
    /// `hidden_size → projection_dim`, no bias.
    pub visual_projection: Linear,
}

impl CLIPVisionModelWithProjection {
    /// Loads a folder with `config.json` + `model.safetensors`; strict.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let config = CLIPVisionConfig::from_file(dir.join("config.json"))?;
        let mut model = config.init_with_projection(device);
        load_clip_safetensors_with(
            &mut model,
            &weights_in(dir)?,
            &[UNPREFIXED_VISION_KEYS],
            &[],
        )?;
        Ok(model)
    }

    /// The image embedding `visual_projection(pooler_output)`.
    ///
    /// # Shapes
    /// - `pixel_values`: `[batch, 3, H, W]` → `[batch, projection_dim]`
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<2> {
        let pooled = self.vision_model.forward(pixel_values).pooler_output;
        self.visual_projection.forward(pooled)
    }
}

fn weights_in(dir: &Path) -> Result<std::path::PathBuf, Error> {
    ["model.safetensors", "model.fp16.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Io {
            path: dir.join("model.safetensors"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors in the folder",
            ),
        })
}

impl CLIPConfig {
    /// Builds `CLIPModel` with freshly initialised weights.
    pub fn init(&self, device: &Device) -> CLIPModel {
        let (t, v, p) = (&self.text_config, &self.vision_config, self.projection_dim);
        CLIPModel {
            text_model: t.init(device).text_model,
            vision_model: v.init_transformer(device),
            text_projection: no_bias_linear(t.hidden_size, p, device),
            visual_projection: no_bias_linear(v.hidden_size, p, device),
            logit_scale: self.logit_scale_init_value,
        }
    }
}

/// transformers' `CLIPModel`: both towers, both projections and the learned temperature.
#[derive(Module, Debug)]
pub struct CLIPModel {
    /// The text transformer (`text_model.*`).
    pub text_model: CLIPTextTransformer,
    /// The vision transformer (`vision_model.*`).
    pub vision_model: CLIPVisionTransformer,
    /// `text hidden → projection_dim`, no bias.
    pub text_projection: Linear,
    /// `vision hidden → projection_dim`, no bias.
    pub visual_projection: Linear,
    /// `ln(temperature⁻¹)`: the logits are `exp(logit_scale) · cos` (a frozen scalar here).
    pub logit_scale: f32,
}

impl CLIPModel {
    /// Loads a transformers `CLIPModel` folder: `config.json` + `model.safetensors` (or `.fp16`);
    /// strict, `logit_scale` read from the file.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let mut model = CLIPConfig::from_file(dir.join("config.json"))?.init(device);
        model.load_safetensors(&weights_in(dir)?)?;
        Ok(model)
    }

    /// Loads weights in place, strictly (transformers key names; `position_ids` buffers ignored).
    pub fn load_safetensors(&mut self, path: &Path) -> Result<(), Error> {
        let extra = load_clip_safetensors_with(self, path, &[], &["logit_scale"])?;
        self.logit_scale = extra[0];
        Ok(())
    }

    /// `get_image_features`: the projected image embedding (not normalised).
    ///
    /// # Shapes
    /// - `pixel_values`: `[batch, 3, H, W]` → `[batch, projection_dim]`
    pub fn get_image_features(&self, pixel_values: Tensor<4>) -> Tensor<2> {
        let pooled = self.vision_model.forward(pixel_values).pooler_output;
        self.visual_projection.forward(pooled)
    }

    /// `get_text_features`: the projected text embedding (not normalised).
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` → `[batch, projection_dim]`
    pub fn get_text_features(&self, input_ids: Tensor<2, Int>) -> Tensor<2> {
        let CLIPTextOutput { pooler_output, .. } = self.text_model.forward(input_ids);
        self.text_projection.forward(pooler_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> CLIPVisionConfig {
        CLIPVisionConfig {
            hidden_size: 8,
            intermediate_size: 12,
            projection_dim: Some(4),
            num_hidden_layers: 1,
            num_attention_heads: 2,
            image_size: 16,
            patch_size: 8,
            ..CLIPVisionConfig::default()
        }
    }

    #[test]
    fn shapes_and_pooling_of_the_class_token() {
        let device = Device::flex();
        let model = tiny().init_with_projection(&device);
        let out = model
            .vision_model
            .forward(Tensor::ones([2, 3, 16, 16], &device));
        assert_eq!(
            (out.last_hidden_state.dims(), out.pooler_output.dims()),
            ([2, 5, 8], [2, 8])
        );
        assert_eq!(
            model.forward(Tensor::ones([2, 3, 16, 16], &device)).dims(),
            [2, 4]
        );
    }

    #[test]
    fn patch_size_must_divide_image_size() {
        let config = CLIPVisionConfig {
            patch_size: 5,
            ..tiny()
        };
        let err = config
            .encoder(Path::new("v/config.json"))
            .expect_err("5 ∤ 16");
        assert!(err.to_string().contains("patch_size"), "{err}");
    }
}
