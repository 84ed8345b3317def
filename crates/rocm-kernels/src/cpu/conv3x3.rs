//! The 3×3, stride-1, padding-1 convolution as a register-blocked GEMM over packed column panels.
//!
//! For one image `x` (`[channels, h, w]`) the output `y = W · cols(x)` (`W` is
//! `[out, channels · 9]`, `cols` the im2col matrix `[channels · 9, h · w]`, see
//! [`super::im2col`]). Nothing of `cols` is stored whole: each task packs the columns of one
//! *panel* (`nr` consecutive output pixels, zero-padded past the image) into a contiguous
//! `[channels · 9][nr]` buffer straight from `x`, then runs the microkernel over it for every
//! block of [`MR`] output channels. The microkernel keeps an `MR × nr` tile of `y` in vector
//! registers (`nr` is two vectors, 16 floats with AVX2 and 32 with AVX-512, or one vector on maps
//! of at most one vector's pixels) and, for every `k`, adds
//! `W[i, k] · panel[k]`, broadcasting the weight straight from where it lies (`W` is never
//! re-laid-out).
//!
//! The same routine gives the input gradient ([`input_grad`]): `dx = conv3x3(dy, W̃)` with
//! `W̃[c, o, ky, kx] = W[o, c, 2 − ky, 2 − kx]`, read from `W` in place: the panel of `dy` is
//! packed with its nine taps in reverse order, and row `c` of `W̃` is `W[o, c, ·]` for every `o`
//! (nine contiguous floats, `channels · 9` apart).

use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// Output channels per microkernel tile.
pub const MR: usize = 6;
/// Vectors per tile row: two, or one where the map has at most one vector's worth of pixels.
const NV: usize = 2;

/// The kernel's problem: `images` images of `channels × h × w` to `out` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3x3Shape {
    /// Images in the batch.
    pub images: usize,
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub out: usize,
    /// Map height.
    pub h: usize,
    /// Map width.
    pub w: usize,
}

impl Conv3x3Shape {
    fn plane(&self) -> usize {
        self.h * self.w
    }

    fn depth(&self) -> usize {
        self.channels * 9
    }
}

/// `y[b, o] = Σ_{c,ky,kx} weight[o, c, ky, kx] · x[b, c, · + ky − 1, · + kx − 1]` (zero padding),
/// `x` as `[images, channels, h, w]`, `weight` as `[out, channels, 3, 3]`, `y` as
/// `[images, out, h, w]`, all contiguous.
pub fn forward(shape: Conv3x3Shape, x: &[f32], weight: &[f32], y: &mut [f32]) {
    let access = WeightAccess {
        row_stride: shape.depth(),
        block_stride: 9,
        reverse_taps: false,
    };
    run(shape, access, x, weight, y);
}

/// The input gradient of [`forward`]: `dx[b, c] = Σ_{o,ky,kx} weight[o, c, ky, kx] ·
/// dy[b, o, · − ky + 1, · − kx + 1]`, `dy` as `[images, out, h, w]`, `dx` as
/// `[images, channels, h, w]` (`shape` is the forward convolution's).
pub fn input_grad(shape: Conv3x3Shape, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    // The GEMM of `forward` with the roles of `channels` and `out` swapped.
    let adjoint = Conv3x3Shape {
        channels: shape.out,
        out: shape.channels,
        ..shape
    };
    let access = WeightAccess {
        row_stride: 9,
        block_stride: shape.depth(),
        reverse_taps: true,
    };
    run(adjoint, access, dy, weight, dx);
}

/// Where weight `(row, channel, tap)` of the GEMM lies: `row · row_stride + channel ·
/// block_stride + tap`, with the panel's taps in reverse order when `reverse_taps`.
#[derive(Clone, Copy, Debug)]
struct WeightAccess {
    row_stride: usize,
    block_stride: usize,
    reverse_taps: bool,
}

