//! The analytic renderer: anti-aliased by supersampling (4 × 4 samples per pixel, box-filtered
//! down), RGB in `[0, 1]`, and the perturbations that make worse images of the same scene
//! (for the preference pairs, the aesthetic targets and the tests of h).

use burn::prelude::*;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::world::{COLOURS, IMAGE_SIZE, Object, Position, SHAPES, Scene, Shape, Size};

/// Samples per pixel side (4 × 4 = 16 per pixel).
pub const SUPERSAMPLE: usize = 4;

/// A 32 × 32 RGB image, channel-major (`[3, 32, 32]`), values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// `3 · 32 · 32` values, channel-major.
    pub pixels: Vec<f32>,
}

impl Image {
    /// A uniform image.
    pub fn filled(rgb: [f32; 3]) -> Self {
        let n = IMAGE_SIZE * IMAGE_SIZE;
        let mut pixels = Vec::with_capacity(3 * n);
        for c in rgb {
            pixels.extend(std::iter::repeat_n(c, n));
        }
        Self { pixels }
    }

    /// The RGB value at row `i`, column `j`.
    pub fn rgb(&self, i: usize, j: usize) -> [f32; 3] {
        let n = IMAGE_SIZE * IMAGE_SIZE;
        let k = i * IMAGE_SIZE + j;
        [self.pixels[k], self.pixels[n + k], self.pixels[2 * n + k]]
    }

    /// Stacks images into a batch `[B, 3, 32, 32]`.
    pub fn batch(images: &[Image], device: &Device) -> Tensor<4> {
        let data: Vec<f32> = images
            .iter()
            .flat_map(|im| im.pixels.iter().copied())
            .collect();
        Tensor::from_data(
            TensorData::new(data, [images.len(), 3, IMAGE_SIZE, IMAGE_SIZE]),
            device,
        )
    }

    /// Splits a batch `[B, 3, 32, 32]` back into images (values clamped to `[0, 1]`).
    ///
    /// # Panics
    /// If the batch does not have that shape.
    pub fn unbatch(batch: Tensor<4>) -> Vec<Image> {
        let [b, c, h, w] = batch.dims();
        assert_eq!(
            [c, h, w],
            [3, IMAGE_SIZE, IMAGE_SIZE],
            "Image::unbatch: shape"
        );
        let data = batch
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        data.chunks_exact(3 * h * w)
            .take(b)
            .map(|p| Image {
                pixels: p.iter().map(|v| v.clamp(0.0, 1.0)).collect(),
            })
            .collect()
    }

    /// 8-bit RGB bytes, row-major interleaved (for PNG).
    pub fn to_rgb8(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pixels.len());
        for i in 0..IMAGE_SIZE {
            for j in 0..IMAGE_SIZE {
                for v in self.rgb(i, j) {
                    out.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
                }
            }
        }
        out
    }
}

/// The level function of `shape` at offset `(dx, dy)` from its centre, half-extent `s`: `≤ 0`
/// inside.
pub fn level(shape: Shape, dx: f32, dy: f32, s: f32) -> f32 {
    match shape {
        Shape::Circle => (dx * dx + dy * dy).sqrt() - s,
        Shape::Square => dx.abs().max(dy.abs()) - s,
        Shape::Triangle => (dy - s).max(-s - dy).max(dx.abs() - (dy + s) / 2.0),
        Shape::Cross => {
            let w = s / 3.0;
            let vertical = (dx.abs() - w).max(dy.abs() - s);
            let horizontal = (dy.abs() - w).max(dx.abs() - s);
            vertical.min(horizontal)
        }
    }
}

/// Whether the point `(x, y)` lies inside `shape` centred at `(cx, cy)` with half-extent `s`.
pub fn inside(shape: Shape, cx: f32, cy: f32, s: f32, x: f32, y: f32) -> bool {
    level(shape, x - cx, y - cy, s) <= 0.0
}

