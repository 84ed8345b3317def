//! [`Linear`] with an optional LoRA adapter: PEFT's `lora.Linear`.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::module::linear;

use crate::config::{FactorInit, lora_scale};
use crate::switch::adapters_enabled;

/// Configuration of a [`Linear`] layer (same fields and init as `nn::LinearConfig`).
#[derive(Config, Debug)]
pub struct LinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
}

impl LinearConfig {
    /// A layer without adapter, weights drawn like `nn::Linear` (Kaiming-uniform,
    /// bound `1/√d_input`, as torch's `nn.Linear`).
    pub fn init(&self, device: &Device) -> Linear {
        nn::LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .init(device)
            .into()
    }
}

/// A linear layer `y = x W + b` that can carry a LoRA adapter:
/// `y = x W + b + scale · B(A(dropout(x)))`.
///
/// The type is named `Linear` on purpose: burn-store's `PyTorchToBurnAdapter` recognises the
/// module type name `Linear` and transposes PyTorch's `[out, in]` weight into this layer's
/// `[in, out]`, so `to_q.weight` / `to_q.bias` load by their upstream names.
///
/// # Shapes
/// - `weight`: `[d_input, d_output]` (Burn layout); `bias`: `[d_output]`
/// - `lora.lora_a`: `[r, d_input]`, `lora.lora_b`: `[d_output, r]` (PEFT layout)
/// - input `[..., d_input]` → output `[..., d_output]`
#[derive(Module, Debug)]
pub struct Linear {
    /// Frozen base weight, `[d_input, d_output]`.
    pub weight: Param<Tensor<2>>,
    /// Frozen base bias, `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The adapter, if attached.
    pub lora: Option<LoraLinear>,
    /// Whether the adapter's delta has been folded into `weight`.
    pub merged: bool,
}

impl From<nn::Linear> for Linear {
    fn from(l: nn::Linear) -> Self {
        Self {
            weight: l.weight,
            bias: l.bias,
            lora: None,
            merged: false,
        }
    }
}

/// The LoRA factors of a [`Linear`]: PEFT's `lora_A` / `lora_B` (trainable).
///
/// # Shapes
/// - `lora_a`: `[r, d_input]`, `lora_b`: `[d_output, r]`
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// Down projection `A`, `[r, d_input]`.
    pub lora_a: Param<Tensor<2>>,
    /// Up projection `B`, `[d_output, r]`.
    pub lora_b: Param<Tensor<2>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// `α`.
    pub alpha: f64,
    /// Rank-stabilised scaling (`α/√r` instead of `α/r`).
    pub use_rslora: bool,
}

impl LoraLinear {
    /// Build from host-side factor values (`a`: `[r, d_in]`, `b`: `[d_out, r]`, row-major).
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

    /// `scale · B(A(dropout(x)))`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let h = linear(self.dropout.forward(x), self.lora_a.val().transpose(), None);
        linear(h, self.lora_b.val().transpose(), None).mul_scalar(self.scale())
    }

    /// The weight update in Burn layout, `scale · (B A)ᵀ`: `[d_input, d_output]`.
    pub fn delta_weight(&self) -> Tensor<2> {
        self.lora_a
            .val()
            .transpose()
            .matmul(self.lora_b.val().transpose())
            .mul_scalar(self.scale())
    }
}

impl Linear {
    /// Input features.
    pub fn d_input(&self) -> usize {
        self.weight.lazy_shape()[0]
    }

    /// Output features.
    pub fn d_output(&self) -> usize {
        self.weight.lazy_shape()[1]
    }

