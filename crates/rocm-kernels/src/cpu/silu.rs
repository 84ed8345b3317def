//! SiLU forward and backward over slices.

use rayon::prelude::*;

use super::CHUNK;
use super::exp::sigmoid;

/// `out[i] = x[i] · sigmoid(x[i])`.
pub fn silu_forward(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "silu_forward: length mismatch");
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| forward_serial(x, o));
}

/// `dx[i] = g[i] · s (1 + x (1 − s))` with `s = sigmoid(x[i])`: the gradient of SiLU at `x`.
pub fn silu_backward(x: &[f32], grad: &[f32], dx: &mut [f32]) {
    assert_eq!(x.len(), grad.len(), "silu_backward: length mismatch");
    assert_eq!(x.len(), dx.len(), "silu_backward: length mismatch");
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(d, (x, g))| backward_serial(x, g, d));
}

/// `x[i] ← x[i] · sigmoid(x[i])`.
pub fn silu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(in_place_serial);
}

simd_fn! {
    fn in_place_serial<'a>(x: &'a mut [f32]) {
        for v in x.iter_mut() {
            *v *= sigmoid(*v);
        }
    }
}

simd_fn! {
    fn forward_serial<'a>(x: &'a [f32], out: &'a mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * sigmoid(v);
        }
    }
}

simd_fn! {
    fn backward_serial<'a>(x: &'a [f32], g: &'a [f32], dx: &'a mut [f32]) {
        for ((d, &v), &g) in dx.iter_mut().zip(x).zip(g) {
            *d = g * silu_derivative(v);
        }
    }
}

/// d/dx of `x · sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu_derivative(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_match_the_formula() {
        let x: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 1e-3).collect();
        let g: Vec<f32> = x.iter().map(|v| 1.0 + 0.1 * v).collect();
        let mut y = vec![0.0; x.len()];
        let mut d = vec![0.0; x.len()];
        silu_forward(&x, &mut y);
        silu_backward(&x, &g, &mut d);
        for i in 0..x.len() {
            let v = x[i] as f64;
            let s = 1.0 / (1.0 + (-v).exp());
            let want_y = v * s;
            let want_d = g[i] as f64 * s * (1.0 + v * (1.0 - s));
            assert!(
                (y[i] as f64 - want_y).abs() <= 1e-6 * (1.0 + want_y.abs()),
                "y at {v}"
            );
            assert!(
                (d[i] as f64 - want_d).abs() <= 1e-6 * (1.0 + want_d.abs()),
                "dx at {v}"
            );
        }
    }
}
