//! diffusers `models/transformers/transformer_2d.py`: `Transformer2DModel` on continuous inputs.

use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use rocm_lora::{
    Conv2d, Conv2dConfig, Linear, LinearConfig, LoraContainer, LoraLayerMut, LoraLayerRef,
    impl_lora_container,
};

use crate::attention::{BasicTransformerBlock, BasicTransformerBlockConfig};

/// `proj_in`/`proj_out` of a [`Transformer2DModel`]: a 1×1 convolution
/// (`use_linear_projection = false`, SD 1.5) or a Linear (SD 2.x). Loaded with enum variants
/// skipped, so the keys are `proj_in.weight` either way.
#[derive(Module, Debug)]
pub enum Projection {
    /// 1×1 convolution on `[B, C, H, W]`.
    Conv(Conv2d),
    /// Linear on `[B, H·W, C]`.
    Linear(Linear),
}

impl LoraContainer for Projection {
    fn visit_lora_layers(&self, path: &str, f: &mut dyn FnMut(&str, LoraLayerRef<'_>)) {
        match self {
            Self::Conv(c) => c.visit_lora_layers(path, f),
            Self::Linear(l) => l.visit_lora_layers(path, f),
        }
    }
    fn visit_lora_layers_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, LoraLayerMut<'_>)) {
        match self {
            Self::Conv(c) => c.visit_lora_layers_mut(path, f),
            Self::Linear(l) => l.visit_lora_layers_mut(path, f),
        }
    }
}

impl Projection {
    fn new(cin: usize, cout: usize, linear: bool, device: &Device) -> Self {
        if linear {
            Self::Linear(LinearConfig::new(cin, cout).init(device))
        } else {
            Self::Conv(Conv2dConfig::new([cin, cout], [1, 1]).init(device))
        }
    }
}

/// Configuration of a [`Transformer2DModel`].
#[derive(Config, Debug)]
pub struct Transformer2DModelConfig {
    /// Number of heads.
    pub num_attention_heads: usize,
    /// Width of one head.
    pub attention_head_dim: usize,
    /// Channels of the feature map.
    pub in_channels: usize,
    /// Width of the text embeddings.
    pub cross_attention_dim: usize,
    /// Number of `BasicTransformerBlock`s (`transformer_layers_per_block`).
    #[config(default = 1)]
    pub num_layers: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// Linear instead of 1×1-conv projections.
    #[config(default = false)]
    pub use_linear_projection: bool,
}

impl Transformer2DModelConfig {
    /// Builds the model with random weights.
    pub fn init(&self, device: &Device) -> Transformer2DModel {
        let inner = self.num_attention_heads * self.attention_head_dim;
        let block = BasicTransformerBlockConfig::new(
            inner,
            self.num_attention_heads,
            self.attention_head_dim,
            self.cross_attention_dim,
        );
        Transformer2DModel {
            norm: GroupNormConfig::new(self.norm_num_groups, self.in_channels)
                .with_epsilon(1e-6)
                .init(device),
            proj_in: Projection::new(self.in_channels, inner, self.use_linear_projection, device),
            transformer_blocks: (0..self.num_layers).map(|_| block.init(device)).collect(),
            proj_out: Projection::new(inner, self.in_channels, self.use_linear_projection, device),
        }
    }
}

/// A spatial transformer (Rombach et al. 2022): GroupNorm (eps 1e-6) → `proj_in` → tokens
/// `[B, H·W, inner]` → `BasicTransformerBlock`s → `proj_out` → plus the input.
///
/// # Shapes
/// - `x`, output: `[B, C, H, W]`; `encoder_hidden_states`: `[B, M, cross_attention_dim]`
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    /// GroupNorm (eps 1e-6).
    pub norm: GroupNorm,
    /// Input projection.
    pub proj_in: Projection,
    /// The transformer blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    /// Output projection.
    pub proj_out: Projection,
}
impl_lora_container!(Transformer2DModel {
    proj_in,
    transformer_blocks,
    proj_out
});

impl Transformer2DModel {
    /// Applies the model.
    pub fn forward(&self, x: Tensor<4>, encoder_hidden_states: &Tensor<3>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let normed = rocm_kernels::group_norm(&self.norm, x.clone());
        let to_tokens = |t: Tensor<4>| {
            let d = t.dims()[1];
            t.reshape([b, d, h * w]).swap_dims(1, 2)
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(normed)),
            Projection::Linear(lin) => lin.forward(to_tokens(normed)),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, encoder_hidden_states.clone());
        }
        let inner = tokens.dims()[2];
        let to_map = |t: Tensor<3>, d: usize| t.swap_dims(1, 2).reshape([b, d, h, w]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_map(tokens, inner)),
            Projection::Linear(lin) => to_map(lin.forward(tokens), c),
        };
        out + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{DIFFUSERS_REMAP, load_safetensors_strict};
    use burn::module::Param;
    use std::path::PathBuf;

    /// The inputs and output of the fixture, loaded by name through the same strict loader.
    #[derive(Module, Debug)]
    struct Io {
        x: Param<Tensor<4>>,
        ehs: Param<Tensor<3>>,
        out: Param<Tensor<4>>,
    }

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny-lcm")
            .join(name)
    }

    #[test]
    fn linear_projection_variant_matches_diffusers() {
        let device = Device::flex();
        let mut model = Transformer2DModelConfig::new(2, 8, 16, 8)
            .with_norm_num_groups(4)
            .with_use_linear_projection(true)
            .init(&device);
        let path = fixture("transformer_2d_linear.safetensors");
        load_safetensors_strict(&mut model, &path, &DIFFUSERS_REMAP).expect("strict load");
        assert!(matches!(model.proj_in, Projection::Linear(_)));
        let mut io = Io {
            x: Param::from_tensor(Tensor::zeros([1, 16, 4, 4], &device)),
            ehs: Param::from_tensor(Tensor::zeros([1, 5, 8], &device)),
            out: Param::from_tensor(Tensor::zeros([1, 16, 4, 4], &device)),
        };
        let path = fixture("transformer_2d_linear_io.safetensors");
        load_safetensors_strict(&mut io, &path, &[]).expect("io");
        let out = model.forward(io.x.val(), &io.ehs.val());
        let diff = (out - io.out.val()).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "{diff}");
    }
}
