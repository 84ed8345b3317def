//! Fused kernels with their own backward for Burn 0.22.1, used by `rocm-models`.
//!
//! Burn's CPU backend (burn-flex) runs SiLU as `x · sigmoid(x)` over a scalar libm `exp`, and
//! GroupNorm as about eleven composed ops; under autodiff every one of them records its own node
//! and allocates its own output. This crate registers, through Burn's `extension` feature
//! (`#[backend_extension(Flex, Autodiff)]`), one Flex kernel per operation with a hand-written
//! backward:
//!
//! - [`silu`]: `x / (1 + e^{-x})` over a vectorised polynomial `exp` (`cpu::exp`), one pass
//!   forward, one pass backward;
//! - [`group_norm`] and [`group_norm_silu`]: GroupNorm statistics, affine and (optionally) SiLU
//!   in two passes per group; the backward recomputes the statistics instead of storing the
//!   normalised tensor, and skips the γ/β gradients when those parameters are frozen;
//! - [`conv2d`]: the 3×3 same-padding convolution as a register-blocked GEMM of this crate
//!   (`cpu::conv3x3`) over column panels packed straight from the input, reading the weight
//!   where it lies, instead of burn-flex's per-call weight re-layout, NHWC copy and zeroed
//!   tiles; its input gradient is the same kernel reading the flipped weight in place, and its
//!   weight gradient (only when the weight is tracked) GEMMs against the im2col matrices of
//!   chunks of images of at most [`CONV3X3_COLUMN_FLOATS`] floats;
//! - [`geglu`]: `h · gelu(g)` over the halves of the last axis with a vectorised `erf`, one pass
//!   forward and one backward, instead of burn-flex's scalar libm `erf` and five composed ops;
//! - [`attention`]: `softmax(q kᵀ/√d) v` one (batch, head) per task and one query row at a time,
//!   forward and backward, never storing the `[queries, keys]` scores (the backward recomputes
//!   each row's probabilities).
//!
//! Each function picks its path at run time from the tensor: `f32` on `Device::flex()` or
//! `Device::flex().autodiff()` takes the kernel; any other device (cuda, wgpu, cpu) or dtype takes
//! the composed Burn ops, so GPU backends keep cubecl's kernels and fusion. [`set_mode`] (or the
//! `ROCM_KERNELS=composed` environment variable) forces the composed path everywhere, for
//! comparisons; both paths compute the same function (`tests/gradients.rs` checks values and
//! gradients against each other and against finite differences).

pub mod composed;
#[cfg(feature = "flex")]
pub mod cpu;
mod mode;
#[cfg(feature = "flex")]
mod ops;

pub use mode::{KernelMode, mode, set_mode};
/// The backend extension itself: the forward trait (implemented for Flex and `Autodiff`, routed
/// through `Dispatch`) and the backward kernels of the inner backend.
#[cfg(feature = "flex")]
pub use ops::{FusedBackward, FusedOps};

use burn::nn::GroupNorm;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

/// The most im2col floats the fused 3×3 convolution's weight gradient builds at once (64 MiB):
/// `dW = Σ_images dy · colsᵀ` takes a batch's images in chunks whose column matrices
/// (`channels · 9 · h · w` floats per image) stay within it, one image per chunk at least. The
/// input gradient and a frozen weight need no columns.
pub const CONV3X3_COLUMN_FLOATS: usize = 16 << 20;

/// Whether `x` takes this crate's Flex kernel: fused mode, `f32`, on Flex (with or without
/// autodiff), and the `flex` feature compiled in.
pub fn takes_kernel<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    {
        mode() == KernelMode::Fused && x.dtype() == DType::F32 && ops::on_flex(&x.device())
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, DType::F32);
        false
    }
}

/// SiLU, `x · sigmoid(x)`, element-wise.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if takes_kernel(&x) {
        return ops::silu(x);
    }
    composed::silu(x)
}

/// `module`'s GroupNorm of `x` (`[batch, channels, ...]`), as `GroupNorm::forward` computes it.
pub fn group_norm<const D: usize>(module: &GroupNorm, x: Tensor<D>) -> Tensor<D> {
    group_norm_impl(module, x, false)
}

