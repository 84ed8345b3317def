//! diffusers `models/unets/unet_2d_blocks.py`, the SD 1.5 family: `CrossAttnDownBlock2D`,
//! `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `UpBlock2D`, `CrossAttnUpBlock2D`.

use burn::prelude::*;
use rocm_lora::impl_lora_container;

use crate::downsampling::{Downsample2D, Downsample2DConfig};
use crate::resnet::{ResnetBlock2D, ResnetBlock2DConfig};
use crate::transformer_2d::{Transformer2DModel, Transformer2DModelConfig};
use crate::upsampling::{Upsample2D, Upsample2DConfig};

/// Configuration shared by the UNet's down, mid and up blocks (the arguments of diffusers'
/// `get_down_block` / `get_up_block` / `get_mid_block`).
#[derive(Config, Debug)]
pub struct UNetBlockConfig {
    /// Input channels (`in_channels`; for up blocks the skip channels of the last resnet).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the timestep embedding.
    pub temb_channels: usize,
    /// Number of resnets (`layers_per_block`, `+ 1` for up blocks; 1 for the mid block).
    pub num_layers: usize,
    /// Up blocks: channels coming from the previous up block.
    #[config(default = 0)]
    pub prev_output_channel: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub groups: usize,
    /// GroupNorm epsilon of the resnets.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Whether the block ends in a down/upsampler.
    #[config(default = true)]
    pub add_sample: bool,
    /// Number of heads of the cross-attention transformers; `None` for a plain resnet block.
    #[config(default = "None")]
    pub num_attention_heads: Option<usize>,
    /// Width of the text embeddings.
    #[config(default = 768)]
    pub cross_attention_dim: usize,
    /// Linear instead of 1×1-conv projections in the transformers.
    #[config(default = false)]
    pub use_linear_projection: bool,
    /// `BasicTransformerBlock`s per transformer.
    #[config(default = 1)]
    pub transformer_layers_per_block: usize,
    /// Mid block: `mid_block_scale_factor` (resnets' `output_scale_factor`).
    #[config(default = 1.0)]
    pub output_scale_factor: f64,
}

impl UNetBlockConfig {
    fn resnet(&self, cin: usize, device: &Device) -> ResnetBlock2D {
        ResnetBlock2DConfig::new(cin, self.out_channels)
            .with_temb_channels(Some(self.temb_channels))
            .with_groups(self.groups)
            .with_eps(self.eps)
            .with_output_scale_factor(self.output_scale_factor)
            .init(device)
    }

    fn transformer(&self, heads: usize, device: &Device) -> Transformer2DModel {
        Transformer2DModelConfig::new(
            heads,
            self.out_channels / heads,
            self.out_channels,
            self.cross_attention_dim,
        )
        .with_num_layers(self.transformer_layers_per_block)
        .with_norm_num_groups(self.groups)
        .with_use_linear_projection(self.use_linear_projection)
        .init(device)
    }

    fn attentions(&self, n: usize, device: &Device) -> Vec<Transformer2DModel> {
        match self.num_attention_heads {
            Some(heads) => (0..n).map(|_| self.transformer(heads, device)).collect(),
            None => Vec::new(),
        }
    }

    /// A `CrossAttnDownBlock2D` (with `num_attention_heads`) or a `DownBlock2D`.
    pub fn init_down(&self, device: &Device) -> UNetDownBlock {
        let resnets = (0..self.num_layers)
            .map(|i| {
                self.resnet(
                    if i == 0 {
                        self.in_channels
                    } else {
                        self.out_channels
                    },
                    device,
                )
            })
            .collect();
        let downsamplers = self
            .add_sample
            .then(|| Downsample2DConfig::new(self.out_channels, self.out_channels).init(device))
            .into_iter()
            .collect();
        let attentions = self.attentions(self.num_layers, device);
        UNetDownBlock {
            resnets,
            attentions,
            downsamplers,
        }
    }

