//! [`Conv2d`] with an optional LoRA adapter: PEFT's `lora.Conv2d`.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
// `burn::tensor::module::conv2d`, with the fused Flex kernel for 3×3 same-padding convolutions on
// small maps.
use burn::tensor::ops::ConvOptions;
use rocm_kernels::conv2d;

use crate::config::{FactorInit, lora_scale};
use crate::switch::adapters_enabled;

/// Configuration of a [`Conv2d`] layer (symmetric explicit padding, as torch's `nn.Conv2d`).
#[derive(Config, Debug)]
pub struct Conv2dConfig {
    /// `[in_channels, out_channels]`.
    pub channels: [usize; 2],
    /// `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Stride.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Zero padding on each side, `[ph, pw]`.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Dilation.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Groups.
    #[config(default = 1)]
    pub groups: usize,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
}

impl Conv2dConfig {
    /// A layer without adapter, weights drawn like `burn::nn::conv::Conv2d` (torch's default).
    pub fn init(&self, device: &Device) -> Conv2d {
        let base = nn::conv::Conv2dConfig::new(self.channels, self.kernel_size)
            .with_stride(self.stride)
            .with_dilation(self.dilation)
            .with_groups(self.groups)
            .with_bias(self.bias)
            .init(device);
        Conv2d {
            weight: base.weight,
            bias: base.bias,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            lora: None,
            merged: false,
        }
    }
}

/// A 2-D convolution that can carry a LoRA adapter:
/// `y = conv(x, W) + b + scale · up(down(dropout(x)))`, where `down` is a convolution with the
/// base's kernel, stride, padding and dilation to `r` channels and `up` a 1×1 convolution
/// `r → out` (both without bias), as PEFT's `lora.Conv2d`.
///
/// PEFT's `lora_A` convolution does not copy the base's dilation; all diffusers convolutions
/// have dilation 1, where the two agree. Grouped convolutions cannot take an adapter.
///
/// # Shapes
/// - `weight`: `[out, in / groups, kh, kw]` (PyTorch and Burn layout); `bias`: `[out]`
/// - `lora.lora_a`: `[r, in, kh, kw]`, `lora.lora_b`: `[out, r, 1, 1]`
/// - input `[batch, in, h, w]` → output `[batch, out, h', w']`
#[derive(Module, Debug)]
pub struct Conv2d {
    /// Frozen base weight.
    pub weight: Param<Tensor<4>>,
    /// Frozen base bias.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride.
    pub stride: [usize; 2],
    /// Symmetric zero padding `[ph, pw]`.
    pub padding: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// The adapter, if attached.
    pub lora: Option<LoraConv2d>,
    /// Whether the adapter's delta has been folded into `weight`.
    pub merged: bool,
}

/// The LoRA factors of a [`Conv2d`] (trainable).
///
/// # Shapes
/// - `lora_a`: `[r, in, kh, kw]`, `lora_b`: `[out, r, 1, 1]`
#[derive(Module, Debug)]
pub struct LoraConv2d {
    /// Down convolution `A`.
    pub lora_a: Param<Tensor<4>>,
    /// Up 1×1 convolution `B`.
    pub lora_b: Param<Tensor<4>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// `α`.
    pub alpha: f64,
    /// Rank-stabilised scaling.
    pub use_rslora: bool,
}

impl LoraConv2d {
    /// Build from host-side factor values (`a`: `[r, in, kh, kw]`, `b`: `[out, r, 1, 1]`).
    pub(crate) fn from_factors(
        a: TensorData,
        b: TensorData,
        alpha: f64,
        use_rslora: bool,
        dropout: f64,
        device: &Device,
    ) -> Self {
        Self {
            lora_a: Param::from_tensor(Tensor::from_data(a, device)),
            lora_b: Param::from_tensor(Tensor::from_data(b, device)),
            dropout: DropoutConfig::new(dropout).init(),
            alpha,
            use_rslora,
        }
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.lazy_shape()[0]
    }

    /// `α / r` (or `α / √r`).
    pub fn scale(&self) -> f64 {
        lora_scale(self.rank(), self.alpha, self.use_rslora)
    }

