//! The column buffer of a 3×3, stride-1, padding-1 convolution and its adjoint.
//!
//! For one image `x` (`[channels, h, w]`), `cols` is `[channels · 9, h · w]` with row
//! `c · 9 + ky · 3 + kx` holding `x[c, y + ky − 1, x + kx − 1]` (zero outside the image), so that
//! the convolution is one GEMM `weight[out, channels · 9] · cols`. Its input gradient is either
//! the same convolution of the output gradient with [`flip_kernel`]'s kernel, or the GEMM
//! `weightᵀ · dy` followed by [`col2im`], the transpose of [`im2col`], which adds each column
//! entry back onto the input pixel it came from. Rows are built from whole shifted image rows
//! (`copy_from_slice`), not element by element.

use rayon::prelude::*;

/// Channels per rayon task: enough that a task copies at least ~16 K floats.
fn channels_per_task(h: usize, w: usize) -> usize {
    (16 * 1024 / (9 * h * w).max(1)).max(1)
}

/// Fills `cols` (`[channels · 9, h · w]`) from `x` (`[channels, h, w]`).
pub fn im2col(x: &[f32], channels: usize, h: usize, w: usize, cols: &mut [f32]) {
    let plane = h * w;
    assert_eq!(x.len(), channels * plane, "im2col: input length");
    assert_eq!(cols.len(), channels * 9 * plane, "im2col: column length");
    if plane == 0 {
        return;
    }
    let per = channels_per_task(h, w);
    cols.par_chunks_mut(9 * plane * per)
        .zip(x.par_chunks(plane * per))
        .for_each(|(cols, x)| {
            for (block, src) in cols.chunks_mut(9 * plane).zip(x.chunks(plane)) {
                channel_im2col(src, h, w, block);
            }
        });
}

fn channel_im2col(src: &[f32], h: usize, w: usize, block: &mut [f32]) {
    let plane = h * w;
    for ky in 0..3 {
        for kx in 0..3 {
            let row = &mut block[(ky * 3 + kx) * plane..(ky * 3 + kx + 1) * plane];
            for (oy, dst) in row.chunks_mut(w).enumerate() {
                let iy = oy + ky;
                if iy == 0 || iy > h {
                    dst.fill(0.0);
                    continue;
                }
                let s = &src[(iy - 1) * w..iy * w];
                match kx {
                    0 => {
                        dst[0] = 0.0;
                        dst[1..].copy_from_slice(&s[..w - 1]);
                    }
                    1 => dst.copy_from_slice(s),
                    _ => {
                        dst[..w - 1].copy_from_slice(&s[1..]);
                        dst[w - 1] = 0.0;
                    }
                }
            }
        }
    }
}

/// The kernel of the input gradient of a 3×3 same-padded convolution: `weight` `[out, channels,
/// 3, 3]` flipped in space with its channel axes swapped, `[channels, out, 3, 3]`.
pub fn flip_kernel(weight: &[f32], out: usize, channels: usize) -> Vec<f32> {
    assert_eq!(
        weight.len(),
        out * channels * 9,
        "flip_kernel: weight length"
    );
    let mut flipped = vec![0.0f32; weight.len()];
    for o in 0..out {
        for c in 0..channels {
            let src = &weight[(o * channels + c) * 9..(o * channels + c + 1) * 9];
            let dst = &mut flipped[(c * out + o) * 9..(c * out + o + 1) * 9];
            for (k, d) in dst.iter_mut().enumerate() {
                *d = src[8 - k];
            }
        }
    }
    flipped
}

/// Writes into `dx` (`[channels, h, w]`) the sum, over the 9 taps, of the column entries of
/// `cols` (`[channels · 9, h · w]`) that read each pixel: the adjoint of [`im2col`].
pub fn col2im(cols: &[f32], channels: usize, h: usize, w: usize, dx: &mut [f32]) {
    let plane = h * w;
    assert_eq!(dx.len(), channels * plane, "col2im: output length");
    assert_eq!(cols.len(), channels * 9 * plane, "col2im: column length");
    if plane == 0 {
        return;
    }
    let per = channels_per_task(h, w);
    dx.par_chunks_mut(plane * per)
        .zip(cols.par_chunks(9 * plane * per))
        .for_each(|(dx, cols)| {
            for (dst, block) in dx.chunks_mut(plane).zip(cols.chunks(9 * plane)) {
                channel_col2im(block, h, w, dst);
            }
        });
}