/// The anti-aliased coverage of `shape` per pixel (`32 · 32`, row-major, in `[0, 1]`).
pub fn coverage(shape: Shape, cx: f32, cy: f32, s: f32) -> Vec<f32> {
    let n = IMAGE_SIZE;
    let mut alpha = vec![0.0f32; n * n];
    let lo = |c: f32| ((c - s - 1.0).floor().max(0.0)) as usize;
    let hi = |c: f32| ((c + s + 1.0).ceil().max(0.0) as usize).min(n);
    let step = 1.0 / SUPERSAMPLE as f32;
    let weight = step * step;
    for i in lo(cy)..hi(cy) {
        for j in lo(cx)..hi(cx) {
            let mut cover = 0.0;
            for si in 0..SUPERSAMPLE {
                let dy = i as f32 + (si as f32 + 0.5) * step - cy;
                for sj in 0..SUPERSAMPLE {
                    let dx = j as f32 + (sj as f32 + 0.5) * step - cx;
                    if level(shape, dx, dy, s) <= 0.0 {
                        cover += weight;
                    }
                }
            }
            alpha[i * n + j] = cover;
        }
    }
    alpha
}

/// A way to make an image of a scene worse, with a strength `t ∈ [0, 1]` (0: no change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Perturbation {
    /// Gaussian pixel noise, σ = 0.12 t (taste: texture, background).
    Noise,
    /// Gaussian blur, σ = 1.2 √t px (taste: edges).
    Blur,
    /// Horizontal motion blur over 3 √t px (taste: edges).
    Smear,
    /// Object colours pulled 60 t % toward the background (taste: contrast).
    LowContrast,
    /// A sinusoidal background pattern of amplitude 0.2 t (taste: background).
    BackgroundTexture,
    /// Objects pushed onto the nearer side border (half a pixel over it as soon as t > 0), 40 %
    /// out of frame at t = 1 (taste: framing).
    Clip,
    /// Object colours moved toward another palette colour, on the straight path that stays
    /// farthest from the background (fidelity: colour).
    WrongColour,
    /// Objects drawn as the next shape of [`SHAPES`] for any t > 0 (fidelity: shape; a discrete
    /// change, since an in-between shape would also be a worse-looking one).
    WrongShape,
    /// Objects scaled toward the other size class (fidelity: size).
    WrongSize,
    /// Single objects moved toward the mirrored anchor (fidelity: position); two-object scenes,
    /// whose positions the caption does not name, are left as they are.
    WrongPosition,
}

/// Every perturbation.
pub const PERTURBATIONS: [Perturbation; 10] = [
    Perturbation::Noise,
    Perturbation::Blur,
    Perturbation::Smear,
    Perturbation::LowContrast,
    Perturbation::BackgroundTexture,
    Perturbation::Clip,
    Perturbation::WrongColour,
    Perturbation::WrongShape,
    Perturbation::WrongSize,
    Perturbation::WrongPosition,
];

/// The perturbations that change only h's taste part (the image still shows the prompt).
pub const TASTE_PERTURBATIONS: [Perturbation; 6] = [
    Perturbation::Noise,
    Perturbation::Blur,
    Perturbation::Smear,
    Perturbation::LowContrast,
    Perturbation::BackgroundTexture,
    Perturbation::Clip,
];

/// Renders `scene` exactly as its attributes say.
pub fn render(scene: &Scene) -> Image {
    render_perturbed(scene, &[], 0)
}