    /// Apply the layer.
    ///
    /// | adapter | merged | adapters enabled | output |
    /// |---|---|---|---|
    /// | none | - | - | `x W + b` |
    /// | some | no | yes | `x W + b + scale · B(A(dropout(x)))` |
    /// | some | no | no | `x W + b`, bitwise the base output |
    /// | some | yes | yes | `x W' + b` with `W' = W + scale·ΔW` folded in |
    /// | some | yes | no | `x (W' − scale·ΔW) + b`: the base up to float rounding |
    ///
    /// # Shapes
    /// - input `[..., d_input]` → output `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        let Some(lora) = &self.lora else {
            return linear(x, self.weight.val(), bias);
        };
        match (self.merged, adapters_enabled()) {
            (false, true) => linear(x.clone(), self.weight.val(), bias) + lora.forward(x),
            (false, false) | (true, true) => linear(x, self.weight.val(), bias),
            (true, false) => linear(x, self.weight.val() - lora.delta_weight().detach(), bias),
        }
    }

    /// Attach a fresh adapter (replacing an unmerged one) and freeze the base weight and bias.
    pub(crate) fn attach(
        &mut self,
        r: usize,
        alpha: f64,
        use_rslora: bool,
        dropout: f64,
        init: &mut FactorInit,
    ) {
        let (d_in, d_out) = (self.d_input(), self.d_output());
        let a = TensorData::new(init.a(r * d_in, d_in, r), [r, d_in]);
        let b = TensorData::new(init.b(d_out * r, r), [d_out, r]);
        let device = self.weight.lazy_device();
        self.set_adapter(LoraLinear::from_factors(
            a, b, alpha, use_rslora, dropout, &device,
        ));
    }
}

crate::plumbing::adapter_plumbing!(Linear, LoraLinear);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::InitLoraWeights;
    use crate::with_adapters_disabled;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    fn layer(device: &Device) -> Linear {
        let mut l = LinearConfig::new(3, 2).init(device);
        l.weight = Param::from_tensor(Tensor::from_floats(
            [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
            device,
        ));
        l.bias = Some(Param::from_tensor(Tensor::from_floats([0.5, -0.5], device)));
        l
    }

    #[test]
    fn adapter_adds_scaled_low_rank_term() {
        let device = Device::flex();
        let mut l = layer(&device);
        let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0]], &device);
        let base = l.forward(x.clone());
        assert_eq!(base.to_data().try_into_vec::<f32>().unwrap(), [4.5, 4.5]);
        // r = 1, alpha = 2 -> scale 2; A = [1, 1, 1], B = [[1], [0]]: delta = 2 * [6, 0].
        l.set_adapter(LoraLinear::from_factors(
            TensorData::new(vec![1.0f32, 1.0, 1.0], [1, 3]),
            TensorData::new(vec![1.0f32, 0.0], [2, 1]),
            2.0,
            false,
            0.0,
            &device,
        ));
        let y = l.forward(x.clone());
        assert_eq!(y.to_data().try_into_vec::<f32>().unwrap(), [16.5, 4.5]);
        let off = with_adapters_disabled(|| l.forward(x.clone()));
        assert_eq!(off.to_data(), base.to_data());
        l.merge();
        assert!(max_diff(l.forward(x.clone()), y.clone()) < 1e-6);
        let off_merged = with_adapters_disabled(|| l.forward(x.clone()));
        assert!(max_diff(off_merged, base.clone()) < 1e-6);
        l.unmerge();
        assert!(max_diff(l.forward(x.clone()), y) < 1e-6);
        assert!(max_diff(l.weight.val(), layer(&device).weight.val()) < 1e-6);
    }

    #[test]
    fn gaussian_attach_is_a_no_op_at_start() {
        let device = Device::flex();
        let mut l = LinearConfig::new(5, 4).init(&device);
        let x = Tensor::<3>::ones([2, 3, 5], &device);
        let before = l.forward(x.clone());
        l.attach(
            2,
            4.0,
            false,
            0.0,
            &mut FactorInit::new(0, InitLoraWeights::Gaussian),
        );
        assert_eq!(l.lora.as_ref().map(|a| a.scale()), Some(2.0));
        assert_eq!(l.forward(x).to_data(), before.to_data());
    }
}
