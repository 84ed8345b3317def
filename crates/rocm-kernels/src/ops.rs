//! The backend extension: the forward trait (dispatched at run time), the backward trait of the
//! inner backend, their Flex kernels, the `Autodiff` wiring, and the `Tensor` entry points the
//! crate root routes to.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Bytes, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::tensor::ops::ConvTransposeOptions;
use burn::tensor::{DType, Device, Shape, Tensor};

use crate::cpu;
use crate::cpu::attention::AttentionShape;
use crate::cpu::group_norm::GroupNormShape;

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

/// A contiguous copy of an `f32` Flex tensor (the same storage when already contiguous).
fn values(t: &FlexTensor) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "rocm-kernels: the Flex kernels take f32"
    );
    t.to_contiguous()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor has an f32 slice")
}

fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `[batch, channels, h, w]` of a rank-4 tensor.
fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    assert_eq!(
        s.num_dims(),
        4,
        "rocm-kernels: conv3x3 and attention take rank-4 tensors"
    );
    [s[0], s[1], s[2], s[3]]
}

/// The column buffers of every image of `x`: `[batch, channels · 9, h · w]`.
fn columns(x: &FlexTensor) -> FlexTensor {
    let [b, c, h, w] = dims4(x);
    let xs = slice(x);
    let image = c * h * w;
    let mut cols = vec![0.0f32; b * c * 9 * h * w];
    for (i, dst) in cols.chunks_mut((c * 9 * h * w).max(1)).enumerate().take(b) {
        cpu::im2col::im2col(&xs[i * image..(i + 1) * image], c, h, w, dst);
    }
    tensor(cols, Shape::new([b, c * 9, h * w]))
}

fn group_norm_shape(shape: &Shape, groups: usize, epsilon: f64, silu: bool) -> GroupNormShape {
    GroupNormShape {
        batch: shape[0],
        channels: shape[1],
        spatial: shape.num_elements() / (shape[0] * shape[1]).max(1),
        groups,
        epsilon,
        silu,
    }
}

/// Half the last axis of a GEGLU input (the caller checked it is even).
fn geglu_width(shape: &Shape) -> usize {
    shape[shape.num_dims() - 1] / 2
}

/// The kernel's view of `q`, `k`, `v` (rank 4, `[batch, heads, tokens, features]`).
fn attention_shape(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, scale: f64) -> AttentionShape {
    let ([b, h, n, d], [_, _, m, _], [_, _, _, e]) = (dims4(q), dims4(k), dims4(v));
    AttentionShape {
        problems: b * h,
        queries: n,
        keys: m,
        head: d,
        value: e,
        scale: scale as f32,
    }
}

impl FusedOps for Flex {
    fn fused_silu(x: FlexTensor) -> FlexTensor {
        let mut x = values(&x);
        if x.is_unique() && x.layout().start_offset() == 0 {
            // Nobody else holds the input (inference): overwrite it.
            if let Some(v) = x.try_storage_mut::<f32>() {
                cpu::silu::silu_in_place(v);
                return x;
            }
        }
        let mut out = vec![0.0f32; x.layout().num_elements()];
        cpu::silu::silu_forward(slice(&x), &mut out);
        tensor(out, x.layout().shape().clone())
    }

