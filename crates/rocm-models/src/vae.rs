//! diffusers `models/autoencoders/vae.py` (`Encoder`, `Decoder`) and the VAE blocks of
//! `unet_2d_blocks.py` (`DownEncoderBlock2D`, `UpDecoderBlock2D`, `UNetMidBlock2D`).

use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use rocm_lora::{Conv2d, Conv2dConfig, impl_lora_container};

use crate::attention::{Attention, AttentionConfig};
use crate::downsampling::{Downsample2D, Downsample2DConfig};
use crate::resnet::{ResnetBlock2D, ResnetBlock2DConfig};
use crate::upsampling::{Upsample2D, Upsample2DConfig};

/// GroupNorm epsilon of every VAE norm.
const VAE_EPS: f64 = 1e-6;

fn resnet(cin: usize, cout: usize, groups: usize, device: &Device) -> ResnetBlock2D {
    ResnetBlock2DConfig::new(cin, cout)
        .with_groups(groups)
        .with_eps(VAE_EPS)
        .init(device)
}

fn conv3(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding([1, 1])
        .init(device)
}

/// diffusers `UNetMidBlock2D` without timestep embedding: `resnets.0 → attentions.0 → resnets.1`,
/// the attention single-headed over `H·W` positions with its own GroupNorm and residual.
///
/// # Shapes
/// - `x`, output: `[B, C, H, W]`
#[derive(Module, Debug)]
pub struct UNetMidBlock2D {
    /// Spatial self-attentions (one; empty when `mid_block_add_attention` is false).
    pub attentions: Vec<Attention>,
    /// Two resnets.
    pub resnets: Vec<ResnetBlock2D>,
}
impl_lora_container!(UNetMidBlock2D {
    attentions,
    resnets
});

impl UNetMidBlock2D {
    /// Builds the block on `channels` with random weights.
    pub fn new(channels: usize, groups: usize, add_attention: bool, device: &Device) -> Self {
        let attention = AttentionConfig::new(channels)
            .with_heads(1)
            .with_dim_head(channels)
            .with_bias(true)
            .with_norm_num_groups(Some(groups))
            .with_eps(VAE_EPS);
        Self {
            attentions: add_attention
                .then(|| attention.init(device))
                .into_iter()
                .collect(),
            resnets: (0..2)
                .map(|_| resnet(channels, channels, groups, device))
                .collect(),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, None);
        for (i, resnet) in self.resnets[1..].iter().enumerate() {
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward_spatial(x);
            }
            x = resnet.forward(x, None);
        }
        x
    }
}

/// A VAE resolution level: diffusers' `DownEncoderBlock2D` (resnets, then a downsampler padded
/// right/bottom) or `UpDecoderBlock2D` (resnets, then an upsampler).
///
/// # Shapes
/// - `x`: `[B, in, H, W]` → `[B, out, H/2 | 2H | H, …]`
#[derive(Module, Debug)]
pub struct VaeBlock {
    /// The resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// `downsamplers.0` (encoder levels but the last).
    pub downsamplers: Vec<Downsample2D>,
    /// `upsamplers.0` (decoder levels but the last).
    pub upsamplers: Vec<Upsample2D>,
}
impl_lora_container!(VaeBlock {
    resnets,
    downsamplers,
    upsamplers
});

impl VaeBlock {
    fn resnets(
        n: usize,
        cin: usize,
        cout: usize,
        groups: usize,
        device: &Device,
    ) -> Vec<ResnetBlock2D> {
        (0..n)
            .map(|i| resnet(if i == 0 { cin } else { cout }, cout, groups, device))
            .collect()
    }

    /// A `DownEncoderBlock2D`.
    pub fn down_encoder(
        n: usize,
        cin: usize,
        cout: usize,
        groups: usize,
        down: bool,
        device: &Device,
    ) -> Self {
        let ds = Downsample2DConfig::new(cout, cout).with_padding(0);
        Self {
            resnets: Self::resnets(n, cin, cout, groups, device),
            downsamplers: down.then(|| ds.init(device)).into_iter().collect(),
            upsamplers: Vec::new(),
        }
    }

    /// An `UpDecoderBlock2D`.
    pub fn up_decoder(
        n: usize,
        cin: usize,
        cout: usize,
        groups: usize,
        up: bool,
        device: &Device,
    ) -> Self {
        let us = Upsample2DConfig::new(cout, cout);
        Self {
            resnets: Self::resnets(n, cin, cout, groups, device),
            downsamplers: Vec::new(),
            upsamplers: up.then(|| us.init(device)).into_iter().collect(),
        }
    }

