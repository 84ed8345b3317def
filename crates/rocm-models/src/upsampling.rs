//! diffusers `models/upsampling.py`: `Upsample2D` (nearest ×2, then a convolution).

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use rocm_lora::{Conv2d, Conv2dConfig, impl_lora_container};

/// Configuration of an [`Upsample2D`].
#[derive(Config, Debug)]
pub struct Upsample2DConfig {
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub out_channels: usize,
}

impl Upsample2DConfig {
    /// Builds the layer with random weights.
    pub fn init(&self, device: &Device) -> Upsample2D {
        Upsample2D {
            conv: Conv2dConfig::new([self.channels, self.out_channels], [3, 3])
                .with_padding([1, 1])
                .init(device),
        }
    }
}

/// Doubles the resolution: `conv(nearest_upsample_×2(x))`, a 3×3 convolution with padding 1
/// (PyTorch `F.interpolate(mode="nearest")`).
///
/// # Shapes
/// - `x`: `[B, channels, H, W]`
/// - output: `[B, out_channels, 2H, 2W]`
#[derive(Module, Debug)]
pub struct Upsample2D {
    /// The 3×3 convolution.
    pub conv: Conv2d,
}
impl_lora_container!(Upsample2D { conv });

impl Upsample2D {
    /// Applies the layer.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        self.forward_to(x, [2 * h, 2 * w])
    }

    /// Upsamples (nearest) to `size = [H', W']` instead of `2×` (diffusers' `output_size`).
    pub fn forward_to(&self, x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        let options = InterpolateOptions::new(InterpolateMode::Nearest)
            .with_align_corners(false)
            .with_output_size(size);
        self.conv.forward(interpolate(x, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn nearest_doubling_then_identity_conv() {
        let device = Device::flex();
        let mut up = Upsample2DConfig::new(1, 1).init(&device);
        let mut delta = [[[[0.0f32; 3]; 3]; 1]; 1];
        delta[0][0][1][1] = 1.0;
        up.conv.weight = Param::from_tensor(Tensor::from_floats(delta, &device));
        up.conv.bias = Some(Param::from_tensor(Tensor::zeros([1], &device)));
        let x = Tensor::<4>::from_floats([[[[0.0, 1.0], [2.0, 3.0]]]], &device);
        let y = up
            .forward(x)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let expect = [
            0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.,
        ];
        assert_eq!(y, expect);
    }
}
