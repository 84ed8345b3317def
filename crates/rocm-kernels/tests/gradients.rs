//! Every kernel against Burn's composed ops (values and gradients, 1e-5 relative) and against
//! central finite differences, on `Device::flex().autodiff()`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use burn::module::Param;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use rocm_kernels::{composed, group_norm, group_norm_silu, silu, takes_kernel};

/// Deterministic values in about [−scale, scale] (a 64-bit LCG).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed, scale), shape), device)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

/// Largest |a − b| / (1 + |b|).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

/// A GroupNorm with non-trivial γ and β (tracked or frozen).
fn norm(groups: usize, channels: usize, frozen: bool, device: &Device) -> GroupNorm {
    let mut m = GroupNormConfig::new(groups, channels).init(device);
    let gamma = tensor([channels], 11, 0.5, device).add_scalar(1.0);
    let beta = tensor([channels], 12, 0.5, device);
    let param = |t: Tensor<1>| {
        let p = Param::from_tensor(t);
        if frozen { p.set_require_grad(false) } else { p }
    };
    m.gamma = Some(param(gamma));
    m.beta = Some(param(beta));
    m
}

#[test]
fn silu_matches_the_composed_op_in_value_and_gradient() {
    let device = Device::flex().autodiff();
    for (shape, scale) in [
        ([2, 3, 5, 7], 4.0),
        ([1, 64, 16, 16], 12.0),
        ([1, 1, 1, 3], 100.0),
    ] {
        let x = tensor(shape, 1, scale, &device).require_grad();
        assert!(takes_kernel(&x));
        let w = tensor(shape, 2, 1.0, &device);
        let fused = silu(x.clone());
        let reference = composed::silu(x.clone());
        let err = rel_err(&to_vec(fused.clone()), &to_vec(reference.clone()));
        assert!(err < 1e-5, "{shape:?} forward {err}");
        let gf = (fused * w.clone()).sum().backward();
        let gr = (reference * w).sum().backward();
        let (a, b) = (x.grad(&gf).unwrap(), x.grad(&gr).unwrap());
        let err = rel_err(&to_vec(a), &to_vec(b));
        assert!(err < 1e-5, "{shape:?} gradient {err}");
    }
}

#[test]
fn silu_takes_strided_inputs_and_overwrites_only_what_it_owns() {
    let device = Device::flex();
    let x = tensor([4, 6], 3, 5.0, &device);
    let t = x.clone().swap_dims(0, 1);
    let err = rel_err(&to_vec(silu(t.clone())), &to_vec(composed::silu(t)));
    assert!(err < 1e-5, "transposed {err}");
    // `x` is still shared with `kept`: the in-place path must not run.
    let kept = x.clone();
    let _ = silu(x);
    assert_eq!(to_vec(kept), values(24, 3, 5.0));
}

#[test]
fn silu_keeps_nan_and_saturates_without_overflow() {
    let device = Device::flex();
    let x = Tensor::<1>::from_floats([f32::NAN, -1000.0, 1000.0, 0.0], &device);
    let y = to_vec(silu(x));
    assert!(y[0].is_nan());
    assert!(y[1].abs() < 1e-30 && y[2] == 1000.0 && y[3] == 0.0, "{y:?}");
}

