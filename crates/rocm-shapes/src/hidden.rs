//! The hidden "human" of docs/world.md §2: a deterministic, pixel-level preference `h(image, prompt)`,
//! never differentiated and never used as a training reward (only to label comparisons and to
//! evaluate).
//!
//! # The detector
//! 1. Background colour `b`: the per-channel median of the 124 border pixels.
//! 2. Foreground: pixels with `‖p − b‖ > 0.3`, without those with fewer than two foreground
//!    4-neighbours (isolated noise); 4-connected components of at least 5 pixels are objects.
//! 3. Per object: its colour `c` is the mean of its core pixels (`‖p − b‖ ≥ 0.75 · max`); its soft
//!    mask is `α(p) = clamp((p − b)·(c − b) / ‖c − b‖², 0, 1)` over the component grown by one pixel;
//!    area `A = Σα`, centroid `(x̄, ȳ)`.
//! 4. Shape: for each shape k the renderer's own anti-aliased coverage is fitted by moments
//!    (`s_k = √(A / a_k)` with `a = π, 4, 2, 20/9` for circle, square, triangle, cross, centre at
//!    the centroid, `ȳ − s/3` for the triangle), and scored by the soft IoU
//!    `IoU_k = Σ min(α, α_k) / Σ max(α, α_k)`; the detected shape is the arg-max.
//!
//! # The formula
//! `h = F + T`, both in `[0, 1]`, so `h ∈ [0, 2]` (a perfect render scores about 1.97–2).
//!
//! **Fidelity** `F`: each object of the prompt is matched (greedily, in prompt order) to the
//! unused detection that scores best; its score is the mean over the attributes the prompt names of
//! - colour `exp(−(‖c − c_named‖ / 0.3)²)`,
//! - shape `clamp((IoU_named − 0.5) / 0.45, 0, 1)`, halved when another shape fits better,
//! - size `σ((e − 4.5) / 0.1)` for large, `σ((4.5 − e) / 0.1)` for small, `e` half the larger
//!   of the mask's width and height (the sums of its column and row maxima),
//! - position `exp(−max(0, d − 2.2)² / 4)`, `d` the fitted centre's distance to the anchor;
//!
//! an object with no detection left scores 0. A named background adds the term
//! `exp(−(‖b − b_named‖ / 0.3)²)`. `F` is the mean of these terms times `1 / (1 + 0.5 · extra)`,
//! `extra` the number of detections beyond the prompt's objects.
//!
//! **Taste** `T` is the mean of five terms, each averaged over the detections (0 without any):
//! - clean background `exp(−(σ_b / 0.05)²)`, `σ_b` the channel-mean standard deviation of the pixels
//!   away from every object (this one is also defined without detections),
//! - crisp edges `clamp((max_k IoU_k − 0.5) / 0.45, 0, 1)`,
//! - framing `½ clamp((m + 1) / 2, 0, 1) + ½ exp(−β / 3)`, `m` the best-fit box's margin to the
//!   image border in pixels, `β` the object's `Σα` over the outermost pixels,
//! - contrast `clamp(‖c − b‖ / 0.6, 0, 1)`,
//! - clean object `exp(−(σ_o / 0.05)²)`, `σ_o` the standard deviation of the pixels with `α > 0.95`.

use burn::prelude::*;
use rocm_rewards::RewardModel;

use crate::render::{Image, coverage};
use crate::world::{
    BACKGROUNDS, Background, COLOURS, Colour, IMAGE_SIZE, ObjectSpec, Position, PromptSpec, SHAPES,
    Shape, Size,
};

/// Foreground threshold on `‖p − b‖`.
const FOREGROUND: f32 = 0.3;
/// Smallest component kept, in pixels.
const MIN_PIXELS: usize = 5;
/// The boundary between the size classes, half-extent in pixels.
const SIZE_BOUNDARY: f32 = 4.5;