/// `y = W · cols(x)` per image, `W` read through `access`.
///
/// Tasks are (image, panel, range of output channels); each writes its tile into its own chunk of
/// a panel-major buffer (`[images][panels][out][nr]`), which one parallel pass then scatters into
/// `y`'s rows. The packed panel lives in a per-thread buffer kept across calls (a task whose
/// panel's output channels are split with another task packs the panel too).
fn run(shape: Conv3x3Shape, access: WeightAccess, x: &[f32], weight: &[f32], y: &mut [f32]) {
    let plane = shape.plane();
    let image_in = shape.channels * plane;
    assert_eq!(x.len(), shape.images * image_in, "conv3x3: input length");
    assert_eq!(
        weight.len(),
        shape.out * shape.depth(),
        "conv3x3: weight length"
    );
    assert_eq!(
        y.len(),
        shape.images * shape.out * plane,
        "conv3x3: output length"
    );
    if y.is_empty() {
        return;
    }
    if shape.channels == 0 {
        y.fill(0.0);
        return;
    }
    let lanes = lanes();
    let nv = if plane <= lanes { 1 } else { NV };
    let nr = nv * lanes;
    let panels = plane.div_ceil(nr);
    // Enough tasks for every thread: split the output channels as well when the panels are few.
    let threads = rayon::current_num_threads().max(1);
    let blocks = shape.out.div_ceil(MR);
    let row_splits = (threads / (shape.images * panels).max(1)).clamp(1, blocks);
    let rows_per_task = blocks.div_ceil(row_splits) * MR;
    // Every float of `tiles` is written by a tile before it is read.
    let mut tiles = TILES.take();
    tiles.resize(shape.images * panels * shape.out * nr, 0.0);
    let mut tasks = Vec::with_capacity(shape.images * panels * row_splits);
    let mut rest = &mut tiles[..];
    for image in 0..shape.images {
        for panel in 0..panels {
            let mut row = 0;
            while row < shape.out {
                let rows = rows_per_task.min(shape.out - row);
                let (tile, tail) = rest.split_at_mut(rows * nr);
                rest = tail;
                tasks.push((
                    Task {
                        image,
                        first_pixel: panel * nr,
                        rows: row..row + rows,
                    },
                    tile,
                ));
                row += rows;
            }
        }
    }
    let depth = shape.depth();
    tasks.into_par_iter().for_each(|(task, tile)| {
        PACKED.with_borrow_mut(|packed| {
            packed.resize(depth * nr, 0.0);
            let packed = &mut packed[..depth * nr];
            let image = &x[task.image * image_in..][..image_in];
            let panel = Panel {
                first: task.first_pixel,
                pixels: nr.min(plane - task.first_pixel),
                nr,
                reverse_taps: access.reverse_taps,
            };
            pack_panel(image, shape, panel, packed);
            let tile = Tile {
                weight: &weight[task.rows.start * access.row_stride..],
                rows: task.rows.len(),
                channels: shape.channels,
                access,
                packed: &*packed,
                tile,
            };
            if nv == 1 {
                pulp::Arch::new().dispatch(tile.vectors::<1>());
            } else {
                pulp::Arch::new().dispatch(tile.vectors::<NV>());
            }
        });
    });
    // Row `o` of image `b` in `y` is panel `p`'s row `o` of `tiles`, for every `p`.
    let out = shape.out;
    y.par_chunks_mut(plane)
        .with_min_len((16 * 1024 / plane).max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (image, o) = (row / out, row % out);
            for (panel, dst) in dst.chunks_mut(nr).enumerate() {
                let src = &tiles[((image * panels + panel) * out + o) * nr..];
                dst.copy_from_slice(&src[..dst.len()]);
            }
        });
    if tiles.len() <= KEPT_TILES {
        TILES.set(tiles);
    }
}

/// The largest panel-major buffer (floats) a thread keeps between calls: 16 MiB, so that a large
/// map's (a 512 × 512 VAE's) buffer is given back instead of held for the thread's lifetime.
const KEPT_TILES: usize = 4 << 20;

thread_local! {
    /// Each thread's packed panel, kept across calls (a fresh one per call page-faulted).
    static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The calling thread's panel-major output, kept across calls (taken while in use, so a
    /// nested call on the same thread allocates its own).
    static TILES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Vector lanes of the `f32` type the dispatched kernels use (8 with AVX2, 16 with AVX-512).
pub fn lanes() -> usize {
    struct Lanes;
    impl WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            size_of::<S::f32s>() / size_of::<f32>()
        }
    }
    pulp::Arch::new().dispatch(Lanes)
}

struct Task {
    image: usize,
    first_pixel: usize,
    rows: std::ops::Range<usize>,
}