    /// Applies the block.
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        for down in &self.downsamplers {
            x = down.forward(x);
        }
        for up in &self.upsamplers {
            x = up.forward(x);
        }
        x
    }
}

/// diffusers `Encoder` (double_z): `conv_in → down_blocks → mid_block → conv_out(silu(norm))`,
/// emitting `2 · latent_channels` moments.
///
/// # Shapes
/// - `x`: `[B, in_channels, H, W]` → `[B, 2 · latent_channels, H / 2^(L−1), W / 2^(L−1)]`
#[derive(Module, Debug)]
pub struct Encoder {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// `DownEncoderBlock2D`s.
    pub down_blocks: Vec<VaeBlock>,
    /// Bottleneck.
    pub mid_block: UNetMidBlock2D,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution.
    pub conv_out: Conv2d,
}
impl_lora_container!(Encoder {
    conv_in,
    down_blocks,
    mid_block,
    conv_out
});

impl Encoder {
    /// Builds the encoder with random weights.
    pub fn new(config: &crate::AutoencoderKLConfig, device: &Device) -> Self {
        let ch = &config.block_out_channels;
        let (g, last) = (config.norm_num_groups, ch[ch.len() - 1]);
        let down_blocks = (0..ch.len())
            .map(|i| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                VaeBlock::down_encoder(
                    config.layers_per_block,
                    cin,
                    ch[i],
                    g,
                    i + 1 < ch.len(),
                    device,
                )
            })
            .collect();
        Self {
            conv_in: conv3(config.in_channels, ch[0], device),
            down_blocks,
            mid_block: UNetMidBlock2D::new(last, g, config.mid_block_add_attention, device),
            conv_norm_out: GroupNormConfig::new(g, last)
                .with_epsilon(VAE_EPS)
                .init(device),
            conv_out: conv3(last, 2 * config.latent_channels, device),
        }
    }

    /// Applies the encoder.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv_in.forward(x);
        for block in &self.down_blocks {
            x = block.forward(x);
        }
        let x = self.mid_block.forward(x);
        self.conv_out
            .forward(rocm_kernels::group_norm_silu(&self.conv_norm_out, x))
    }
}

/// diffusers `Decoder`: `conv_in → mid_block → up_blocks → conv_out(silu(norm))`.
///
/// # Shapes
/// - `z`: `[B, latent_channels, h, w]` → `[B, out_channels, h · 2^(L−1), w · 2^(L−1)]`
#[derive(Module, Debug)]
pub struct Decoder {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// Bottleneck.
    pub mid_block: UNetMidBlock2D,
    /// `UpDecoderBlock2D`s, deepest first.
    pub up_blocks: Vec<VaeBlock>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution.
    pub conv_out: Conv2d,
}
impl_lora_container!(Decoder {
    conv_in,
    mid_block,
    up_blocks,
    conv_out
});

impl Decoder {
    /// Builds the decoder with random weights.
    pub fn new(config: &crate::AutoencoderKLConfig, device: &Device) -> Self {
        let ch = &config.block_out_channels;
        let (g, n) = (config.norm_num_groups, ch.len());
        let up_blocks = (0..n)
            .map(|i| {
                let cin = ch[(n - i).min(n - 1)];
                let cout = ch[n - 1 - i];
                VaeBlock::up_decoder(config.layers_per_block + 1, cin, cout, g, i + 1 < n, device)
            })
            .collect();
        Self {
            conv_in: conv3(config.latent_channels, ch[n - 1], device),
            mid_block: UNetMidBlock2D::new(ch[n - 1], g, config.mid_block_add_attention, device),
            up_blocks,
            conv_norm_out: GroupNormConfig::new(g, ch[0])
                .with_epsilon(VAE_EPS)
                .init(device),
            conv_out: conv3(ch[0], config.out_channels, device),
        }
    }

    /// Applies the decoder.
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut x = self.mid_block.forward(self.conv_in.forward(z));
        for block in &self.up_blocks {
            x = block.forward(x);
        }
        self.conv_out
            .forward(rocm_kernels::group_norm_silu(&self.conv_norm_out, x))
    }
}