/// Renders `scene` with `perturbations` (each with its strength in `[0, 1]`); `seed` draws the
/// noise. Geometry and colour perturbations act on the scene, then smear, blur and noise on the
/// pixels, in that order.
pub fn render_perturbed(scene: &Scene, perturbations: &[(Perturbation, f32)], seed: u64) -> Image {
    let strength = |p: Perturbation| {
        perturbations
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, t)| t.clamp(0.0, 1.0))
            .fold(0.0f32, f32::max)
    };
    let n = IMAGE_SIZE;
    let bg = scene.background.rgb();
    let mut image = Image::filled(bg);
    let texture = strength(Perturbation::BackgroundTexture);
    if texture > 0.0 {
        for i in 0..n {
            for j in 0..n {
                let (x, y) = (j as f32, i as f32);
                let v = 0.2 * texture * ((x * 0.9 + y * 0.4).sin() * 0.6 + (y * 1.3).cos() * 0.4);
                for c in 0..3 {
                    let k = c * n * n + i * n + j;
                    image.pixels[k] = (image.pixels[k] + v).clamp(0.0, 1.0);
                }
            }
        }
    }
    for object in &scene.objects {
        let o = perturb_geometry(object, scene.objects.len() > 1, &strength);
        let shape = if strength(Perturbation::WrongShape) > 0.0 {
            next_shape(o.shape)
        } else {
            o.shape
        };
        let alpha = coverage(shape, o.cx, o.cy, o.s);
        let mut rgb = o.colour.rgb();
        let recolour = strength(Perturbation::WrongColour);
        if recolour > 0.0 {
            let other = other_colour(scene, &o).rgb();
            let rgb0 = rgb;
            for c in 0..3 {
                rgb[c] = rgb0[c] + recolour * (other[c] - rgb0[c]);
            }
        }
        let fade = 0.6 * strength(Perturbation::LowContrast);
        for c in 0..3 {
            rgb[c] += fade * (bg[c] - rgb[c]);
        }
        for (k, a) in alpha.iter().enumerate() {
            if *a > 0.0 {
                for (c, v) in rgb.iter().enumerate() {
                    let p = &mut image.pixels[c * n * n + k];
                    *p = *p * (1.0 - a) + v * a;
                }
            }
        }
    }
    let smear = strength(Perturbation::Smear);
    if smear > 0.0 {
        image = convolve_rows(&image, &box_kernel(3.0 * smear.sqrt()));
    }
    let blur = strength(Perturbation::Blur);
    if blur > 0.0 {
        let k = gaussian_kernel(1.2 * blur.sqrt());
        image = transpose(&convolve_rows(&transpose(&convolve_rows(&image, &k)), &k));
    }
    let noise = strength(Perturbation::Noise);
    if noise > 0.0 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for p in &mut image.pixels {
            let z: f32 = rng.sample(StandardNormal);
            *p = (*p + 0.12 * noise * z).clamp(0.0, 1.0);
        }
    }
    image
}

fn next_shape(shape: Shape) -> Shape {
    let k = SHAPES.iter().position(|&s| s == shape).unwrap_or(0);
    SHAPES[(k + 1) % SHAPES.len()]
}

/// The colour a `WrongColour` perturbation moves toward: of the palette colours that the
/// background allows and no other object of the scene has, the one whose straight path from the
/// object's colour keeps farthest from the background (so the object stays visible throughout).
fn other_colour(scene: &Scene, o: &Object) -> crate::world::Colour {
    let bg = scene.background.rgb();
    let from = o.colour.rgb();
    let clearance = |c: crate::world::Colour| {
        let to = c.rgb();
        (0..=20)
            .map(|k| {
                let t = k as f32 / 20.0;
                (0..3)
                    .map(|i| (from[i] + t * (to[i] - from[i]) - bg[i]).powi(2))
                    .sum::<f32>()
                    .sqrt()
            })
            .fold(f32::INFINITY, f32::min)
    };
    COLOURS
        .into_iter()
        .filter(|&c| c != o.colour)
        .filter(|&c| scene.background.allows(c) && scene.objects.iter().all(|x| x.colour != c))
        .max_by(|a, b| clearance(*a).total_cmp(&clearance(*b)))
        .unwrap_or(o.colour)
}

fn perturb_geometry(
    object: &Object,
    in_pair: bool,
    strength: &impl Fn(Perturbation) -> f32,
) -> Object {
    let mut o = *object;
    let size = strength(Perturbation::WrongSize);
    o.s *= match o.size {
        Size::Small => 1.0 + 0.9 * size,
        Size::Large => 1.0 - 0.45 * size,
    };
    let moved = strength(Perturbation::WrongPosition);
    if moved > 0.0 && !in_pair {
        let target = match o.position {
            Position::Centre => Position::TopLeft.anchor(),
            p => {
                let (ax, ay) = p.anchor();
                (IMAGE_SIZE as f32 - ax, IMAGE_SIZE as f32 - ay)
            }
        };
        o.cx += moved * (target.0 - o.cx);
        o.cy += moved * (target.1 - o.cy);
    }
    let clip = strength(Perturbation::Clip);
    if clip > 0.0 {
        // Onto the nearer side border, then over it until 40 % of the width is outside.
        let m = IMAGE_SIZE as f32;
        let (left, right) = (o.cx - o.s, m - o.cx - o.s);
        let shift = |gap: f32| gap - 0.5 + clip * (0.8 * o.s + 0.5);
        if left <= right {
            o.cx -= shift(left);
        } else {
            o.cx += shift(right);
        }
    }
    o
}

