//! The Flex implementations: the kernels of `crate::cpu` on contiguous `f32` `FlexTensor`s.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Bytes, Flex};
use burn::tensor::{DType, Shape};

use super::{FusedBackward, FusedOps};
use crate::cpu;
use crate::cpu::attention::AttentionShape;
use crate::cpu::conv3x3::Conv3x3Shape;
use crate::cpu::group_norm::GroupNormShape;

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

/// The column buffers of images `first..first + n` of `x`: `[n, channels · 9, h · w]`.
fn columns(x: &FlexTensor, first: usize, n: usize) -> FlexTensor {
    let [_, c, h, w] = dims4(x);
    let xs = slice(x);
    let image = c * h * w;
    let mut cols = vec![0.0f32; n * c * 9 * h * w];
    for (i, dst) in cols.chunks_mut((c * 9 * h * w).max(1)).enumerate().take(n) {
        let src = (first + i) * image;
        cpu::im2col::im2col(&xs[src..src + image], c, h, w, dst);
    }
    tensor(cols, Shape::new([n, c * 9, h * w]))
}

/// The weight gradient of a 3×3 convolution, `Σ_images dy · colsᵀ` (`[out, channels, 3, 3]`),
/// from the contiguous input `x` and output gradient `grad`, taking the images in chunks whose
/// im2col columns hold at most `chunk_floats` floats (at least one image per chunk).
fn weight_gradient(x: &FlexTensor, grad: &FlexTensor, chunk_floats: usize) -> FlexTensor {
    let [b, c, h, w] = dims4(x);
    let out = dims4(grad)[1];
    let per_image = (c * 9 * h * w).max(1);
    let chunk = (chunk_floats / per_image).clamp(1, b.max(1));
    let gs = slice(grad);
    let mut total: Option<FlexTensor> = None;
    for first in (0..b).step_by(chunk) {
        let n = chunk.min(b - first);
        let rows = out * h * w;
        let dy = tensor(
            gs[first * rows..(first + n) * rows].to_vec(),
            Shape::new([n, out, h * w]),
        );
        let part = Flex::float_matmul(dy, columns(x, first, n).transpose(1, 2));
        let part = if n > 1 {
            Flex::float_sum_dim(part, 0)
        } else {
            part
        };
        total = Some(match total {
            Some(t) => Flex::float_add(t, part),
            None => part,
        });
    }
    match total {
        Some(t) => values(&t).reshape(Shape::new([out, c, 3, 3])),
        None => tensor(vec![0.0; out * c * 9], Shape::new([out, c, 3, 3])),
    }
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

/// The kernel's view of a 3×3 convolution of `x` (`[batch, channels, h, w]`) with `weight`
/// (`[out, channels, 3, 3]`).
fn conv3x3_shape(x: &FlexTensor, weight: &FlexTensor) -> Conv3x3Shape {
    let [images, channels, h, w] = dims4(x);
    Conv3x3Shape {
        images,
        channels,
        out: weight.layout().shape()[0],
        h,
        w,
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
        let shape = conv3x3_shape(&x, &weight);
        let mut y = vec![0.0f32; shape.images * shape.out * shape.h * shape.w];
        cpu::conv3x3::forward(shape, slice(&x), slice(&weight), &mut y);
        tensor(y, Shape::new([shape.images, shape.out, shape.h, shape.w]))
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
        let shape = conv3x3_shape(&x, &weight);
        let Conv3x3Shape {
            images: b,
            channels: c,
            out,
            h,
            w,
        } = shape;
        let dx = if input_grad {
            // The forward kernel again, reading the flipped, transposed weight in place.
            let mut dx = vec![0.0f32; b * c * h * w];
            cpu::conv3x3::input_grad(shape, slice(&grad), slice(&weight), &mut dx);
            tensor(dx, Shape::new([b, c, h, w]))
        } else {
            tensor(vec![0.0; b * c * h * w], Shape::new([b, c, h, w]))
        };
        let dw = if weight_grad {
            weight_gradient(&x, &grad, crate::CONV3X3_COLUMN_FLOATS)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
    }

    #[test]
    fn weight_gradient_is_the_same_in_any_chunking() {
        let (b, c, out, h, w) = (5, 3, 4, 6, 7);
        let x = tensor(ramp(b * c * h * w, 0.1), Shape::new([b, c, h, w]));
        let g = tensor(ramp(b * out * h * w, 0.7), Shape::new([b, out, h, w]));
        let whole = weight_gradient(&x, &g, usize::MAX);
        assert_eq!(whole.layout().shape().to_vec(), vec![out, c, 3, 3]);
        // One image per chunk, two per chunk (a ragged last chunk), all at once.
        for floats in [1, 2 * c * 9 * h * w, 1 << 30] {
            let chunked = weight_gradient(&x, &g, floats);
            let err = slice(&whole)
                .iter()
                .zip(slice(&chunked))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-4, "chunk of {floats} floats: {err}");
        }
        // Against the definition for one weight: Σ_images Σ_pixels dy[o, p] · x[c, p + tap].
        let (xs, gs) = (slice(&x), slice(&g));
        let (o, ci, ky, kx) = (2, 1, 0, 2);
        let mut want = 0.0f64;
        for i in 0..b {
            for y in 0..h {
                for xx in 0..w {
                    let (sy, sx) = (y as isize + ky - 1, xx as isize + kx - 1);
                    if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                        continue;
                    }
                    let xv = xs[((i * c + ci) * h + sy as usize) * w + sx as usize];
                    want += f64::from(gs[((i * out + o) * h + y) * w + xx] * xv);
                }
            }
        }
        let got = slice(&whole)[((o * c + ci) * 3 + ky as usize) * 3 + kx as usize];
        assert!((f64::from(got) - want).abs() < 1e-4, "{got} vs {want}");
    }
}