    fn fused_group_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        epsilon: f64,
        silu: bool,
    ) -> FlexTensor {
        let (x, gamma, beta) = (values(&x), values(&gamma), values(&beta));
        let shape = x.layout().shape().clone();
        let mut y = vec![0.0f32; shape.num_elements()];
        let gn = group_norm_shape(&shape, groups, epsilon, silu);
        cpu::group_norm::forward(gn, slice(&x), slice(&gamma), slice(&beta), &mut y);
        tensor(y, shape)
    }

    fn fused_conv3x3(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let (x, weight) = (values(&x), values(&weight));
        let [b, c, h, w] = dims4(&x);
        let out = weight.layout().shape()[0];
        let kernel = weight.reshape(Shape::new([1, out, c * 9]));
        let y = Flex::float_matmul(kernel, columns(&x));
        y.reshape(Shape::new([b, out, h, w]))
    }

    fn fused_geglu(y: FlexTensor) -> FlexTensor {
        let y = values(&y);
        let mut shape = y.layout().shape().clone();
        let width = geglu_width(&shape);
        let mut out = vec![0.0f32; shape.num_elements() / 2];
        cpu::geglu::forward(slice(&y), width, &mut out);
        let last = shape.num_dims() - 1;
        shape[last] = width;
        tensor(out, shape)
    }

    fn fused_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, scale: f64) -> FlexTensor {
        let (q, k, v) = (values(&q), values(&k), values(&v));
        let shape = attention_shape(&q, &k, &v, scale);
        let [b, h, n, _] = dims4(&q);
        let mut o = vec![0.0f32; shape.problems * shape.queries * shape.value];
        cpu::attention::forward(shape, slice(&q), slice(&k), slice(&v), &mut o);
        tensor(o, Shape::new([b, h, n, shape.value]))
    }
}

impl FusedBackward for Flex {
    fn fused_silu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (x, grad) = (values(&x), values(&grad));
        let mut dx = vec![0.0f32; x.layout().num_elements()];
        cpu::silu::silu_backward(slice(&x), slice(&grad), &mut dx);
        tensor(dx, x.layout().shape().clone())
    }

    fn fused_group_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        grad: FlexTensor,
        groups: usize,
        epsilon: f64,
        silu: bool,
        affine_grads: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (x, gamma, beta, grad) = (values(&x), values(&gamma), values(&beta), values(&grad));
        let shape = x.layout().shape().clone();
        let gn = group_norm_shape(&shape, groups, epsilon, silu);
        let mut dx = vec![0.0f32; shape.num_elements()];
        let affine = cpu::group_norm::backward(
            gn,
            slice(&x),
            slice(&gamma),
            slice(&beta),
            slice(&grad),
            &mut dx,
            affine_grads,
        );
        let channels = gamma.layout().shape().clone();
        let (dgamma, dbeta) =
            affine.unwrap_or_else(|| (vec![0.0; gn.channels], vec![0.0; gn.channels]));
        (
            tensor(dx, shape),
            tensor(dgamma, channels.clone()),
            tensor(dbeta, channels),
        )
    }

    fn fused_conv3x3_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        input_grad: bool,
        weight_grad: bool,
    ) -> (FlexTensor, FlexTensor) {
        let (x, weight, grad) = (values(&x), values(&weight), values(&grad));
        let [b, c, h, w] = dims4(&x);
        let out = weight.layout().shape()[0];
        let grad = grad.reshape(Shape::new([b, out, h * w]));
        let dx = if input_grad {
            // burn-flex's transposed convolution, as Burn's own conv2d backward: at ≤ 16 × 16 it
            // beat both an im2col GEMM with the flipped kernel and `Wᵀ · dy` + col2im
            // (bench_ops, 2026-12-07).
            Flex::conv_transpose2d(
                grad.clone().reshape(Shape::new([b, out, h, w])),
                weight.clone(),
                None,
                ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1),
            )
        } else {
            tensor(vec![0.0; b * c * h * w], Shape::new([b, c, h, w]))
        };
        let dw = if weight_grad {
            // dW = Σ_batch dy · colsᵀ.
            let per_image = Flex::float_matmul(grad, columns(&x).transpose(1, 2));
            let summed = if b > 1 {
                Flex::float_sum_dim(per_image, 0)
            } else {
                per_image
            };
            values(&summed).reshape(Shape::new([out, c, 3, 3]))
        } else {
            tensor(vec![0.0; out * c * 9], Shape::new([out, c, 3, 3]))
        };
        (dx, dw)
    }

    fn fused_geglu_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (y, grad) = (values(&y), values(&grad));
        let shape = y.layout().shape().clone();
        let dy = cpu::geglu::backward(slice(&y), slice(&grad), geglu_width(&shape));
        tensor(dy, shape)
    }

    fn fused_attention_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        grad: FlexTensor,
        scale: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (q, k, v, grad) = (values(&q), values(&k), values(&v), values(&grad));
        let shape = attention_shape(&q, &k, &v, scale);
        let (dq, dk, dv) =
            cpu::attention::backward(shape, slice(&q), slice(&k), slice(&v), slice(&grad));
        let shape_of = |t: &FlexTensor| t.layout().shape().clone();
        (
            tensor(dq, shape_of(&q)),
            tensor(dk, shape_of(&k)),
            tensor(dv, shape_of(&v)),
        )
    }
}