fn check_group_norm(shape: [usize; 4], groups: usize, with_silu: bool, frozen: bool) {
    let device = Device::flex().autodiff();
    let m = norm(groups, shape[1], frozen, &device);
    let x = tensor(shape, 5, 3.0, &device)
        .add_scalar(0.7)
        .require_grad();
    let w = tensor(shape, 6, 1.0, &device);
    let fused = if with_silu {
        group_norm_silu(&m, x.clone())
    } else {
        group_norm(&m, x.clone())
    };
    let reference = composed::group_norm(&m, x.clone(), with_silu);
    let label = format!("{shape:?} groups {groups} silu {with_silu} frozen {frozen}");
    let err = rel_err(&to_vec(fused.clone()), &to_vec(reference.clone()));
    assert!(err < 1e-5, "{label}: forward {err}");
    let gf = (fused * w.clone()).sum().backward();
    let gr = (reference * w).sum().backward();
    let err = rel_err(&to_vec(x.grad(&gf).unwrap()), &to_vec(x.grad(&gr).unwrap()));
    assert!(err < 1e-5, "{label}: input gradient {err}");
    for (name, p) in [
        ("gamma", m.gamma.as_ref().unwrap()),
        ("beta", m.beta.as_ref().unwrap()),
    ] {
        let (a, b) = (p.val().grad(&gf), p.val().grad(&gr));
        if frozen {
            assert!(a.is_none() && b.is_none(), "{label}: {name} is frozen");
        } else {
            let err = rel_err(&to_vec(a.unwrap()), &to_vec(b.unwrap()));
            assert!(err < 1e-5, "{label}: {name} gradient {err}");
        }
    }
}

#[test]
fn group_norm_matches_the_composed_op_in_value_and_gradients() {
    for with_silu in [false, true] {
        for frozen in [false, true] {
            check_group_norm([2, 8, 4, 4], 4, with_silu, frozen);
        }
        check_group_norm([1, 64, 16, 16], 32, with_silu, false);
        check_group_norm([3, 6, 5, 1], 6, with_silu, false);
        check_group_norm([2, 4, 3, 3], 1, with_silu, true);
    }
}

#[test]
fn group_norm_takes_rank_3_and_strided_inputs() {
    let device = Device::flex();
    let m = norm(2, 6, true, &device);
    let x = tensor([2, 6, 10], 7, 2.0, &device);
    let err = rel_err(
        &to_vec(group_norm_silu(&m, x.clone())),
        &to_vec(composed::group_norm(&m, x, true)),
    );
    assert!(err < 1e-5, "rank 3 {err}");
    let x = tensor([2, 5, 6, 3], 8, 2.0, &device).swap_dims(1, 3);
    let m = norm(3, 3, true, &device);
    let err = rel_err(
        &to_vec(group_norm(&m, x.clone())),
        &to_vec(composed::group_norm(&m, x, false)),
    );
    assert!(err < 1e-5, "permuted {err}");
}

/// Central differences of `loss(x) = Σ w · f(x)` at a few coordinates of `x`, against the
/// gradient the kernel's backward gives (f32 forward, so a loose tolerance).
fn finite_differences(f: impl Fn(Tensor<4>) -> Tensor<4>, x0: Vec<f32>, shape: [usize; 4]) {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(x0.clone(), shape), &device).require_grad();
    // Weights of the output's shape (which need not be the input's).
    let w = tensor(f(x.clone()).dims(), 9, 1.0, &device);
    let analytic = to_vec(
        x.grad(&(f(x.clone()) * w.clone()).sum().backward())
            .unwrap(),
    );
    let loss = |v: &[f32]| -> f64 {
        let t = Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), &device);
        (f(t) * w.clone()).sum().into_scalar::<f32>() as f64
    };
    let h = 1e-2f32;
    for i in (0..x0.len()).step_by(x0.len() / 7 + 1) {
        let (mut up, mut down) = (x0.clone(), x0.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (loss(&up) - loss(&down)) / (2.0 * h as f64);
        let a = analytic[i] as f64;
        assert!(
            (a - numeric).abs() < 2e-2 * (1.0 + numeric.abs()),
            "at {i}: backward {a}, finite differences {numeric}"
        );
    }
}

#[test]
fn the_backward_kernels_agree_with_finite_differences() {
    let shape = [1, 4, 3, 3];
    finite_differences(silu, values(36, 21, 3.0), shape);
    let device = Device::flex().autodiff();
    let m = norm(2, 4, false, &device);
    finite_differences(|x| group_norm_silu(&m, x), values(36, 22, 3.0), shape);
    finite_differences(|x| group_norm(&m, x), values(36, 23, 3.0), shape);
}