/// Which columns of the im2col matrix a panel holds.
#[derive(Clone, Copy, Debug)]
struct Panel {
    /// The first output pixel (row-major over the map).
    first: usize,
    /// Output pixels in the panel (the rest of its `nr` columns are zeros).
    pixels: usize,
    nr: usize,
    /// Tap `t` of a channel goes to row `8 − t` of its nine.
    reverse_taps: bool,
}

/// A run of a panel's pixels on one output row: `len` pixels from `(oy, ox)`, at `offset` in
/// the panel.
#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    offset: usize,
    oy: usize,
    ox: usize,
    len: usize,
}

/// The most segments a panel has: one per pixel on maps one pixel wide.
const MAX_SEGMENTS: usize = 64;

/// Packs `panel`'s columns of `x`'s im2col matrix into `packed` (`[channels · 9][nr]`).
fn pack_panel(x: &[f32], shape: Conv3x3Shape, panel: Panel, packed: &mut [f32]) {
    let (h, w) = (shape.h, shape.w);
    let plane = h * w;
    let Panel {
        first,
        pixels,
        nr,
        reverse_taps,
    } = panel;
    assert!(nr <= MAX_SEGMENTS, "conv3x3: panel of {nr} pixels");
    // The panel's runs of pixels on one output row, found once for every (channel, tap).
    let mut segments = [Segment::default(); MAX_SEGMENTS];
    let mut count = 0;
    let mut n = first;
    while n < first + pixels {
        let (oy, ox) = (n / w, n % w);
        let len = (w - ox).min(first + pixels - n);
        segments[count] = Segment {
            offset: n - first,
            oy,
            ox,
            len,
        };
        count += 1;
        n += len;
    }
    let segments = &segments[..count];
    for (c, block) in packed.chunks_mut(9 * nr).enumerate() {
        let src = &x[c * plane..][..plane];
        for (slot, dst) in block.chunks_mut(nr).enumerate() {
            let tap = if reverse_taps { 8 - slot } else { slot };
            let (ky, kx) = (tap / 3, tap % 3);
            for seg in segments {
                let out = &mut dst[seg.offset..][..seg.len];
                let iy = seg.oy + ky;
                if iy == 0 || iy > h {
                    out.fill(0.0);
                    continue;
                }
                let row = &src[(iy - 1) * w..][..w];
                // Source columns ox + kx − 1 .. ox + kx − 1 + len, clipped to the row (only the
                // first output column at kx = 0 reads left of it).
                let lo = (seg.ox + kx).saturating_sub(1);
                let hi = (seg.ox + kx + seg.len - 1).min(w);
                let skip = usize::from(seg.ox + kx == 0);
                let (head, rest) = out.split_at_mut(skip);
                head.fill(0.0);
                let (body, tail) = rest.split_at_mut(hi - lo);
                body.copy_from_slice(&row[lo..hi]);
                tail.fill(0.0);
            }
            dst[pixels..].fill(0.0);
        }
    }
}

/// One task's tiles: `tile[r] = Σ_{c,t} W(r, c, t) · packed[c · 9 + t]` for `r < rows`, the
/// weight read through `access` from `weight` (which starts at the task's first row); `tile` is
/// `[rows][nr]`.
struct Tile<'a> {
    weight: &'a [f32],
    rows: usize,
    channels: usize,
    access: WeightAccess,
    packed: &'a [f32],
    tile: &'a mut [f32],
}

impl<'a> Tile<'a> {
    /// The tile's kernel with `nr` = `V` vectors.
    fn vectors<const V: usize>(self) -> Vectors<'a, V> {
        Vectors(self)
    }
}

/// [`Tile`] computed with rows of `V` vectors.
struct Vectors<'a, const V: usize>(Tile<'a>);

impl<const V: usize> WithSimd for Vectors<'_, V> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Tile {
            weight,
            rows,
            channels,
            access,
            packed,
            tile,
        } = self.0;
        let (panel, _) = S::as_simd_f32s(packed);
        let (tile, _) = S::as_mut_simd_f32s(tile);
        for (block, c) in tile.chunks_mut(MR * V).enumerate() {
            let a = &weight[block * MR * access.row_stride..];
            let (s, b) = (access.row_stride, access.block_stride);
            match (rows - block * MR).min(MR) {
                1 => micro::<S, 1, V>(simd, a, s, b, channels, panel, c),
                2 => micro::<S, 2, V>(simd, a, s, b, channels, panel, c),
                3 => micro::<S, 3, V>(simd, a, s, b, channels, panel, c),
                4 => micro::<S, 4, V>(simd, a, s, b, channels, panel, c),
                5 => micro::<S, 5, V>(simd, a, s, b, channels, panel, c),
                _ => micro::<S, MR, V>(simd, a, s, b, channels, panel, c),
            }
        }
    }
}

