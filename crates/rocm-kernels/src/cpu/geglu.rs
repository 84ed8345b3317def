//! GEGLU, `h ⊙ gelu(g)` with `[h, g]` the two halves of the last axis, forward and backward, over
//! rows of a contiguous buffer.
//!
//! `gelu(g) = g Φ(g)` with the exact normal CDF `Φ(g) = (1 + erf(g/√2)) / 2` (diffusers' default,
//! `approximate="none"`), and `gelu'(g) = Φ(g) + g φ(g)`, `φ(g) = e^{−g²/2}/√(2π)`. `erf` is
//! Abramowitz & Stegun's 7.1.26 over the vectorised [`exp`] for |x| ≥ 0.5 and its
//! Maclaurin series below (where the former cancels): absolute error ≤ 5·10⁻⁷ in `f32` (the test
//! measures it), without the scalar libm call per element of burn-flex's `erf`.

use rayon::prelude::*;

use super::CHUNK;
use super::exp::exp;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `erf(x)`, absolute error ≤ 5·10⁻⁷ (Abramowitz & Stegun 7.1.26 for |x| ≥ 0.5, the Maclaurin
/// series to x¹¹ below); NaN for NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    // 2/√π times the Maclaurin coefficients of erf: x − x³/3 + x⁵/10 − x⁷/42 + x⁹/216 − x¹¹/1320.
    const F: f32 = std::f32::consts::FRAC_2_SQRT_PI;
    const S: [f32; 6] = [F, -F / 3.0, F / 10.0, -F / 42.0, F / 216.0, -F / 1320.0];
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = t * A[0] + t * t * (A[1] + t * (A[2] + t * (A[3] + t * A[4])));
    let far = 1.0 - poly * exp(-a * a);
    // Near 0 the difference above cancels (relative error up to 1e-5): the series instead.
    let z = a * a;
    let near = a * (S[0] + z * (S[1] + z * (S[2] + z * (S[3] + z * (S[4] + z * S[5])))));
    let y = if a < 0.5 { near } else { far };
    y.copysign(x)
}

/// `Φ(x)`, the standard normal CDF.
#[inline(always)]
fn cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// `gelu(x) = x Φ(x)`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * cdf(x)
}

/// `gelu'(x) = Φ(x) + x φ(x)`.
#[inline(always)]
pub fn gelu_derivative(x: f32) -> f32 {
    cdf(x) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
}

/// Rows per rayon task for rows of `width` outputs.
fn rows_per_task(width: usize) -> usize {
    CHUNK.div_ceil(width.max(1))
}

/// `out[r, i] = y[r, i] · gelu(y[r, width + i])`: `y` is `[rows, 2 · width]`, `out` `[rows, width]`.
pub fn forward(y: &[f32], width: usize, out: &mut [f32]) {
    assert_eq!(y.len(), 2 * out.len(), "geglu: input length");
    if width == 0 || out.is_empty() {
        return;
    }
    let per = rows_per_task(width);
    out.par_chunks_mut(width * per)
        .zip(y.par_chunks(2 * width * per))
        .for_each(|(out, y)| forward_rows(y, width, out));
}

simd_fn! {
    fn forward_rows<'a>(y: &'a [f32], width: usize, out: &'a mut [f32]) {
        for (o, row) in out.chunks_exact_mut(width).zip(y.chunks_exact(2 * width)) {
            let (h, g) = row.split_at(width);
            for ((o, &h), &g) in o.iter_mut().zip(h).zip(g) {
                *o = h * gelu(g);
            }
        }
    }
}