fn channel_col2im(block: &[f32], h: usize, w: usize, dst: &mut [f32]) {
    let plane = h * w;
    dst.fill(0.0);
    for ky in 0..3 {
        for kx in 0..3 {
            let row = &block[(ky * 3 + kx) * plane..(ky * 3 + kx + 1) * plane];
            for (oy, src) in row.chunks(w).enumerate() {
                let iy = oy + ky;
                if iy == 0 || iy > h {
                    continue;
                }
                let d = &mut dst[(iy - 1) * w..iy * w];
                match kx {
                    0 => d[..w - 1]
                        .iter_mut()
                        .zip(&src[1..])
                        .for_each(|(a, b)| *a += b),
                    1 => d.iter_mut().zip(src).for_each(|(a, b)| *a += b),
                    _ => d[1..]
                        .iter_mut()
                        .zip(&src[..w - 1])
                        .for_each(|(a, b)| *a += b),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` (`[channels, h, w]`) convolved with `weight` (`[out, channels, 3, 3]`) through
    /// [`im2col`] and a plain matrix product.
    fn conv(
        x: &[f32],
        weight: &[f32],
        channels: usize,
        out: usize,
        h: usize,
        w: usize,
    ) -> Vec<f64> {
        let plane = h * w;
        let mut cols = vec![0.0; channels * 9 * plane];
        im2col(x, channels, h, w, &mut cols);
        let mut y = vec![0.0f64; out * plane];
        for o in 0..out {
            for r in 0..channels * 9 {
                let k = weight[o * channels * 9 + r] as f64;
                for p in 0..plane {
                    y[o * plane + p] += k * cols[r * plane + p] as f64;
                }
            }
        }
        y
    }

    fn values(n: usize, step: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * step).sin()).collect()
    }

    #[test]
    fn im2col_matches_the_definition() {
        for (channels, h, w) in [(3, 4, 5), (2, 1, 1), (1, 2, 7), (40, 3, 3)] {
            let plane = h * w;
            let x = values(channels * plane, 0.37);
            let mut cols = vec![0.0; channels * 9 * plane];
            im2col(&x, channels, h, w, &mut cols);
            for ch in 0..channels {
                for k in 0..9 {
                    let (ky, kx) = (k / 3, k % 3);
                    for y in 0..h {
                        for xx in 0..w {
                            let (iy, ix) =
                                (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                            let want = if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                0.0
                            } else {
                                x[ch * plane + iy as usize * w + ix as usize]
                            };
                            assert_eq!(cols[(ch * 9 + k) * plane + y * w + xx], want);
                        }
                    }
                }
            }
        }
    }

    /// `⟨conv(x, W), y⟩ = ⟨x, conv(y, flip(W))⟩` for arbitrary `x`, `y`, `W`: the flipped kernel
    /// gives the input gradient.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (channels, h, w) in [(3, 4, 5), (2, 1, 1), (1, 2, 7), (40, 3, 3)] {
            let plane = h * w;
            let x = values(channels * plane, 0.37);
            let c = values(channels * 9 * plane, 0.11);
            let mut cols = vec![0.0; c.len()];
            im2col(&x, channels, h, w, &mut cols);
            let mut back = vec![0.0; x.len()];
            col2im(&c, channels, h, w, &mut back);
            let lhs: f64 = cols
                .iter()
                .zip(&c)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let rhs: f64 = x
                .iter()
                .zip(&back)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn the_flipped_kernel_gives_the_adjoint() {
        for (channels, out, h, w) in [(3, 4, 4, 5), (2, 1, 1, 1), (1, 3, 2, 7), (5, 2, 3, 3)] {
            let plane = h * w;
            let x = values(channels * plane, 0.37);
            let y = values(out * plane, 0.11);
            let weight = values(out * channels * 9, 0.23);
            let forward = conv(&x, &weight, channels, out, h, w);
            let flipped = flip_kernel(&weight, out, channels);
            let adjoint = conv(&y, &flipped, out, channels, h, w);
            let lhs: f64 = forward.iter().zip(&y).map(|(a, b)| a * *b as f64).sum();
            let rhs: f64 = adjoint.iter().zip(&x).map(|(a, b)| a * *b as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-9 * (1.0 + lhs.abs()),
                "{lhs} vs {rhs}"
            );
        }
    }
}