/// `c[r · V + v] = Σ_{ch < channels, t < 9} a[r · row_stride + ch · block_stride + t] ·
/// panel[(ch · 9 + t) · V + v]` for `r < R`: an `R × V`-vector tile held in registers over the
/// whole depth.
#[inline(always)]
fn micro<S: Simd, const R: usize, const V: usize>(
    simd: S,
    a: &[f32],
    row_stride: usize,
    block_stride: usize,
    channels: usize,
    panel: &[S::f32s],
    c: &mut [S::f32s],
) {
    let mut acc = [[simd.splat_f32s(0.0); V]; R];
    for (ch, b) in panel.chunks_exact(9 * V).take(channels).enumerate() {
        let taps: [&[f32]; R] =
            std::array::from_fn(|r| &a[r * row_stride + ch * block_stride..][..9]);
        for t in 0..9 {
            for r in 0..R {
                let av = simd.splat_f32s(taps[r][t]);
                for v in 0..V {
                    acc[r][v] = simd.mul_add_e_f32s(av, b[t * V + v], acc[r][v]);
                }
            }
        }
    }
    for (dst, acc) in c.chunks_exact_mut(V).zip(acc) {
        dst.copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_values as values;

    fn reference(shape: Conv3x3Shape, x: &[f32], weight: &[f32]) -> Vec<f64> {
        let Conv3x3Shape {
            images,
            channels,
            out,
            h,
            w,
        } = shape;
        let mut y = vec![0.0f64; images * out * h * w];
        for b in 0..images {
            for o in 0..out {
                for oy in 0..h {
                    for ox in 0..w {
                        let mut s = 0.0f64;
                        for c in 0..channels {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (oy + ky, ox + kx);
                                    if iy == 0 || ix == 0 || iy > h || ix > w {
                                        continue;
                                    }
                                    s += weight[((o * channels + c) * 3 + ky) * 3 + kx] as f64
                                        * x[((b * channels + c) * h + iy - 1) * w + ix - 1] as f64;
                                }
                            }
                        }
                        y[((b * out + o) * h + oy) * w + ox] = s;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_the_definition() {
        // Ragged panels, channel counts off the tile size, maps narrower than a vector, one pixel.
        for (images, channels, out, h, w) in [
            (1, 3, 5, 4, 5),
            (2, 2, 7, 1, 1),
            (1, 1, 13, 2, 7),
            (2, 17, 16, 16, 16),
            (1, 8, 6, 8, 8),
            (3, 5, 1, 4, 4),
            (1, 4, 9, 3, 37),
        ] {
            let shape = Conv3x3Shape {
                images,
                channels,
                out,
                h,
                w,
            };
            let x = values(images * channels * h * w, 0.37);
            let weight = values(out * channels * 9, 0.91);
            let mut y = vec![f32::NAN; images * out * h * w];
            forward(shape, &x, &weight, &mut y);
            for (i, (got, want)) in y.iter().zip(reference(shape, &x, &weight)).enumerate() {
                assert!(
                    (*got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{shape:?} at {i}: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn input_grad_is_the_adjoint() {
        // <conv(x, W), g> = <x, input_grad(g, W)> for every x and g.
        for (images, channels, out, h, w) in [(1, 3, 4, 5, 6), (2, 7, 13, 4, 4), (1, 2, 1, 1, 9)] {
            let shape = Conv3x3Shape {
                images,
                channels,
                out,
                h,
                w,
            };
            let x = values(images * channels * h * w, 0.37);
            let g = values(images * out * h * w, 0.53);
            let weight = values(out * channels * 9, 0.91);
            let mut y = vec![0.0; g.len()];
            forward(shape, &x, &weight, &mut y);
            let mut dx = vec![f32::NAN; x.len()];
            input_grad(shape, &g, &weight, &mut dx);
            let lhs: f64 = y.iter().zip(&g).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
                "{shape:?}: {lhs} against {rhs}"
            );
        }
    }
}