/// One object the detector found.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Mean colour of the core pixels.
    pub rgb: [f32; 3],
    /// The nearest palette colour.
    pub colour: Colour,
    /// Soft IoU of the fitted template of each shape, in [`SHAPES`] order.
    pub iou: [f32; 4],
    /// The best-fitting shape.
    pub shape: Shape,
    /// The fitted centre and half-extent of each shape, in [`SHAPES`] order.
    pub fits: [(f32, f32, f32); 4],
    /// Soft area `Σα` in pixels.
    pub area: f32,
    /// The size class of the best fit.
    pub size: Size,
    /// The position class of the best fit's centre.
    pub position: Position,
    /// Standard deviation of the pixels with `α > 0.95` (channel mean).
    pub texture: f32,
    /// `Σα` over the image's outermost pixels (an object cut by the frame has some).
    pub border_mass: f32,
    /// Half the larger of the mask's width and height (sums of its column / row maxima), px.
    pub extent: f32,
}

impl Detection {
    /// The best fit `(cx, cy, s)`.
    pub fn best_fit(&self) -> (f32, f32, f32) {
        self.fits[shape_index(self.shape)]
    }
}

/// What the detector sees in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The background colour estimate.
    pub background_rgb: [f32; 3],
    /// The nearest background of the palette.
    pub background: Background,
    /// Standard deviation of the pixels away from every object (channel mean).
    pub background_std: f32,
    /// The objects, in raster order of their first pixel.
    pub objects: Vec<Detection>,
}

/// h and its parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preference {
    /// Prompt fidelity `F ∈ [0, 1]`.
    pub fidelity: f32,
    /// Taste `T ∈ [0, 1]`.
    pub taste: f32,
    /// `h = F + T`.
    pub h: f32,
}

/// `h(image, prompt)` (see the module docs for the formula).
pub fn h(image: &Image, prompt: &str) -> f32 {
    preference(image, prompt).h
}

/// `h(image, prompt)` with its fidelity and taste parts.
pub fn preference(image: &Image, prompt: &str) -> Preference {
    let analysis = detect(image);
    let fidelity = fidelity(&analysis, &PromptSpec::parse(prompt));
    let taste = taste(&analysis);
    Preference {
        fidelity,
        taste,
        h: fidelity + taste,
    }
}

fn shape_index(shape: Shape) -> usize {
    SHAPES.iter().position(|&s| s == shape).unwrap_or(0)
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

fn std_dev(values: &[[f32; 3]]) -> f32 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f32;
    (0..3)
        .map(|c| {
            let mean = values.iter().map(|v| v[c]).sum::<f32>() / n;
            (values.iter().map(|v| (v[c] - mean).powi(2)).sum::<f32>() / n).sqrt()
        })
        .sum::<f32>()
        / 3.0
}

/// Runs the detector (module docs, steps 1–4).
pub fn detect(image: &Image) -> Analysis {
    let n = IMAGE_SIZE;
    let border: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .filter(|&(i, j)| i == 0 || j == 0 || i == n - 1 || j == n - 1)
        .collect();
    let bg: [f32; 3] =
        std::array::from_fn(|c| median(border.iter().map(|&(i, j)| image.rgb(i, j)[c]).collect()));
    let d: Vec<f32> = (0..n * n)
        .map(|k| dist(image.rgb(k / n, k % n), bg))
        .collect();
    let raw: Vec<bool> = d.iter().map(|&v| v > FOREGROUND).collect();
    let neighbours = |k: usize| {
        let (i, j) = (k / n, k % n);
        let mut out = Vec::with_capacity(4);
        if i > 0 {
            out.push(k - n);
        }
        if i + 1 < n {
            out.push(k + n);
        }
        if j > 0 {
            out.push(k - 1);
        }
        if j + 1 < n {
            out.push(k + 1);
        }
        out
    };
    let mask: Vec<bool> = (0..n * n)
        .map(|k| raw[k] && neighbours(k).iter().filter(|&&q| raw[q]).count() >= 2)
        .collect();
    // Connected components.
    let mut label = vec![usize::MAX; n * n];
    let mut components: Vec<Vec<usize>> = Vec::new();
    for start in 0..n * n {
        if !mask[start] || label[start] != usize::MAX {
            continue;
        }
        let id = components.len();
        let mut stack = vec![start];
        label[start] = id;
        let mut pixels = Vec::new();
        while let Some(k) = stack.pop() {
            pixels.push(k);
            for q in neighbours(k) {
                if mask[q] && label[q] == usize::MAX {
                    label[q] = id;
                    stack.push(q);
                }
            }
        }
        components.push(pixels);
    }
    components.retain(|c| c.len() >= MIN_PIXELS);
    let mut near_object = vec![false; n * n];
    let objects: Vec<Detection> = components
        .iter()
        .map(|pixels| {
            let region = grow(pixels, &neighbours);
            for &k in &region {
                near_object[k] = true;
                for q in neighbours(k) {
                    near_object[q] = true;
                }
            }
            describe(image, bg, &d, pixels, &region)
        })
        .collect();
    let background_pixels: Vec<[f32; 3]> = (0..n * n)
        .filter(|&k| !near_object[k] && !raw[k])
        .map(|k| image.rgb(k / n, k % n))
        .collect();
    let background = BACKGROUNDS
        .into_iter()
        .min_by(|a, b| dist(a.rgb(), bg).total_cmp(&dist(b.rgb(), bg)))
        .unwrap_or(Background::Gray);
    Analysis {
        background_rgb: bg,
        background,
        background_std: std_dev(&background_pixels),
        objects,
    }
}