/// `dW[o, c, ky, kx] = Σ_images Σ_pixels g[o, p] · x[c, p + (ky − 1, kx − 1)]` in f64, as f32.
fn weight_grad_f64(x: &[f32], g: &[f32], [b, c, h, w]: [usize; 4], out: usize) -> Vec<f32> {
    let mut dw = vec![0.0f64; out * c * 9];
    for i in 0..b {
        for o in 0..out {
            for ci in 0..c {
                for tap in 0..9 {
                    let (ky, kx) = ((tap / 3) as isize - 1, (tap % 3) as isize - 1);
                    let mut acc = 0.0f64;
                    for y in 0..h as isize {
                        for xx in 0..w as isize {
                            let (sy, sx) = (y + ky, xx + kx);
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                continue;
                            }
                            let xv = x[((i * c + ci) * h + sy as usize) * w + sx as usize];
                            let gv = g[((i * out + o) * h + y as usize) * w + xx as usize];
                            acc += f64::from(xv) * f64::from(gv);
                        }
                    }
                    dw[(o * c + ci) * 9 + tap] += acc;
                }
            }
        }
    }
    dw.into_iter().map(|v| v as f32).collect()
}

fn check_conv(shape: [usize; 4], out: usize, weight_tracked: bool) {
    use burn::tensor::ops::ConvOptions;
    let device = Device::flex().autodiff();
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let x = tensor(shape, 31, 2.0, &device).require_grad();
    let mut weight = tensor([out, shape[1], 3, 3], 32, 0.3, &device);
    let mut bias = tensor([out], 33, 0.5, &device);
    if weight_tracked {
        weight = weight.require_grad();
        bias = bias.require_grad();
    }
    assert!(rocm_kernels::takes_conv3x3(&x, &weight, &options));
    let fused = rocm_kernels::conv2d(
        x.clone(),
        weight.clone(),
        Some(bias.clone()),
        options.clone(),
    );
    let reference =
        burn::tensor::module::conv2d(x.clone(), weight.clone(), Some(bias.clone()), options);
    let label = format!("{shape:?} -> {out} tracked weight {weight_tracked}");
    let err = rel_err(&to_vec(fused.clone()), &to_vec(reference.clone()));
    assert!(err < 1e-5, "{label}: forward {err}");
    let w = tensor([shape[0], out, shape[2], shape[3]], 34, 1.0, &device);
    let gf = (fused * w.clone()).sum().backward();
    let gr = (reference * w.clone()).sum().backward();
    let err = rel_err(&to_vec(x.grad(&gf).unwrap()), &to_vec(x.grad(&gr).unwrap()));
    assert!(err < 1e-5, "{label}: input gradient {err}");
    if weight_tracked {
        let err = rel_err(
            &to_vec(weight.grad(&gf).unwrap()),
            &to_vec(weight.grad(&gr).unwrap()),
        );
        // A sum over every pixel of every image (up to 3,072 terms here): it agrees with Burn's
        // f32 sum to the rounding of either (6.5e-5 at 3 × 32 × 32), and is at least as close
        // to the f64 definition as Burn's (3.2e-5 against 6.5e-5 there).
        assert!(err < 2e-4, "{label}: weight gradient {err}");
        let exact = weight_grad_f64(&to_vec(x.clone()), &to_vec(w.clone()), shape, out);
        let err = rel_err(&to_vec(weight.grad(&gf).unwrap()), &exact);
        let burn_err = rel_err(&to_vec(weight.grad(&gr).unwrap()), &exact);
        assert!(
            err <= burn_err + 1e-6,
            "{label}: weight gradient against f64 {err}, Burn's {burn_err}"
        );
        let err = rel_err(
            &to_vec(bias.grad(&gf).unwrap()),
            &to_vec(bias.grad(&gr).unwrap()),
        );
        assert!(err < 1e-5, "{label}: bias gradient {err}");
    } else {
        assert!(weight.grad(&gf).is_none(), "{label}: frozen weight");
    }
}

