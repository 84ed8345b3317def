//! The CLIP transformer encoder shared by the text and vision towers (transformers' `CLIPAttention`,
//! `CLIPMLP`, `CLIPEncoderLayer`, `CLIPEncoder`). Field names are transformers' attribute names, so a
//! Burn parameter path is the checkpoint key (`layers.3.self_attn.q_proj.weight`).

use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// The MLP activation (`hidden_act` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HiddenAct {
    /// OpenAI CLIP's `x · σ(1.702 x)`.
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

impl HiddenAct {
    /// Parses transformers' `ACT2FN` name (`quick_gelu`, `gelu`); other names are `None`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            _ => None,
        }
    }

    /// Applies the activation element-wise.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Self::Gelu => gelu(x),
        }
    }
}

/// Settings of a CLIP encoder stack (from `CLIPTextConfig` / `CLIPVisionConfig`).
#[derive(Config, Debug)]
pub struct CLIPEncoderConfig {
    /// Width `d`.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads (must divide `hidden_size`).
    pub num_attention_heads: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl CLIPEncoderConfig {
    /// Builds the encoder with freshly initialised weights.
    pub fn init(&self, device: &Device) -> CLIPEncoder {
        assert!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "CLIP encoder: hidden_size {} is not divisible by num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        let layers = (0..self.num_hidden_layers)
            .map(|_| self.init_layer(device))
            .collect();
        CLIPEncoder { layers }
    }

    fn init_layer(&self, device: &Device) -> CLIPEncoderLayer {
        let d = self.hidden_size;
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        CLIPEncoderLayer {
            self_attn: CLIPAttention {
                q_proj: linear(d, d),
                k_proj: linear(d, d),
                v_proj: linear(d, d),
                out_proj: linear(d, d),
                num_heads: self.num_attention_heads,
            },
            layer_norm1: norm(),
            mlp: CLIPMLP {
                fc1: linear(d, self.intermediate_size),
                fc2: linear(self.intermediate_size, d),
                activation: self.hidden_act,
            },
            layer_norm2: norm(),
        }
    }
}

/// Multi-head self-attention with `1/√head_dim` scaling; causal for the text tower.
#[derive(Module, Debug)]
pub struct CLIPAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl CLIPAttention {
    /// `softmax(QKᵀ/√d_h [+ causal mask]) V`, heads concatenated, then `out_proj`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d]` → `[batch, seq, d]`
    pub fn forward(&self, x: Tensor<3>, causal: bool) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let heads = self.num_heads;
        let split = |t: Tensor<3>| t.reshape([b, n, heads, d / heads]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        let o = attention(q, k, v, None, None, options);
        self.out_proj.forward(o.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct CLIPMLP {
    /// `d → intermediate_size`.
    pub fc1: Linear,
    /// `intermediate_size → d`.
    pub fc2: Linear,
    /// The activation between them.
    #[module(skip)]
    pub activation: HiddenAct,
}

impl CLIPMLP {
    /// # Shapes
    /// - `x`: `[batch, seq, d]` → `[batch, seq, d]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(self.activation.apply(self.fc1.forward(x)))
    }
}

/// A pre-LayerNorm transformer block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct CLIPEncoderLayer {
    /// Self-attention.
    pub self_attn: CLIPAttention,
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// Feed-forward block.
    pub mlp: CLIPMLP,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
}

impl CLIPEncoderLayer {
    /// # Shapes
    /// - `x`: `[batch, seq, d]` → `[batch, seq, d]`
    pub fn forward(&self, x: Tensor<3>, causal: bool) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), causal);
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// The stack of [`CLIPEncoderLayer`]s (`encoder.layers.N` in checkpoints).
#[derive(Module, Debug)]
pub struct CLIPEncoder {
    /// The layers, in order.
    pub layers: Vec<CLIPEncoderLayer>,
}

impl CLIPEncoder {
    /// Runs every layer; `causal` masks attention to later positions (text tower).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d]` → `[batch, seq, d]`
    pub fn forward(&self, x: Tensor<3>, causal: bool) -> Tensor<3> {
        self.layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, causal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_gelu_matches_its_formula() {
        let device = Device::flex();
        let x = Tensor::<1>::from_floats([-2.0, 0.0, 1.0], &device);
        let y = HiddenAct::QuickGelu
            .apply(x)
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        let expected = [
            -2.0 / (1.0 + 3.404f32.exp()),
            0.0,
            1.0 / (1.0 + (-1.702f32).exp()),
        ];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn causal_attention_ignores_later_positions() {
        let device = Device::flex();
        let encoder = CLIPEncoderConfig::new(8, 16, 2, 2, HiddenAct::QuickGelu).init(&device);
        let x = Tensor::<3>::random(
            [1, 5, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let changed = Tensor::cat(
            vec![
                x.clone().slice(s![.., 0..3, ..]),
                Tensor::zeros([1, 2, 8], &device),
            ],
            1,
        );
        let (a, b) = (encoder.forward(x, true), encoder.forward(changed, true));
        let diff = (a.slice(s![.., 0..3, ..]) - b.slice(s![.., 0..3, ..]))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff < 1e-6, "prefix changed by {diff}");
    }
}