/// The pixels of a component and their 4-neighbours.
fn grow(pixels: &[usize], neighbours: &impl Fn(usize) -> Vec<usize>) -> Vec<usize> {
    let mut region: Vec<usize> = pixels
        .iter()
        .flat_map(|&k| std::iter::once(k).chain(neighbours(k)))
        .collect();
    region.sort_unstable();
    region.dedup();
    region
}

/// Area factors `A = a_k s²` of the shapes, in [`SHAPES`] order.
const AREA_FACTORS: [f32; 4] = [std::f32::consts::PI, 4.0, 2.0, 20.0 / 9.0];

fn describe(
    image: &Image,
    bg: [f32; 3],
    d: &[f32],
    pixels: &[usize],
    region: &[usize],
) -> Detection {
    let n = IMAGE_SIZE;
    // Core: the quarter of the component's pixels farthest from the background.
    let mut by_distance: Vec<f32> = pixels.iter().map(|&k| d[k]).collect();
    by_distance.sort_by(|a, b| b.total_cmp(a));
    let cut = by_distance[(pixels.len() / 4).min(by_distance.len() - 1)];
    let core: Vec<[f32; 3]> = pixels
        .iter()
        .filter(|&&k| d[k] >= cut)
        .map(|&k| image.rgb(k / n, k % n))
        .collect();
    let rgb: [f32; 3] =
        std::array::from_fn(|c| core.iter().map(|v| v[c]).sum::<f32>() / core.len().max(1) as f32);
    let axis: [f32; 3] = std::array::from_fn(|c| rgb[c] - bg[c]);
    let norm2 = axis.iter().map(|v| v * v).sum::<f32>().max(1e-6);
    let mut alpha = vec![0.0f32; n * n];
    for &k in region {
        let p = image.rgb(k / n, k % n);
        let proj: f32 = (0..3).map(|c| (p[c] - bg[c]) * axis[c]).sum::<f32>() / norm2;
        alpha[k] = proj.clamp(0.0, 1.0);
    }
    let area: f32 = alpha.iter().sum();
    let (mut mx, mut my) = (0.0, 0.0);
    for (k, a) in alpha.iter().enumerate() {
        mx += a * ((k % n) as f32 + 0.5);
        my += a * ((k / n) as f32 + 0.5);
    }
    let area_safe = area.max(1e-6);
    let (mx, my) = (mx / area_safe, my / area_safe);
    let mut iou = [0.0f32; 4];
    let mut fits = [(0.0f32, 0.0f32, 0.0f32); 4];
    for (k, shape) in SHAPES.into_iter().enumerate() {
        let s = (area / AREA_FACTORS[k]).sqrt();
        let cy = if shape == Shape::Triangle {
            my - s / 3.0
        } else {
            my
        };
        let template = coverage(shape, mx, cy, s);
        let (mut inter, mut union) = (0.0f32, 0.0f32);
        for (a, t) in alpha.iter().zip(&template) {
            inter += a.min(*t);
            union += a.max(*t);
        }
        iou[k] = if union > 0.0 { inter / union } else { 0.0 };
        fits[k] = (mx, cy, s);
    }
    let best = (0..4)
        .max_by(|&a, &b| iou[a].total_cmp(&iou[b]))
        .unwrap_or(0);
    let (cx, cy, _) = fits[best];
    // Extent: the sums of the mask's column and row maxima (robust to a cut by the frame).
    let width: f32 = (0..n)
        .map(|j| (0..n).map(|i| alpha[i * n + j]).fold(0.0, f32::max))
        .sum();
    let height: f32 = (0..n)
        .map(|i| (0..n).map(|j| alpha[i * n + j]).fold(0.0, f32::max))
        .sum();
    let extent = width.max(height) / 2.0;

    let solid: Vec<[f32; 3]> = region
        .iter()
        .filter(|&&k| alpha[k] > 0.95)
        .map(|&k| image.rgb(k / n, k % n))
        .collect();
    let colour = COLOURS
        .into_iter()
        .min_by(|a, b| dist(a.rgb(), rgb).total_cmp(&dist(b.rgb(), rgb)))
        .unwrap_or(Colour::Red);
    Detection {
        rgb,
        colour,
        iou,
        shape: SHAPES[best],
        fits,
        area,
        size: if extent >= SIZE_BOUNDARY {
            Size::Large
        } else {
            Size::Small
        },
        extent,
        position: Position::nearest(cx, cy),
        texture: std_dev(&solid),
        border_mass: alpha
            .iter()
            .enumerate()
            .filter(|(k, _)| {
                let (i, j) = (k / n, k % n);
                i == 0 || j == 0 || i == n - 1 || j == n - 1
            })
            .map(|(_, a)| a)
            .sum(),
    }
}

