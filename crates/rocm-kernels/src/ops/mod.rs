//! The backend extension: the forward trait (dispatched at run time), the backward trait of the
//! inner backend and the `Tensor` entry points the crate root routes to; the Flex kernels are in
//! `flex`, the `Autodiff` wiring in `autodiff`.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::tensor::{Device, Tensor};

mod autodiff;
mod flex;

/// The fused operations, on any backend that registers them (Flex here) and on `Autodiff` of one.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// SiLU.
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// GroupNorm of `x` (`[batch, channels, ...]`) with affine `gamma`, `beta`, then SiLU if
    /// `silu`.
    fn fused_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
        silu: bool,
    ) -> FloatTensor<Self>;
    /// 3×3 convolution, stride 1, padding 1, no dilation, one group, no bias: `x`
    /// `[batch, in, h, w]`, `weight` `[out, in, 3, 3]`.
    fn fused_conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
    /// GEGLU over the last axis: `h ⊙ gelu(g)` with `[h, g]` its two halves.
    fn fused_geglu(y: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `softmax(scale · q kᵀ) v` per (batch, head): `q` `[batch, heads, queries, head]`, `k`
    /// `[batch, heads, keys, head]`, `v` `[batch, heads, keys, value]`.
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;
}

/// The backward kernels that [`FusedOps`]' `Autodiff` implementation calls on the inner backend
/// (plain trait methods: they never go through `Dispatch`).
pub trait FusedBackward: Backend {
    /// SiLU's input gradient at `x` for the output gradient `grad`.
    fn fused_silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradients of [`FusedOps::fused_group_norm`] with respect to `x`, `gamma` and `beta`
    /// (the last two zeros unless `affine_grads`).
    #[allow(clippy::too_many_arguments)]
    fn fused_group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
        silu: bool,
        affine_grads: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// The gradients of [`FusedOps::fused_conv3x3`] with respect to `x` and `weight` (each a
    /// zero tensor when its flag is off).
    fn fused_conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        input_grad: bool,
        weight_grad: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The gradient of [`FusedOps::fused_geglu`] with respect to its input.
    fn fused_geglu_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradients of [`FusedOps::fused_attention`] with respect to `q`, `k` and `v`.
    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether `device` is Flex, directly or under autodiff.
pub(crate) fn on_flex(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => {
            matches!(inner.clone().inner(), DispatchDevice::Flex(_))
        }
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// [`FusedOps::fused_silu`] on a `Tensor` (the caller checked [`on_flex`] and the dtype).
pub(crate) fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_silu(x.into_dispatch()))
}

/// [`FusedOps::fused_group_norm`] on `Tensor`s (the caller checked [`on_flex`] and the dtype).
pub(crate) fn group_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    groups: usize,
    epsilon: f64,
    silu: bool,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_group_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        groups,
        epsilon,
        silu,
    ))
}

/// [`FusedOps::fused_conv3x3`] on `Tensor`s (the caller checked the device, dtypes and shapes).
pub(crate) fn conv3x3(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_conv3x3(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

/// [`FusedOps::fused_attention`] on `Tensor`s (the caller checked the device, dtypes and shapes).
pub(crate) fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        scale,
    ))
}

/// [`FusedOps::fused_geglu`] on a `Tensor` (the caller checked the device, dtype and shape).
pub(crate) fn geglu<const D: usize>(y: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_geglu(y.into_dispatch()))
}
