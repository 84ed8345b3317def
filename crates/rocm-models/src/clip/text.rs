//! transformers' `CLIPTextModel` and `CLIPTextModelWithProjection` (checkpoint keys under
//! `text_model.`, plus `text_projection.weight`).

use std::path::Path;

use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use super::config::CLIPTextConfig;
use super::encoder::CLIPEncoder;
use super::load_clip_safetensors;
use crate::Error;

/// Token + learned absolute position embeddings.
#[derive(Module, Debug)]
pub struct CLIPTextEmbeddings {
    /// `[vocab_size, d]`.
    pub token_embedding: Embedding,
    /// `[max_position_embeddings, d]`.
    pub position_embedding: Embedding,
}

impl CLIPTextEmbeddings {
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` (seq ≤ max_position_embeddings) → `[batch, seq, d]`
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, n] = input_ids.dims();
        let max = self.position_embedding.weight.dims()[0];
        assert!(
            n <= max,
            "CLIP text: sequence length {n} exceeds max_position_embeddings {max}"
        );
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..n as i64, &device).reshape([1, n]);
        self.token_embedding.forward(input_ids) + self.position_embedding.forward(positions)
    }
}

/// The text transformer (transformers 4.x `CLIPTextTransformer`): embeddings, causal pre-LN
/// encoder, final LayerNorm, pooling at the first end-of-text token.
#[derive(Module, Debug)]
pub struct CLIPTextTransformer {
    /// Token and position embeddings.
    pub embeddings: CLIPTextEmbeddings,
    /// The encoder stack (causal).
    pub encoder: CLIPEncoder,
    /// LayerNorm on every position of the output.
    pub final_layer_norm: LayerNorm,
    /// `eos_token_id` of the config (2 = legacy argmax pooling).
    pub eos_token_id: i64,
}

/// The outputs of the text model.
#[derive(Debug, Clone)]
pub struct CLIPTextOutput {
    /// `[batch, seq, d]`: what the UNet cross-attends to.
    pub last_hidden_state: Tensor<3>,
    /// `[batch, d]`: `last_hidden_state` at each row's first `eos_token_id`.
    pub pooler_output: Tensor<2>,
}

impl CLIPTextTransformer {
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - output: `last_hidden_state` `[batch, seq, d]`, `pooler_output` `[batch, d]`
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> CLIPTextOutput {
        let hidden = self.embeddings.forward(input_ids.clone());
        let last_hidden_state = self
            .final_layer_norm
            .forward(self.encoder.forward(hidden, true));
        let pooler_output = pool_at(last_hidden_state.clone(), &self.pool_positions(input_ids));
        CLIPTextOutput {
            last_hidden_state,
            pooler_output,
        }
    }

    /// Per row: the first position of `eos_token_id` (0 when absent, as `argmax` gives), or for a
    /// legacy config (`eos_token_id == 2`) the position of the largest id.
    fn pool_positions(&self, input_ids: Tensor<2, Int>) -> Vec<usize> {
        let [b, n] = input_ids.dims();
        let ids = input_ids
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_default();
        (0..b)
            .map(|i| {
                let row = ids.get(i * n..(i + 1) * n).unwrap_or_default();
                if self.eos_token_id == 2 {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max).unwrap_or(0)
                } else {
                    row.iter()
                        .position(|&t| t == self.eos_token_id)
                        .unwrap_or(0)
                }
            })
            .collect()
    }
}

/// `x[i, positions[i], :]` for every row `i` (differentiable: a `select` on the flattened rows).
fn pool_at(x: Tensor<3>, positions: &[usize]) -> Tensor<2> {
    let [b, n, d] = x.dims();
    let rows: Vec<i64> = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (i * n + p) as i64)
        .collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(rows, [b]), &x.device());
    x.reshape([b * n, d]).select(0, index)
}

/// transformers' `CLIPTextModel`: the Stable Diffusion text encoder.
#[derive(Module, Debug)]
pub struct CLIPTextModel {
    /// The transformer (`text_model.*` keys).
    pub text_model: CLIPTextTransformer,
}

impl CLIPTextConfig {
    /// Builds the text model with freshly initialised weights.
    pub fn init(&self, device: &Device) -> CLIPTextModel {
        CLIPTextModel {
            text_model: self.init_transformer(device),
        }
    }

    /// Builds `CLIPTextModelWithProjection` (`projection_dim`, or `hidden_size` when unset).
    pub fn init_with_projection(&self, device: &Device) -> CLIPTextModelWithProjection {
        let projection = self.projection_dim.unwrap_or(self.hidden_size);
        CLIPTextModelWithProjection {
            text_model: self.init_transformer(device),
            text_projection: LinearConfig::new(self.hidden_size, projection)
                .with_bias(false)
                .init(device),
        }
    }

    fn init_transformer(&self, device: &Device) -> CLIPTextTransformer {
        let d = self.hidden_size;
        CLIPTextTransformer {
            embeddings: CLIPTextEmbeddings {
                token_embedding: EmbeddingConfig::new(self.vocab_size, d).init(device),
                position_embedding: EmbeddingConfig::new(self.max_position_embeddings, d)
                    .init(device),
            },
            encoder: self.encoder().init(device),
            final_layer_norm: LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            eos_token_id: self.eos_token_id.first(),
        }
    }
}

/// Weight files tried by `from_pretrained`, in order.
pub const TEXT_ENCODER_WEIGHT_FILES: [&str; 2] = ["model.safetensors", "model.fp16.safetensors"];

fn weights_in(dir: &Path) -> Result<std::path::PathBuf, Error> {
    TEXT_ENCODER_WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Io {
            path: dir.join(TEXT_ENCODER_WEIGHT_FILES[0]),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors (or .fp16) in the folder",
            ),
        })
}

impl CLIPTextModel {
    /// Loads a transformers/diffusers `text_encoder/` folder: `config.json` + `model.safetensors`
    /// (or `model.fp16.safetensors`, cast to f32).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let config = CLIPTextConfig::from_file(dir.join("config.json"))?;
        let mut model = config.init(device);
        model.load_safetensors(&weights_in(dir)?)?;
        Ok(model)
    }

    /// Loads weights in place, strictly: keys `text_model.*` (transformers 4.x, hub) or without the
    /// prefix (transformers 5 `save_pretrained`); the `position_ids` buffer is ignored; fp16 is cast.
    pub fn load_safetensors(&mut self, path: &Path) -> Result<(), Error> {
        load_clip_safetensors(self, path)
    }

    /// # Shapes
    /// - `input_ids`: `[batch, seq]` → `last_hidden_state` `[batch, seq, d]`, `pooler_output` `[batch, d]`
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> CLIPTextOutput {
        self.text_model.forward(input_ids)
    }
}

/// transformers' `CLIPTextModelWithProjection`: the text tower plus `text_projection` (no bias).
#[derive(Module, Debug)]
pub struct CLIPTextModelWithProjection {
    /// The transformer (`text_model.*` keys).
    pub text_model: CLIPTextTransformer,
    /// `hidden_size → projection_dim`, no bias.
    pub text_projection: Linear,
}

impl CLIPTextModelWithProjection {
    /// Loads a folder with `config.json` + `model.safetensors` (or `.fp16`).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let config = CLIPTextConfig::from_file(dir.join("config.json"))?;
        let mut model = config.init_with_projection(device);
        model.load_safetensors(&weights_in(dir)?)?;
        Ok(model)
    }

    /// Loads weights in place, strictly (see [`CLIPTextModel::load_safetensors`]).
    pub fn load_safetensors(&mut self, path: &Path) -> Result<(), Error> {
        load_clip_safetensors(self, path)
    }

    /// Returns the text outputs and `text_embeds = text_projection(pooler_output)`.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` → (`[batch, seq, d]`, `[batch, d]`), `text_embeds` `[batch, projection_dim]`
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> (CLIPTextOutput, Tensor<2>) {
        let output = self.text_model.forward(input_ids);
        let embeds = self.text_projection.forward(output.pooler_output.clone());
        (output, embeds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> CLIPTextConfig {
        CLIPTextConfig {
            vocab_size: 50,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 6,
            eos_token_id: super::super::config::EosTokenId::One(7),
            ..CLIPTextConfig::default()
        }
    }

    #[test]
    fn pools_at_the_first_eos_and_keeps_shapes() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let ids = Tensor::<2, Int>::from_data(
            // the first eos (7) is at 2; argmax(ids) would pick 1
            TensorData::new(vec![6i64, 30, 7, 7, 7, 7], [1, 6]),
            &device,
        );
        let out = model.forward(ids);
        assert_eq!(
            (out.last_hidden_state.dims(), out.pooler_output.dims()),
            ([1, 6, 8], [1, 8])
        );
        let at2 = out.last_hidden_state.slice(s![0, 2, ..]).reshape([1, 8]);
        assert_eq!(out.pooler_output.into_data(), at2.into_data());
    }

    #[test]
    fn legacy_eos_two_pools_at_argmax() {
        let device = Device::flex();
        let mut model = tiny().init(&device);
        model.text_model.eos_token_id = 2;
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(vec![5i64, 40, 7, 1, 1, 1], [1, 6]),
            &device,
        );
        assert_eq!(model.text_model.pool_positions(ids), [1]);
    }
}