    /// A `CrossAttnUpBlock2D` (with `num_attention_heads`) or an `UpBlock2D`.
    pub fn init_up(&self, device: &Device) -> UNetUpBlock {
        let n = self.num_layers;
        let resnets = (0..n)
            .map(|i| {
                let skip = if i == n - 1 {
                    self.in_channels
                } else {
                    self.out_channels
                };
                let cin = if i == 0 {
                    self.prev_output_channel
                } else {
                    self.out_channels
                };
                self.resnet(cin + skip, device)
            })
            .collect();
        let upsamplers = self
            .add_sample
            .then(|| Upsample2DConfig::new(self.out_channels, self.out_channels).init(device))
            .into_iter()
            .collect();
        UNetUpBlock {
            resnets,
            attentions: self.attentions(n, device),
            upsamplers,
        }
    }

    /// A `UNetMidBlock2DCrossAttn` on `in_channels` (= `out_channels`): `num_layers` transformers.
    pub fn init_mid(&self, device: &Device) -> UNetMidBlock2DCrossAttn {
        let resnets = (0..=self.num_layers)
            .map(|_| self.resnet(self.in_channels, device))
            .collect();
        UNetMidBlock2DCrossAttn {
            resnets,
            attentions: self.attentions(self.num_layers, device),
        }
    }
}

/// A down block: diffusers' `CrossAttnDownBlock2D` when `attentions` is non-empty, `DownBlock2D`
/// otherwise. Each resnet (followed by its transformer) and the downsampler emit a skip tensor.
///
/// # Shapes
/// - `x`: `[B, in_channels, H, W]` → `[B, out_channels, H/2, W/2]` (`H` without downsampler)
#[derive(Module, Debug)]
pub struct UNetDownBlock {
    /// The resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// The transformers after each resnet (empty in a `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// The downsampler (`downsamplers.0`), empty in the last block.
    pub downsamplers: Vec<Downsample2D>,
}
impl_lora_container!(UNetDownBlock {
    resnets,
    attentions,
    downsamplers
});

impl UNetDownBlock {
    /// Applies the block, pushing every skip tensor onto `skips`.
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        encoder_hidden_states: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, encoder_hidden_states);
            }
            skips.push(x.clone());
        }
        for down in &self.downsamplers {
            x = down.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// diffusers `UNetMidBlock2DCrossAttn`: `resnets.0`, then (`attentions.i`, `resnets.i+1`) pairs.
///
/// # Shapes
/// - `x`, output: `[B, C, H, W]`
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn {
    /// `num_layers + 1` resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// `num_layers` transformers.
    pub attentions: Vec<Transformer2DModel>,
}
impl_lora_container!(UNetMidBlock2DCrossAttn {
    resnets,
    attentions
});

impl UNetMidBlock2DCrossAttn {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, ehs: &Tensor<3>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(attn.forward(x, ehs), Some(temb));
        }
        x
    }
}

/// An up block: diffusers' `CrossAttnUpBlock2D` when `attentions` is non-empty, `UpBlock2D`
/// otherwise. Each resnet takes the previous output concatenated (channels) with a skip tensor
/// popped from the end of the down path.
///
/// # Shapes
/// - `x`: `[B, prev_output_channel, H, W]` → `[B, out_channels, 2H, 2W]` (`H` without upsampler)
#[derive(Module, Debug)]
pub struct UNetUpBlock {
    /// The resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// The transformers after each resnet (empty in an `UpBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// The upsampler (`upsamplers.0`), empty in the last block.
    pub upsamplers: Vec<Upsample2D>,
}
impl_lora_container!(UNetUpBlock {
    resnets,
    attentions,
    upsamplers
});

impl UNetUpBlock {
    /// Applies the block, popping one skip tensor per resnet.
    ///
    /// # Panics
    /// If `skips` runs out (the block does not match the down path).
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        encoder_hidden_states: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("UNetUpBlock: no skip tensor left for this resnet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, encoder_hidden_states);
            }
        }
        // diffusers' `upsample_size`: match the next skip tensor when sizes are not powers of 2.
        let size = skips.last().map(|s| {
            let [_, _, h, w] = s.dims();
            [h, w]
        });
        for up in &self.upsamplers {
            x = match size {
                Some(size) => up.forward_to(x, size),
                None => up.forward(x),
            };
        }
        x
    }
}
