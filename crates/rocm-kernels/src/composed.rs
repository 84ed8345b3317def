//! The composed forms: Burn's own ops, on every backend. They are what the kernels must equal, and
//! what non-Flex devices (and [`KernelMode::Composed`](crate::KernelMode)) run.

use burn::nn::GroupNorm;
use burn::tensor::Tensor;

/// SiLU from Burn's activation (`x · sigmoid(x)`).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(x)
}

/// `silu(module.forward(x))`, or `module.forward(x)` without `silu`.
pub fn group_norm<const D: usize>(module: &GroupNorm, x: Tensor<D>, silu_after: bool) -> Tensor<D> {
    let y = module.forward(x);
    if silu_after { silu(y) } else { y }
}

/// GEGLU from Burn's ops: `h · gelu(g)` with `[h, g]` the halves of the last axis.
pub fn geglu<const D: usize>(y: Tensor<D>) -> Tensor<D> {
    let half = y.dims()[D - 1] / 2;
    let hidden = y.clone().narrow(D - 1, 0, half);
    let gate = y.narrow(D - 1, half, half);
    hidden * burn::tensor::activation::gelu(gate)
}
