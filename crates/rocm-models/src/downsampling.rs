//! diffusers `models/downsampling.py`: `Downsample2D` with a convolution.

use burn::prelude::*;
use burn::tensor::ops::PadMode;
use rocm_lora::{Conv2d, Conv2dConfig, impl_lora_container};

/// Configuration of a [`Downsample2D`].
#[derive(Config, Debug)]
pub struct Downsample2DConfig {
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Convolution padding (`downsample_padding`: 1 in the UNet, 0 in the VAE encoder, where
    /// diffusers pads right/bottom by one instead).
    #[config(default = 1)]
    pub padding: usize,
}

impl Downsample2DConfig {
    /// Builds the layer with random weights.
    pub fn init(&self, device: &Device) -> Downsample2D {
        Downsample2D {
            conv: Conv2dConfig::new([self.channels, self.out_channels], [3, 3])
                .with_stride([2, 2])
                .with_padding([self.padding, self.padding])
                .init(device),
            pad_right_bottom: self.padding == 0,
        }
    }
}

/// Halves the resolution with a stride-2 3×3 convolution. With `padding = 0` the input is first
/// zero-padded by one column on the right and one row at the bottom (diffusers' VAE encoder).
///
/// # Shapes
/// - `x`: `[B, channels, H, W]`
/// - output: `[B, out_channels, ⌈H/2⌉, ⌈W/2⌉]`
#[derive(Module, Debug)]
pub struct Downsample2D {
    /// The stride-2 convolution.
    pub conv: Conv2d,
    /// Whether to pad (0, 1, 0, 1) before the convolution.
    pub pad_right_bottom: bool,
}
impl_lora_container!(Downsample2D { conv });

impl Downsample2D {
    /// Applies the layer.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.pad_right_bottom {
            x.pad((0, 1, 0, 1), PadMode::Constant(0.0))
        } else {
            x
        };
        self.conv.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    fn ones_conv(padding: usize, device: &Device) -> Downsample2D {
        let mut down = Downsample2DConfig::new(1, 1)
            .with_padding(padding)
            .init(device);
        down.conv.weight = Param::from_tensor(Tensor::ones([1, 1, 3, 3], device));
        down.conv.bias = Some(Param::from_tensor(Tensor::zeros([1], device)));
        down
    }

    #[test]
    fn padding_zero_pads_right_and_bottom_only() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([1, 1, 4, 4], &device);
        // Windows start at rows/cols 0 and 2; the second one reaches into the padded row/col.
        let y = ones_conv(0, &device).forward(x.clone());
        let y = y.into_data().try_into_vec::<f32>().unwrap_or_default();
        assert_eq!(y, [9.0, 6.0, 6.0, 4.0]);
        // Symmetric padding 1: windows centred on rows/cols 0 and 2.
        let y = ones_conv(1, &device)
            .forward(x)
            .into_data()
            .try_into_vec::<f32>();
        assert_eq!(y.unwrap_or_default(), [4.0, 6.0, 6.0, 9.0]);
    }
}