/// A normalised, symmetric box kernel `len + 1` pixels wide (fractional end taps), odd length.
fn box_kernel(len: f32) -> Vec<f32> {
    let half = len / 2.0;
    let r = (half + 0.5).ceil() as i32;
    let k: Vec<f32> = (-r..=r)
        .map(|d| (half + 1.0 - d.abs() as f32).clamp(0.0, 1.0))
        .collect();
    let total: f32 = k.iter().sum();
    k.iter().map(|v| v / total).collect()
}

fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i32;
    let k: Vec<f32> = (-r..=r)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = k.iter().sum();
    k.iter().map(|v| v / total).collect()
}

/// Convolves every row with `kernel` centred, edges clamped.
fn convolve_rows(image: &Image, kernel: &[f32]) -> Image {
    let n = IMAGE_SIZE as i32;
    let r = (kernel.len() / 2) as i32;
    let mut out = image.clone();
    for c in 0..3 {
        for i in 0..n {
            for j in 0..n {
                let mut acc = 0.0;
                for (t, w) in kernel.iter().enumerate() {
                    let jj = (j + t as i32 - r).clamp(0, n - 1);
                    acc += w * image.pixels[((c * n + i) * n + jj) as usize];
                }
                out.pixels[((c * n + i) * n + j) as usize] = acc;
            }
        }
    }
    out
}

fn transpose(image: &Image) -> Image {
    let n = IMAGE_SIZE;
    let mut out = image.clone();
    for c in 0..3 {
        for i in 0..n {
            for j in 0..n {
                out.pixels[(c * n + j) * n + i] = image.pixels[(c * n + i) * n + j];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{Background, Colour, Named, Split};

    fn scene_of(shape: Shape, s: f32) -> Scene {
        let o = Object {
            shape,
            colour: Colour::Red,
            size: Size::Large,
            position: Position::Centre,
            cx: 16.0,
            cy: 16.0,
            s,
        };
        Scene {
            background: Background::Gray,
            objects: vec![o],
            named: Named::default(),
            caption: "a red circle".into(),
        }
    }

    #[test]
    fn coverage_areas_match_the_analytic_areas() {
        let s = 7.0f32;
        for (shape, area) in [
            (Shape::Circle, std::f32::consts::PI * s * s),
            (Shape::Square, 4.0 * s * s),
            (Shape::Triangle, 2.0 * s * s),
            (Shape::Cross, 20.0 * s * s / 9.0),
        ] {
            let total: f32 = coverage(shape, 16.3, 15.8, s).iter().sum();
            assert!(
                (total - area).abs() / area < 0.02,
                "{shape:?}: {total} vs {area}"
            );
        }
    }

    #[test]
    fn renders_are_anti_aliased_and_in_range() {
        let image = render(&scene_of(Shape::Circle, 6.3));
        assert!(image.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        // Edge pixels take intermediate values; the centre is the object's colour.
        let red = (0..32).flat_map(|i| (0..32).map(move |j| (i, j)));
        let partial = red.filter(|&(i, j)| {
            let r = image.rgb(i, j)[0];
            r > 0.55 && r < 0.95
        });
        assert!(partial.count() > 10);
        assert_eq!(image.rgb(16, 16), [1.0, 0.0, 0.0]);
        assert_eq!(image.rgb(0, 0), [0.5, 0.5, 0.5]);
    }

    #[test]
    fn renders_are_deterministic_and_noise_follows_the_seed() {
        let scene = Split::Train.scene(3);
        assert_eq!(render(&scene), render(&scene));
        let p = [(Perturbation::Noise, 0.5)];
        assert_eq!(
            render_perturbed(&scene, &p, 1),
            render_perturbed(&scene, &p, 1)
        );
        assert_ne!(
            render_perturbed(&scene, &p, 1),
            render_perturbed(&scene, &p, 2)
        );
    }

    #[test]
    fn every_perturbation_changes_the_image_and_zero_strength_does_not() {
        let scene = Split::Train.scene(11);
        let clean = render(&scene);
        for p in PERTURBATIONS {
            assert_eq!(render_perturbed(&scene, &[(p, 0.0)], 0), clean, "{p:?}");
            assert_ne!(render_perturbed(&scene, &[(p, 0.7)], 0), clean, "{p:?}");
        }
    }

    #[test]
    fn batches_round_trip() {
        let images: Vec<Image> = (0..3).map(|i| render(&Split::Train.scene(i))).collect();
        let batch = Image::batch(&images, &Device::flex());
        assert_eq!(batch.dims(), [3, 3, 32, 32]);
        assert_eq!(Image::unbatch(batch), images);
    }
}