/// The logistic function `1 / (1 + e^−x)`.
pub(crate) fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The score of detection `det` for the object `spec` asks for (mean over named attributes).
fn object_score(det: &Detection, spec: &ObjectSpec) -> f32 {
    let mut terms = Vec::with_capacity(4);
    if let Some(c) = spec.colour {
        terms.push((-(dist(det.rgb, c.rgb()) / 0.3).powi(2)).exp());
    }
    if let Some(shape) = spec.shape {
        let k = shape_index(shape);
        let fit = ((det.iou[k] - 0.5) / 0.45).clamp(0.0, 1.0);
        let beaten = det
            .iou
            .iter()
            .enumerate()
            .any(|(j, &v)| j != k && v > det.iou[k]);
        terms.push(if beaten { 0.5 * fit } else { fit });
    }
    let (cx, cy, _) = det.best_fit();
    if let Some(size) = spec.size {
        let s = det.extent;
        terms.push(match size {
            Size::Large => logistic((s - SIZE_BOUNDARY) / 0.1),
            Size::Small => logistic((SIZE_BOUNDARY - s) / 0.1),
        });
    }
    if let Some(position) = spec.position {
        let (ax, ay) = position.anchor();
        let d = ((cx - ax).powi(2) + (cy - ay).powi(2)).sqrt();
        terms.push((-(d - 2.2).max(0.0).powi(2) / 4.0).exp());
    }
    if terms.is_empty() {
        1.0
    } else {
        terms.iter().sum::<f32>() / terms.len() as f32
    }
}

