//! diffusers `models/resnet.py`: `ResnetBlock2D` (the "default" time-embedding norm).

use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use rocm_kernels::{group_norm_silu, silu};
use rocm_lora::{Conv2d, Conv2dConfig, Linear, LinearConfig, impl_lora_container};

/// Configuration of a [`ResnetBlock2D`].
#[derive(Config, Debug)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the timestep embedding; `None` (the VAE) for no `time_emb_proj`.
    #[config(default = "None")]
    pub temb_channels: Option<usize>,
    /// GroupNorm groups (`norm_num_groups`).
    #[config(default = 32)]
    pub groups: usize,
    /// GroupNorm epsilon (`norm_eps`; the VAE uses 1e-6).
    #[config(default = 1e-6)]
    pub eps: f64,
    /// The output is divided by this (`output_scale_factor`).
    #[config(default = 1.0)]
    pub output_scale_factor: f64,
}

impl ResnetBlock2DConfig {
    /// Builds the block with random weights; `conv_shortcut` (1×1) exists when the channel
    /// count changes.
    pub fn init(&self, device: &Device) -> ResnetBlock2D {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let norm = |c| {
            GroupNormConfig::new(self.groups, c)
                .with_epsilon(self.eps)
                .init(device)
        };
        let conv3 = |a, b| {
            Conv2dConfig::new([a, b], [3, 3])
                .with_padding([1, 1])
                .init(device)
        };
        ResnetBlock2D {
            norm1: norm(cin),
            conv1: conv3(cin, cout),
            time_emb_proj: self
                .temb_channels
                .map(|t| LinearConfig::new(t, cout).init(device)),
            norm2: norm(cout),
            conv2: conv3(cout, cout),
            conv_shortcut: (cin != cout)
                .then(|| Conv2dConfig::new([cin, cout], [1, 1]).init(device)),
            output_scale_factor: self.output_scale_factor,
        }
    }
}

/// A residual block with a timestep embedding (Ho et al. 2020, as diffusers `ResnetBlock2D`):
///
/// ```text
/// h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]
/// h = conv2(silu(norm2(h)))
/// y = (shortcut(x) + h) / output_scale_factor
/// ```
///
/// # Shapes
/// - `x`: `[B, in_channels, H, W]`, `temb`: `[B, temb_channels]`
/// - output: `[B, out_channels, H, W]`
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    /// First GroupNorm.
    pub norm1: GroupNorm,
    /// First 3×3 convolution.
    pub conv1: Conv2d,
    /// Projection of the timestep embedding to `out_channels`.
    pub time_emb_proj: Option<Linear>,
    /// Second GroupNorm.
    pub norm2: GroupNorm,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// 1×1 convolution on the residual when the channel count changes.
    pub conv_shortcut: Option<Conv2d>,
    /// Output divisor.
    pub output_scale_factor: f64,
}
impl_lora_container!(ResnetBlock2D {
    conv1,
    time_emb_proj,
    conv2,
    conv_shortcut
});

impl ResnetBlock2D {
    /// Applies the block; `temb` is ignored by a block without `time_emb_proj`.
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(group_norm_silu(&self.norm1, x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let [b, c] = [temb.dims()[0], h.dims()[1]];
            h = h + proj.forward(silu(temb.clone())).reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(group_norm_silu(&self.norm2, h));
        let x = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let y = x + h;
        if self.output_scale_factor == 1.0 {
            y
        } else {
            y / self.output_scale_factor
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::Distribution;

    #[test]
    fn shortcut_only_when_channels_change_and_output_scaled() {
        let device = Device::flex();
        let config = ResnetBlock2DConfig::new(8, 8)
            .with_groups(2)
            .with_temb_channels(Some(4));
        assert!(config.init(&device).conv_shortcut.is_none());
        let wider = ResnetBlock2DConfig::new(8, 16).with_groups(2).init(&device);
        assert!(wider.conv_shortcut.is_some());

        // With conv2 zeroed the block is the identity divided by output_scale_factor.
        let mut block = config.with_output_scale_factor(2.0).init(&device);
        block.conv2.weight = Param::from_tensor(Tensor::zeros([8, 8, 3, 3], &device));
        block.conv2.bias = Some(Param::from_tensor(Tensor::zeros([8], &device)));
        let x = Tensor::<4>::random([2, 8, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let temb = Tensor::<2>::ones([2, 4], &device);
        let y = block.forward(x.clone(), Some(&temb));
        let diff = (y - x / 2.0).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
    }
}
