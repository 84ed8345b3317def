//! Differentiable CLIP preprocessing on device: antialiased bicubic resize (shortest edge → 224),
//! centre crop, normalisation with the CLIP mean/std.
//!
//! The resize is PIL's / PyTorch's `antialias=True` bicubic (`a = −0.5`, the kernel widened by the
//! downscale factor, weights normalised per output pixel). It is separable and linear, so it is two
//! matmuls with `[out, in]` weight matrices built on the host: exactly differentiable, any backend.
//!
//! Measured against the references (fixture `tests/fixtures/preprocess`, script
//! `rewards_preprocess.py`): `F.interpolate(mode="bicubic", antialias=True, align_corners=False)` and
//! PIL's float (`"F"`) bicubic to < 1e-5. PIL on **uint8** images (what the OpenAI, PickScore and
//! aesthetic pipelines did offline) additionally clamps the bicubic overshoot to `[0, 255]` and
//! rounds: on a worst-case high-frequency pattern the normalised pixels differ by up to 0.15 (0.04 in
//! `[0, 1]` units), while uint8 rounding alone is ≤ 0.5/255. Training images need the gradient, so the
//! unclamped float path is used.

use burn::prelude::*;

/// CLIP's normalisation mean (RGB).
#[allow(clippy::excessive_precision)] // the upstream constants, verbatim
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's normalisation standard deviation (RGB).
#[allow(clippy::excessive_precision)] // the upstream constants, verbatim
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The bicubic convolution kernel with `a = −0.5` (PIL, and PyTorch when `antialias=True`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The `[output, input]` matrix of a 1-D antialiased bicubic resize from `input` to `output`
/// samples (`align_corners = false`), as PIL's `ImagingResample` and PyTorch's
/// `_upsample_bicubic2d_aa` compute it, in f64.
pub fn resize_weights(input: usize, output: usize) -> Vec<f64> {
    assert!(
        input > 0 && output > 0,
        "resize_weights: sizes must be positive, got {input} → {output}"
    );
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let mut m = vec![0.0; output * input];
    for i in 0..output {
        let center = (i as f64 + 0.5) * scale;
        // PIL/PyTorch truncate (`(int)`) and clamp to the image.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let row = &mut m[i * input..(i + 1) * input];
        let mut total = 0.0;
        for (j, w) in row.iter_mut().enumerate().take(hi).skip(lo) {
            *w = bicubic((j as f64 - center + 0.5) / filter_scale);
            total += *w;
        }
        if total != 0.0 {
            row.iter_mut().for_each(|w| *w /= total);
        }
    }
    m
}

fn weights_tensor(
    input: usize,
    output: usize,
    rows: std::ops::Range<usize>,
    device: &Device,
) -> Tensor<2> {
    let m = resize_weights(input, output);
    let kept: Vec<f32> = m[rows.start * input..rows.end * input]
        .iter()
        .map(|&w| w as f32)
        .collect();
    Tensor::from_data(TensorData::new(kept, [rows.len(), input]), device)
}

/// Resizes `[B, C, H, W]` to `[B, C, out_h, out_w]` with antialiased bicubic, keeping only output rows
/// `rows` and columns `cols` (a crop folded into the weights). Differentiable.
///
/// # Shapes
/// - `images`: `[B, C, H, W]` → `[B, C, rows.len(), cols.len()]`
pub fn resize_crop(
    images: Tensor<4>,
    [out_h, out_w]: [usize; 2],
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Tensor<4> {
    let [b, c, h, w] = images.dims();
    let device = images.device();
    assert!(
        rows.end <= out_h && cols.end <= out_w,
        "resize_crop: crop {rows:?}×{cols:?} outside {out_h}×{out_w}"
    );
    let (nh, nw) = (rows.len(), cols.len());
    let wh = weights_tensor(h, out_h, rows, &device); // [nh, h]
    let ww = weights_tensor(w, out_w, cols, &device); // [nw, w]
    // Columns: [b·c·h, w] · [w, nw].
    let x = images.reshape([b * c * h, w]).matmul(ww.transpose());
    // Rows: [b·c, h, nw] → [b·c·nw, h] · [h, nh].
    let x = x
        .reshape([b * c, h, nw])
        .swap_dims(1, 2)
        .reshape([b * c * nw, h]);
    let x = x.matmul(wh.transpose());
    x.reshape([b * c, nw, nh])
        .swap_dims(1, 2)
        .reshape([b, c, nh, nw])
}

/// Resizes `[B, C, H, W]` to `[B, C, out_h, out_w]` with antialiased bicubic
/// (`F.interpolate(..., mode="bicubic", antialias=True, align_corners=False)`).
///
/// # Shapes
/// - `images`: `[B, C, H, W]` → `[B, C, out_h, out_w]`
pub fn resize_bicubic_aa(images: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    resize_crop(images, size, 0..size[0], 0..size[1])
}

/// The CLIP image preprocessing: shortest edge → `size` (the other edge `⌊size · long / short⌋`, as
/// transformers computes it), centre crop `size × size` (offset `(extra) / 2` rounded down), then
/// `(x − mean) / std`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocess {
    /// Target side (224 for every CLIP reward here).
    pub size: usize,
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel std.
    pub std: [f32; 3],
}

impl Default for ClipPreprocess {
    fn default() -> Self {
        Self::new(224)
    }
}

impl ClipPreprocess {
    /// CLIP mean/std, shortest edge and crop `size`.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// # Shapes
    /// - `images`: `[B, 3, H, W]`, RGB in `[0, 1]` → `[B, 3, size, size]`, normalised
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let [_, c, h, w] = images.dims();
        assert_eq!(
            c,
            3,
            "ClipPreprocess: images must be [B, 3, H, W], got {:?}",
            images.dims()
        );
        let s = self.size;
        let (out_h, out_w) = if h <= w {
            (s, s * w / h)
        } else {
            (s * h / w, s)
        };
        let (top, left) = ((out_h - s) / 2, (out_w - s) / 2);
        let x = resize_crop(images, [out_h, out_w], top..top + s, left..left + s);
        let device = x.device();
        let mean = Tensor::<1>::from_floats(self.mean, &device).reshape([1, 3, 1, 1]);
        let std = Tensor::<1>::from_floats(self.std, &device).reshape([1, 3, 1, 1]);
        (x - mean) / std
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_rows_sum_to_one_and_identity_is_exact() {
        for (i, o) in [(40, 17), (29, 61), (7, 7)] {
            let m = resize_weights(i, o);
            for row in m.chunks(i) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        let m = resize_weights(5, 5);
        for (k, w) in m.iter().enumerate() {
            assert_eq!(*w, if k % 6 == 0 { 1.0 } else { 0.0 });
        }
    }

    #[test]
    fn gradient_reaches_pixels_and_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let data: Vec<f32> = (0..3 * 9 * 7)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(data.clone(), [1, 3, 9, 7]), &device);
        let pre = ClipPreprocess::new(4);
        // A fixed random-ish projection of the output as the scalar loss.
        let proj: Vec<f32> = (0..3 * 4 * 4)
            .map(|i| ((i * 13) % 7) as f32 - 3.0)
            .collect();
        let proj = Tensor::<4>::from_data(TensorData::new(proj, [1, 3, 4, 4]), &device);
        let loss = |x: Tensor<4>| (pre.forward(x) * proj.clone()).sum();
        let x = x.require_grad();
        let g = x.grad(&loss(x.clone()).backward()).expect("grad");
        let g = g.into_data().try_into_vec::<f32>().expect("f32");
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| v.abs() > 1e-3));
        let eps = 1e-2;
        for k in [0, 17, 40, 100, 188] {
            let mut plus = data.clone();
            plus[k] += eps;
            let mut minus = data.clone();
            minus[k] -= eps;
            let f = |d: Vec<f32>| {
                loss(Tensor::from_data(TensorData::new(d, [1, 3, 9, 7]), &device))
                    .into_scalar::<f32>()
            };
            let fd = (f(plus) - f(minus)) / (2.0 * eps);
            assert!(
                (fd - g[k]).abs() < 1e-2 * (1.0 + fd.abs()),
                "pixel {k}: fd {fd} vs autodiff {}",
                g[k]
            );
        }
    }
}