/// Prompt fidelity `F` of an analysed image (module docs).
pub fn fidelity(analysis: &Analysis, spec: &PromptSpec) -> f32 {
    let mut used = vec![false; analysis.objects.len()];
    let mut terms = Vec::new();
    for object in &spec.objects {
        let best = analysis
            .objects
            .iter()
            .enumerate()
            .filter(|(k, _)| !used[*k])
            .map(|(k, det)| (k, object_score(det, object)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((k, score)) => {
                used[k] = true;
                terms.push(score);
            }
            None => terms.push(0.0),
        }
    }
    if let Some(bg) = spec.background {
        terms.push((-(dist(analysis.background_rgb, bg.rgb()) / 0.3).powi(2)).exp());
    }
    if terms.is_empty() {
        return 1.0;
    }
    let extra = analysis.objects.len().saturating_sub(spec.objects.len()) as f32;
    terms.iter().sum::<f32>() / terms.len() as f32 / (1.0 + 0.5 * extra)
}

/// Taste `T` of an analysed image (module docs).
pub fn taste(analysis: &Analysis) -> f32 {
    let clean_background = (-(analysis.background_std / 0.05).powi(2)).exp();
    if analysis.objects.is_empty() {
        return clean_background / 5.0;
    }
    let m = analysis.objects.len() as f32;
    let mean = |f: &dyn Fn(&Detection) -> f32| analysis.objects.iter().map(f).sum::<f32>() / m;
    let edges = mean(&|d| {
        let best = d.iou.iter().copied().fold(0.0f32, f32::max);
        ((best - 0.5) / 0.45).clamp(0.0, 1.0)
    });
    let framing = mean(&|d| {
        let (cx, cy, s) = d.best_fit();
        let side = IMAGE_SIZE as f32;
        let margin = (cx - s).min(side - cx - s).min(cy - s).min(side - cy - s);
        0.5 * ((margin + 1.0) / 2.0).clamp(0.0, 1.0) + 0.5 * (-d.border_mass / 3.0).exp()
    });
    let contrast = mean(&|d| (dist(d.rgb, analysis.background_rgb) / 0.6).clamp(0.0, 1.0));
    let clean_object = mean(&|d| (-(d.texture / 0.05).powi(2)).exp());
    (clean_background + edges + framing + contrast + clean_object) / 5.0
}

/// `h` as an image [`RewardModel`] named `"h"`, for **evaluation only**: the held-out truth
/// a trainer scores its evaluation images with (`[[held_out]]` `kind = "shapes-h"` in a run
/// configuration) next to the learned rewards it imitates. Computed on the host, image by
/// image, so it is not differentiable (a constant of the graph): never train on it.
///
/// # Panics
/// If the images are not `[B, 3, 32, 32]` or `prompts.len() != B`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HiddenPreference;

impl RewardModel for HiddenPreference {
    fn name(&self) -> &str {
        "h"
    }

    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        let device = images.device();
        let images = Image::unbatch(images.detach());
        assert_eq!(
            images.len(),
            prompts.len(),
            "HiddenPreference: one prompt per image"
        );
        let values: Vec<f32> = images.iter().zip(prompts).map(|(i, p)| h(i, p)).collect();
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{
        PERTURBATIONS, Perturbation, TASTE_PERTURBATIONS, render, render_perturbed,
    };
    use crate::world::{Named, Scene, Split};

    /// Scenes whose captions name every attribute they can.
    fn fully_named(split: Split, n: usize) -> Vec<Scene> {
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < n {
            let mut scene = split.scene(i);
            i += 1;
            // Positions only where the object was placed at an anchor.
            scene.named = Named {
                size: true,
                position: scene.named.position && scene.objects.len() == 1,
                background: true,
            };
            scene.caption = crate::world::caption(&scene.objects, scene.background, scene.named);
            out.push(scene);
        }
        out
    }

    #[test]
    fn the_detector_recovers_the_attributes_of_renders() {
        let scenes = Split::Test.scenes(0, 200);
        let mut right = 0;
        let mut total = 0;
        for scene in &scenes {
            let a = detect(&render(scene));
            assert_eq!(a.background, scene.background);
            assert_eq!(a.objects.len(), scene.objects.len(), "{}", scene.caption);
            for o in &scene.objects {
                total += 1;
                let hit = a.objects.iter().any(|d| {
                    d.colour == o.colour
                        && d.shape == o.shape
                        && d.size == o.size
                        && (d.best_fit().0 - o.cx).abs() < 0.5
                });
                right += usize::from(hit);
            }
        }
        assert_eq!(right, total, "{right}/{total} objects recovered");
    }

    #[test]
    fn perfect_renders_score_near_the_top() {
        for scene in fully_named(Split::Validation, 100) {
            let p = preference(&render(&scene), &scene.caption);
            assert!(p.fidelity > 0.93, "{}: {p:?}", scene.caption);
            assert!(p.taste > 0.97, "{}: {p:?}", scene.caption);
            assert!(p.h <= 2.0 + 1e-6);
        }
    }

    #[test]
    fn each_perturbation_lowers_h_monotonically() {
        let strengths = [0.0, 0.25, 0.5, 0.75, 1.0];
        for scene in fully_named(Split::Test, 24) {
            for p in PERTURBATIONS {
                if p == Perturbation::WrongPosition && !scene.named.position {
                    continue; // nothing to get wrong
                }
                let hs: Vec<f32> = strengths
                    .iter()
                    .map(|&t| h(&render_perturbed(&scene, &[(p, t)], 5), &scene.caption))
                    .collect();
                // Non-increasing up to 0.01 (0.5 % of h's range: the pixel grid's jitter when a
                // smeared or blurred small object changes its best fit), clearly lower at t = 1.
                for w in hs.windows(2) {
                    assert!(w[1] <= w[0] + 1e-2, "{p:?} on {}: {hs:?}", scene.caption);
                }
                assert!(hs[4] < hs[0] - 0.02, "{p:?} on {}: {hs:?}", scene.caption);
                if TASTE_PERTURBATIONS.contains(&p) {
                    assert!(hs[1] < hs[0] - 1e-3, "{p:?} on {}: {hs:?}", scene.caption);
                }
            }
        }
    }

    #[test]
    fn taste_perturbations_lower_taste_and_a_wrong_prompt_lowers_fidelity() {
        for scene in fully_named(Split::Validation, 20) {
            let clean = preference(&render(&scene), &scene.caption);
            for p in TASTE_PERTURBATIONS {
                let worse = preference(&render_perturbed(&scene, &[(p, 0.6)], 3), &scene.caption);
                // Faded colours still contrast enough on black or white; on gray they do not.
                if p != Perturbation::LowContrast || scene.background == Background::Gray {
                    assert!(
                        worse.taste < clean.taste - 0.01,
                        "{p:?}: {worse:?} vs {clean:?}"
                    );
                }
                assert!(worse.h < clean.h - 0.02, "{p:?}: {worse:?} vs {clean:?}");
            }
            let o = scene.objects[0];
            let other = COLOURS
                .into_iter()
                .find(|&c| c != o.colour && scene.background.allows(c))
                .unwrap();
            let prompt = scene.caption.replacen(o.colour.word(), other.word(), 1);
            let wrong = preference(&render(&scene), &prompt);
            assert!(wrong.fidelity < clean.fidelity - 0.1, "{prompt}");
            assert_eq!(wrong.taste, clean.taste);
        }
    }

    #[test]
    fn h_is_deterministic_and_handles_blank_images_and_free_text() {
        let scene = Split::Train.scene(0);
        let image = render(&scene);
        assert_eq!(h(&image, &scene.caption), h(&image, &scene.caption));
        let blank = Image::filled([0.5, 0.5, 0.5]);
        let p = preference(&blank, &scene.caption);
        assert!(p.fidelity < 0.5 && p.taste <= 0.2, "{p:?}");
        let free = preference(&image, "something else entirely");
        assert!(free.fidelity.is_finite() && free.fidelity <= 1.0);
    }

    #[test]
    fn hidden_preference_scores_a_batch_as_h_does() {
        let device = Device::flex();
        let scenes = Split::Test.scenes(0, 3);
        let images: Vec<Image> = scenes.iter().map(render).collect();
        let prompts: Vec<String> = scenes.iter().map(|s| s.caption.clone()).collect();
        let v = HiddenPreference
            .reward(Image::batch(&images, &device), &prompts)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let expected: Vec<f32> = images.iter().zip(&prompts).map(|(i, p)| h(i, p)).collect();
        assert_eq!(v, expected);
        assert_eq!(HiddenPreference.name(), "h");
    }
}