/// `silu(module.forward(x))` in one kernel: the pair every diffusers ResNet block, and the UNet's
/// and the VAE's output heads, apply before a convolution.
pub fn group_norm_silu<const D: usize>(module: &GroupNorm, x: Tensor<D>) -> Tensor<D> {
    group_norm_impl(module, x, true)
}

/// `burn::tensor::module::conv2d`, with 3×3 / stride 1 / padding 1 / one group taken by the
/// fused kernel (a register-blocked GEMM over column panels packed straight from the input; the
/// input gradient is the same kernel reading the flipped weight in place, and the weight
/// gradient, computed only when the weight is tracked, GEMMs over the im2col columns of chunks
/// of images of at most [`CONV3X3_COLUMN_FLOATS`] floats).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if takes_conv3x3(&x, &weight, &options) {
        let y = ops::conv3x3(x, weight);
        return match bias {
            Some(b) => {
                let c = b.dims()[0];
                y + b.reshape([1, c, 1, 1])
            }
            None => y,
        };
    }
    burn::tensor::module::conv2d(x, weight, bias, options)
}

/// GEGLU over the last axis (diffusers' `GEGLU` after its projection): `h · gelu(g)` with
/// `[h, g]` the two halves of `y`'s last axis, exact (erf) GELU. On Flex in `f32` one fused kernel
/// forward and backward (a vectorised `erf`); elsewhere, or with an odd last axis, Burn's ops.
pub fn geglu<const D: usize>(y: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if takes_kernel(&y) && D >= 1 && y.dims()[D - 1].is_multiple_of(2) {
        return ops::geglu(y);
    }
    composed::geglu(y)
}

/// `burn::tensor::module::attention(q, k, v, None, None, Default::default())`:
/// `softmax(q kᵀ / √head) v` per (batch, head), with `q` `[batch, heads, queries, head]`, `k`
/// `[batch, heads, keys, head]` and `v` `[batch, heads, keys, value]`. On Flex in `f32` it runs
/// the fused kernel, forward and backward, without storing the `[queries, keys]` scores;
/// elsewhere Burn's op (cubecl's flash attention on GPUs).
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if takes_attention(&q, &k, &v) {
        let scale = 1.0 / (q.dims()[3] as f64).sqrt();
        return ops::attention(q, k, v, scale);
    }
    burn::tensor::module::attention(q, k, v, None, None, Default::default())
}

/// Whether [`attention`] takes the fused kernel for these arguments: the kernel's device and
/// dtype for all three, and shapes that agree (batch, heads, keys; `q` and `k` the same head size).
pub fn takes_attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> bool {
    let ([b, h, _, d], [kb, kh, m, kd], [vb, vh, vm, _]) = (q.dims(), k.dims(), v.dims());
    takes_kernel(q)
        && k.dtype() == DType::F32
        && v.dtype() == DType::F32
        && (kb, kh, kd) == (b, h, d)
        && (vb, vh, vm) == (b, h, m)
        && d > 0
}

/// Whether [`conv2d`] takes the fused kernel for these arguments.
pub fn takes_conv3x3(x: &Tensor<4>, weight: &Tensor<4>, options: &ConvOptions<2>) -> bool {
    let [_, c, h, w] = x.dims();
    let [_, wc, kh, kw] = weight.dims();
    takes_kernel(x)
        && weight.dtype() == DType::F32
        && (kh, kw, wc) == (3, 3, c)
        && options.stride == [1, 1]
        && options.padding == [(1, 1), (1, 1)]
        && options.dilation == [1, 1]
        && options.groups == 1
        && h * w > 0
}

fn group_norm_impl<const D: usize>(module: &GroupNorm, x: Tensor<D>, silu: bool) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if takes_kernel(&x)
        && D >= 3
        && let (Some(gamma), Some(beta)) = (&module.gamma, &module.beta)
    {
        return ops::group_norm(
            x,
            gamma.val(),
            beta.val(),
            module.num_groups,
            module.epsilon,
            silu,
        );
    }
    composed::group_norm(module, x, silu)
}