/// The backward of SiLU: keeps the input.
#[derive(Debug)]
struct SiluBackward;

impl<B: FusedBackward> Backward<B, 1> for SiluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, B::fused_silu_backward(ops.state, grad));
        }
    }
}

/// The backward of GroupNorm(+SiLU): keeps the input and the affine parameters.
#[derive(Debug)]
struct GroupNormBackward;

/// Input, γ, β, groups, ε, SiLU.
type GroupNormState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    usize,
    f64,
    bool,
);

impl<B: FusedBackward> Backward<B, 3> for GroupNormBackward {
    type State = GroupNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, groups, epsilon, silu) = ops.state;
        // A frozen UNet's norms: skip the γ/β reductions.
        let affine_grads = gamma_node.is_some() || beta_node.is_some();
        let (dx, dgamma, dbeta) =
            B::fused_group_norm_backward(x, gamma, beta, grad, groups, epsilon, silu, affine_grads);
        if let Some(node) = x_node {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = gamma_node {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = beta_node {
            grads.register::<B>(node.id, dbeta);
        }
    }
}

/// The backward of the 3×3 convolution: keeps the input and the weight.
#[derive(Debug)]
struct Conv3x3Backward;

impl<B: FusedBackward> Backward<B, 2> for Conv3x3Backward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let (dx, dw) =
            B::fused_conv3x3_backward(x, weight, grad, x_node.is_some(), weight_node.is_some());
        if let Some(node) = x_node {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = weight_node {
            grads.register::<B>(node.id, dw);
        }
    }
}

/// The backward of GEGLU: keeps its input.
#[derive(Debug)]
struct GegluBackward;

impl<B: FusedBackward> Backward<B, 1> for GegluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, B::fused_geglu_backward(ops.state, grad));
        }
    }
}

/// The backward of attention: keeps `q`, `k`, `v` (the probabilities are recomputed).
#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedBackward> Backward<B, 3> for AttentionBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q_node, k_node, v_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (q, k, v, scale) = ops.state;
        let (dq, dk, dv) = B::fused_attention_backward(q, k, v, grad, scale);
        for (node, g) in [(q_node, dq), (k_node, dk), (v_node, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: FusedOps + FusedBackward, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_geglu(y: FloatTensor<Self>) -> FloatTensor<Self> {
        let guard = y.node();
        let y = y.into_primitive();
        match GegluBackward
            .prepare::<C>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_geglu(y.clone());
                prep.finish(y, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_geglu(y)),
        }
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let guards = [q.node(), k.node(), v.node()];
        let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
        match AttentionBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let o = B::fused_attention(q.clone(), k.clone(), v.clone(), scale);
                prep.finish((q, k, v, scale), o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(q, k, v, scale)),
        }
    }

    fn fused_conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let guards = [x.node(), weight.node()];
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        match Conv3x3Backward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_conv3x3(x.clone(), weight.clone());
                prep.finish((x, weight), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_conv3x3(x, weight)),
        }
    }

    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let guard = x.node();
        let x = x.into_primitive();
        match SiluBackward
            .prepare::<C>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_silu(x.clone());
                prep.finish(x, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_silu(x)),
        }
    }

    fn fused_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        let guards = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        match GroupNormBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_group_norm(
                    x.clone(),
                    gamma.clone(),
                    beta.clone(),
                    groups,
                    epsilon,
                    silu,
                );
                prep.finish((x, gamma, beta, groups, epsilon, silu), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fused_group_norm(x, gamma, beta, groups, epsilon, silu))
            }
        }
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