/// The gradient with respect to `y` (`[rows, 2 · width]`) of [`forward`] for the output gradient
/// `dout` (`[rows, width]`): `dh = dout · gelu(g)`, `dg = dout · h · gelu'(g)`.
pub fn backward(y: &[f32], dout: &[f32], width: usize) -> Vec<f32> {
    assert_eq!(y.len(), 2 * dout.len(), "geglu backward: input length");
    let mut dy = vec![0.0f32; y.len()];
    if width == 0 || dout.is_empty() {
        return dy;
    }
    let per = rows_per_task(width);
    dy.par_chunks_mut(2 * width * per)
        .zip(
            y.par_chunks(2 * width * per)
                .zip(dout.par_chunks(width * per)),
        )
        .for_each(|(dy, (y, dout))| backward_rows(y, dout, width, dy));
    dy
}

simd_fn! {
    fn backward_rows<'a>(y: &'a [f32], dout: &'a [f32], width: usize, dy: &'a mut [f32]) {
        for ((d, row), go) in dy
            .chunks_exact_mut(2 * width)
            .zip(y.chunks_exact(2 * width))
            .zip(dout.chunks_exact(width))
        {
            let (h, g) = row.split_at(width);
            let (dh, dg) = d.split_at_mut(width);
            for ((dh, &g), &go) in dh.iter_mut().zip(g).zip(go) {
                *dh = go * gelu(g);
            }
            for (((dg, &h), &g), &go) in dg.iter_mut().zip(h).zip(g).zip(go) {
                *dg = go * h * gelu_derivative(g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series (|x| ≤ 2) and continued fraction (beyond), in f64.
    fn erf_reference(x: f64) -> f64 {
        let a = x.abs();
        let value = if a <= 2.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0f64);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0f64;
            for k in (1..60).rev() {
                f = k as f64 / 2.0 / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        value.copysign(x)
    }

    #[test]
    fn erf_is_within_its_bound_and_gelu_within_float_noise() {
        let mut worst = 0.0f64;
        let mut x = -9.0f32;
        while x <= 9.0 {
            let want = erf_reference(x as f64);
            let err = (erf(x) as f64 - want).abs();
            worst = worst.max(err);
            assert!(err < 5e-7 && err <= 2e-6 * want.abs(), "erf({x}): {err}");
            let gelu_want = x as f64 * 0.5 * (1.0 + erf_reference(x as f64 / 2f64.sqrt()));
            assert!(
                (gelu(x) as f64 - gelu_want).abs() < 1e-6 * (1.0 + gelu_want.abs()),
                "gelu({x})"
            );
            x += 0.013;
        }
        eprintln!("erf: worst absolute error {worst:.2e}");
        assert!(erf(f32::NAN).is_nan());
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn backward_matches_central_differences_of_forward() {
        let width = 5;
        let y: Vec<f32> = (0..3 * 2 * width)
            .map(|i| (i as f32 * 0.7).sin() * 3.0)
            .collect();
        let dout: Vec<f32> = (0..3 * width).map(|i| (i as f32 * 0.3).cos()).collect();
        let loss = |y: &[f64]| -> f64 {
            let mut total = 0.0;
            for r in 0..3 {
                for i in 0..width {
                    let (h, g) = (y[r * 2 * width + i], y[r * 2 * width + width + i]);
                    let gelu = g * 0.5 * (1.0 + erf_reference(g / 2f64.sqrt()));
                    total += dout[r * width + i] as f64 * h * gelu;
                }
            }
            total
        };
        let dy = backward(&y, &dout, width);
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        for i in 0..y.len() {
            let (mut up, mut down) = (y64.clone(), y64.clone());
            up[i] += 1e-5;
            down[i] -= 1e-5;
            let numeric = (loss(&up) - loss(&down)) / 2e-5;
            assert!(
                (dy[i] as f64 - numeric).abs() < 1e-5 * (1.0 + numeric.abs()),
                "at {i}: {} against {numeric}",
                dy[i]
            );
        }
        let mut out = vec![0.0; 3 * width];
        forward(&y, width, &mut out);
        let h_g = y[2 * width + 1] * gelu(y[2 * width + width + 1]);
        assert_eq!(out[width + 1], h_g);
    }
}