#[test]
fn conv3x3_matches_burn_conv2d_in_value_and_gradients() {
    for tracked in [false, true] {
        check_conv([2, 3, 4, 5], 4, tracked);
        check_conv([1, 64, 16, 16], 32, tracked);
        check_conv([3, 8, 1, 1], 2, tracked);
        check_conv([1, 5, 2, 7], 6, tracked);
    }
    // Larger maps, tracked or frozen (a ragged last panel), and the shapes world VAE's 32 × 32.
    for tracked in [false, true] {
        check_conv([2, 6, 20, 23], 7, tracked);
        check_conv([3, 16, 32, 32], 16, tracked);
    }
}

#[test]
fn conv2d_falls_back_outside_the_kernel_and_stays_exact() {
    use burn::tensor::ops::ConvOptions;
    let device = Device::flex().autodiff();
    let x = tensor([1, 4, 32, 32], 41, 1.0, &device);
    let weight = tensor([3, 4, 3, 3], 42, 0.3, &device).require_grad();
    let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let strided = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
    // 3×3 same-padding convolutions take the kernel on any map, tracked or frozen; stride 2 is
    // not its case, 1×1 neither.
    assert!(rocm_kernels::takes_conv3x3(&x, &weight, &same));
    let frozen = tensor([3, 4, 3, 3], 42, 0.3, &device);
    assert!(rocm_kernels::takes_conv3x3(&x, &frozen, &same));
    let small = tensor([1, 4, 8, 8], 43, 1.0, &device);
    assert!(!rocm_kernels::takes_conv3x3(&small, &weight, &strided));
    let pointwise = tensor([3, 4, 1, 1], 44, 0.3, &device);
    assert!(!rocm_kernels::takes_conv3x3(
        &small,
        &pointwise,
        &ConvOptions::new([1, 1], [0, 0], [1, 1], 1)
    ));
    let a = rocm_kernels::conv2d(small.clone(), weight.clone(), None, strided.clone());
    let b = burn::tensor::module::conv2d(small, weight, None, strided);
    assert_eq!(to_vec(a), to_vec(b));
}

#[test]
fn conv3x3_backward_agrees_with_finite_differences() {
    use burn::tensor::ops::ConvOptions;
    let device = Device::flex().autodiff();
    let weight = tensor([4, 4, 3, 3], 51, 0.3, &device);
    let conv = |x: Tensor<4>| {
        rocm_kernels::conv2d(
            x,
            weight.clone(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        )
    };
    finite_differences(conv, values(36, 52, 2.0), [1, 4, 3, 3]);
}

/// `rocm_kernels::attention` against Burn's `attention` op (values and all three gradients),
/// `q`, `k`, `v` as the strided head views `Attention::forward` passes.
fn check_attention(batch: usize, heads: usize, queries: usize, keys: usize, head: usize) {
    let device = Device::flex().autodiff();
    let split = |t: Tensor<3>| {
        let [b, n, c] = t.dims();
        t.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
    };
    let q = tensor([batch, queries, heads * head], 61, 2.0, &device).require_grad();
    let k = tensor([batch, keys, heads * head], 62, 2.0, &device).require_grad();
    let v = tensor([batch, keys, heads * head], 63, 1.0, &device).require_grad();
    // Each side splits the heads itself: one backward consumes the graph it walks.
    let heads_of = || (split(q.clone()), split(k.clone()), split(v.clone()));
    let (qh, kh, vh) = heads_of();
    assert!(rocm_kernels::takes_attention(&qh, &kh, &vh));
    let fused = rocm_kernels::attention(qh, kh, vh);
    let (qh, kh, vh) = heads_of();
    let reference = burn::tensor::module::attention(qh, kh, vh, None, None, Default::default());
    let label = format!("batch {batch} heads {heads} {queries}x{keys} head {head}");
    let err = rel_err(&to_vec(fused.clone()), &to_vec(reference.clone()));
    assert!(err < 1e-5, "{label}: forward {err}");
    let w = tensor([batch, heads, queries, head], 64, 1.0, &device);
    let gf = (fused * w.clone()).sum().backward();
    let gr = (reference * w).sum().backward();
    for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
        let err = rel_err(&to_vec(t.grad(&gf).unwrap()), &to_vec(t.grad(&gr).unwrap()));
        assert!(err < 1e-5, "{label}: {name} gradient {err}");
    }
}