    /// The weight update `scale · Σ_r B[o, r] A[r, i, kh, kw]`, `[out, in, kh, kw]`.
    pub fn delta_weight(&self) -> Tensor<4> {
        let [r, c_in, kh, kw] = self.lora_a.lazy_shape().dims::<4>();
        let c_out = self.lora_b.lazy_shape()[0];
        let a = self.lora_a.val().reshape([r, c_in * kh * kw]);
        let b = self.lora_b.val().reshape([c_out, r]);
        b.matmul(a)
            .reshape([c_out, c_in, kh, kw])
            .mul_scalar(self.scale())
    }
}

impl Conv2d {
    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, self.dilation, self.groups)
    }

    /// `[out, in / groups, kh, kw]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.weight.lazy_shape().dims::<4>()
    }

    /// Apply the layer; adapters on/off and merged states as in [`Linear::forward`](crate::Linear::forward).
    ///
    /// # Shapes
    /// - input `[batch, in, h, w]` → output `[batch, out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let bias = self.bias.as_ref().map(|b| b.val());
        let Some(lora) = &self.lora else {
            return conv2d(x, self.weight.val(), bias, self.options());
        };
        match (self.merged, adapters_enabled()) {
            (false, true) => {
                let base = conv2d(x.clone(), self.weight.val(), bias, self.options());
                let down_options = ConvOptions::new(self.stride, self.padding, self.dilation, 1);
                let h = conv2d(
                    lora.dropout.forward(x),
                    lora.lora_a.val(),
                    None,
                    down_options,
                );
                let up = conv2d(
                    h,
                    lora.lora_b.val(),
                    None,
                    ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
                );
                base + up.mul_scalar(lora.scale())
            }
            (false, false) | (true, true) => conv2d(x, self.weight.val(), bias, self.options()),
            (true, false) => {
                let w = self.weight.val() - lora.delta_weight().detach();
                conv2d(x, w, bias, self.options())
            }
        }
    }

    /// Whether an adapter can be attached (only ungrouped convolutions).
    pub(crate) fn check_adaptable(&self) -> Result<(), String> {
        match self.groups {
            1 => Ok(()),
            g => Err(format!(
                "LoRA needs an ungrouped convolution, this one has groups = {g}"
            )),
        }
    }

    /// Attach a fresh adapter and freeze the base weight and bias.
    pub(crate) fn attach(
        &mut self,
        r: usize,
        alpha: f64,
        use_rslora: bool,
        dropout: f64,
        init: &mut FactorInit,
    ) {
        let [c_out, c_in, kh, kw] = self.weight_dims();
        let fan_in = c_in * kh * kw;
        let a = TensorData::new(init.a(r * fan_in, fan_in, r), [r, c_in, kh, kw]);
        let b = TensorData::new(init.b(c_out * r, r), [c_out, r, 1, 1]);
        let device = self.weight.lazy_device();
        self.set_adapter(LoraConv2d::from_factors(
            a, b, alpha, use_rslora, dropout, &device,
        ));
    }
}

crate::plumbing::adapter_plumbing!(Conv2d, LoraConv2d);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::InitLoraWeights;
    use crate::with_adapters_disabled;

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn merged_equals_unmerged_and_off_is_base() {
        let device = Device::flex();
        let mut conv = Conv2dConfig::new([3, 5], [3, 3])
            .with_padding([1, 1])
            .with_stride([2, 2])
            .init(&device);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..96).map(|i| (i as f32 * 0.37).sin()).collect(),
                [2, 3, 4, 4],
            ),
            &device,
        );
        let base = conv.forward(x.clone());
        conv.attach(
            2,
            3.0,
            false,
            0.0,
            &mut FactorInit::new(1, InitLoraWeights::Random),
        );
        let on = conv.forward(x.clone());
        assert_eq!(on.dims(), [2, 5, 2, 2]);
        assert!(
            max_diff(on.clone(), base.clone()) > 1e-3,
            "adapter must change the output"
        );
        let off = with_adapters_disabled(|| conv.forward(x.clone()));
        assert_eq!(off.to_data(), base.to_data());
        conv.merge();
        assert!(max_diff(conv.forward(x.clone()), on) < 1e-5);
        let off_merged = with_adapters_disabled(|| conv.forward(x.clone()));
        assert!(max_diff(off_merged, base) < 1e-5);
    }

    #[test]
    fn grouped_convolution_is_refused() {
        let conv = Conv2dConfig::new([4, 4], [1, 1])
            .with_groups(2)
            .init(&Device::flex());
        assert!(conv.check_adaptable().is_err());
    }
}
