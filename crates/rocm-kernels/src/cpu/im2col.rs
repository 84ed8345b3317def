//! The column buffer of a 3×3, stride-1, padding-1 convolution.
//!
//! For one image `x` (`[channels, h, w]`), `cols` is `[channels · 9, h · w]` with row
//! `c · 9 + ky · 3 + kx` holding `x[c, y + ky − 1, x + kx − 1]` (zero outside the image), so that
//! the convolution is one GEMM `weight[out, channels · 9] · cols` (and the weight gradient one
//! GEMM `dy · colsᵀ`). Rows are built from whole shifted image rows (`copy_from_slice`), not
//! element by element.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_values as values;

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
}