#[test]
fn attention_matches_burn_attention_in_value_and_gradients() {
    check_attention(1, 8, 256, 256, 8);
    check_attention(2, 8, 64, 77, 16);
    check_attention(3, 1, 16, 16, 64);
    check_attention(1, 2, 5, 3, 3);
}

#[test]
fn attention_only_tracks_what_requires_grad() {
    let device = Device::flex().autodiff();
    let q = tensor([1, 2, 6, 4], 71, 1.0, &device).require_grad();
    let k = tensor([1, 2, 5, 4], 72, 1.0, &device);
    let v = tensor([1, 2, 5, 4], 73, 1.0, &device).require_grad();
    let grads = rocm_kernels::attention(q.clone(), k.clone(), v.clone())
        .sum()
        .backward();
    assert!(q.grad(&grads).is_some() && v.grad(&grads).is_some());
    assert!(k.grad(&grads).is_none());
}

#[test]
fn attention_backward_agrees_with_finite_differences() {
    let device = Device::flex().autodiff();
    let k = tensor([1, 2, 5, 3], 81, 1.5, &device);
    let v = tensor([1, 2, 5, 3], 82, 1.0, &device);
    let q0 = values(18, 83, 1.5);
    finite_differences(
        |q| rocm_kernels::attention(q, k.clone(), v.clone()),
        q0,
        [1, 2, 3, 3],
    );
    let q = tensor([1, 2, 3, 3], 84, 1.5, &device);
    finite_differences(
        |k| rocm_kernels::attention(q.clone(), k, v.clone()),
        values(30, 85, 1.5),
        [1, 2, 5, 3],
    );
    finite_differences(
        |v| rocm_kernels::attention(q.clone(), k.clone(), v),
        values(30, 86, 1.0),
        [1, 2, 5, 3],
    );
}

#[test]
fn geglu_matches_the_composed_op_in_value_and_gradient() {
    let device = Device::flex().autodiff();
    for (shape, scale) in [([2, 7, 10], 3.0), ([1, 256, 512], 4.0), ([3, 1, 2], 8.0)] {
        let y = tensor(shape, 91, scale, &device).require_grad();
        let fused = rocm_kernels::geglu(y.clone());
        let reference = composed::geglu(y.clone());
        let err = rel_err(&to_vec(fused.clone()), &to_vec(reference.clone()));
        assert!(err < 1e-5, "{shape:?} forward {err}");
        let w = tensor(fused.dims(), 92, 1.0, &device);
        let gf = (fused * w.clone()).sum().backward();
        let gr = (reference * w).sum().backward();
        let err = rel_err(&to_vec(y.grad(&gf).unwrap()), &to_vec(y.grad(&gr).unwrap()));
        assert!(err < 1e-5, "{shape:?} gradient {err}");
    }
    // An odd last axis is not GEGLU's: Burn's ops take it (and agree with themselves).
    let odd = tensor([2, 5], 93, 1.0, &device);
    assert_eq!(
        to_vec(rocm_kernels::geglu(odd.clone())),
        to_vec(composed::geglu(odd))
    );
}

#[test]
fn geglu_backward_agrees_with_finite_differences() {
    finite_differences(rocm_kernels::geglu, values(48, 94, 3.0), [1, 2, 3, 8]);
}
