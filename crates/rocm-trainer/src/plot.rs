//! Text-free PNG plots, drawn by hand and encoded with the `png` crate (no fonts, no system
//! libraries): axes, a dashed zero line, one coloured polyline per series
//! ([`curves`]), 2-D scatter plots ([`scatter`]), and the training curves of a run
//! ([`metrics_plots`]: reward and divergence against iteration and against wall-clock seconds).
//! Legends (colour → series) belong in the accompanying text.

use std::io;
use std::path::{Path, PathBuf};

use crate::IterationMetrics;

/// Line colours, in run order.
pub const COLOURS: [([u8; 3], &str); 6] = [
    ([228, 26, 28], "red"),
    ([55, 126, 184], "blue"),
    ([77, 175, 74], "green"),
    ([152, 78, 163], "purple"),
    ([255, 127, 0], "orange"),
    ([90, 90, 90], "grey"),
];

const W: usize = 640;
const H: usize = 400;
const PAD: usize = 30;

struct Canvas {
    rgb: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            rgb: vec![255; W * H * 3],
        }
    }

    fn dot(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line of thickness 2 (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                self.dot(x + ox, y + oy, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn save(&self, path: &Path) -> io::Result<()> {
        let file = io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, W as u32, H as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .and_then(|mut w| w.write_image_data(&self.rgb))
            .map_err(io::Error::other)?;
        Ok(())
    }
}

/// Maps data ranges onto the canvas (y up).
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0).max(1e-12);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0).max(1e-12);
        let px = PAD as f64 + fx * (W - 2 * PAD) as f64;
        let py = (H - PAD) as f64 - fy * (H - 2 * PAD) as f64;
        (px.round() as i64, py.round() as i64)
    }

    fn axes(&self, c: &mut Canvas) {
        let grey = [170, 170, 170];
        let (l, b) = ((PAD) as i64, (H - PAD) as i64);
        let (r, t) = ((W - PAD) as i64, PAD as i64);
        c.line((l, b), (r, b), grey);
        c.line((l, b), (l, t), grey);
        if self.y.0 < 0.0 && self.y.1 > 0.0 {
            let (_, y0) = self.px(self.x.0, 0.0);
            let mut x = l;
            while x < r {
                c.line((x, y0), ((x + 4).min(r), y0), [120, 120, 120]); // dashed zero line
                x += 10;
            }
        }
    }
}

/// `sign(v) ln(1 + |v|)`: keeps small values readable next to a run that diverges.
pub fn symlog(v: f64) -> f64 {
    v.signum() * v.abs().ln_1p()
}

/// One polyline per series of `(x, y)` points, in [`COLOURS`] order; with `symlog`, y is drawn
/// as [`symlog`]`(y)`. Non-finite points are skipped.
pub fn curves(path: &Path, series: &[Vec<(f64, f64)>], symlog: bool) -> io::Result<()> {
    let y = |v: f64| if symlog { self::symlog(v) } else { v };
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut left, mut right) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in series.iter().flatten().filter(finite) {
        lo = lo.min(y(p.1));
        hi = hi.max(y(p.1));
        left = left.min(p.0);
        right = right.max(p.0);
    }
    if !lo.is_finite() {
        (lo, hi, left, right) = (0.0, 1.0, 0.0, 1.0);
    }
    let margin = 0.05 * (hi - lo).max(1e-6);
    let frame = Frame {
        x: (left, right.max(left + 1e-9)),
        y: (lo - margin, hi + margin),
    };
    let mut canvas = Canvas::new();
    frame.axes(&mut canvas);
    for (i, curve) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()].0;
        let points: Vec<_> = curve.iter().filter(finite).collect();
        if let [only] = points.as_slice() {
            let (px, py) = frame.px(only.0, y(only.1));
            canvas.line((px - 2, py), (px + 2, py), colour);
        }
        for w in points.windows(2) {
            let a = frame.px(w[0].0, y(w[0].1));
            let b = frame.px(w[1].0, y(w[1].1));
            canvas.line(a, b, colour);
        }
    }
    canvas.save(path)
}

/// A scatter plot of 2-D samples (blue) with the target's modes (red crosses), on
/// `[-4, 8] × [-4, 4]`.
pub fn scatter(
    path: &Path,
    points: &[[f32; 2]],
    modes: impl Iterator<Item = (f32, f32)>,
) -> io::Result<()> {
    let frame = Frame {
        x: (-4.0, 8.0),
        y: (-4.0, 4.0),
    };
    let mut canvas = Canvas::new();
    frame.axes(&mut canvas);
    for p in points {
        let (x, y) = frame.px(f64::from(p[0]), f64::from(p[1]));
        for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            canvas.dot(x + ox, y + oy, COLOURS[1].0);
        }
    }
    for (mx, my) in modes {
        let (x, y) = frame.px(f64::from(mx), f64::from(my));
        canvas.line((x - 5, y - 5), (x + 5, y + 5), COLOURS[0].0);
        canvas.line((x - 5, y + 5), (x + 5, y - 5), COLOURS[0].0);
    }
    canvas.save(path)
}

/// The file names [`metrics_plots`] writes, in order.
pub const METRICS_PLOTS: [&str; 4] = [
    "reward_vs_iteration.png",
    "divergence_vs_iteration.png",
    "reward_vs_seconds.png",
    "divergence_vs_seconds.png",
];

/// Writes [`METRICS_PLOTS`] into `dir`: the mean reward (red) and the mean divergence (blue)
/// against the iteration and against cumulative wall-clock seconds (the sum of
/// [`IterationMetrics::seconds`]). Returns the paths written.
pub fn metrics_plots(dir: &Path, metrics: &[IterationMetrics]) -> io::Result<Vec<PathBuf>> {
    let mut elapsed = 0.0;
    let seconds: Vec<f64> = metrics
        .iter()
        .map(|m| {
            elapsed += m.seconds;
            elapsed
        })
        .collect();
    let against = |x: &dyn Fn(usize) -> f64, y: fn(&IterationMetrics) -> f64| {
        metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (x(i), y(m)))
            .collect::<Vec<_>>()
    };
    let step = |i: usize| metrics[i].step as f64;
    let wall = |i: usize| seconds[i];
    let reward = |m: &IterationMetrics| m.reward_mean;
    let divergence = |m: &IterationMetrics| m.divergence_mean;
    let plots = [
        against(&step, reward),
        against(&step, divergence),
        against(&wall, reward),
        against(&wall, divergence),
    ];
    let mut written = Vec::new();
    for (i, (name, curve)) in METRICS_PLOTS.iter().zip(plots).enumerate() {
        let path = dir.join(name);
        // Colour 0 (red) for reward, 1 (blue) for divergence.
        let mut series = vec![Vec::new(); i % 2];
        series.push(curve);
        curves(&path, &series, false)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_plots_write_pngs() {
        let dir = std::env::temp_dir().join(format!("rocm-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let metrics: Vec<IterationMetrics> = (1..=5)
            .map(|step| IterationMetrics {
                step,
                reward_mean: step as f64 * 0.1,
                divergence_mean: if step == 3 {
                    f64::NAN
                } else {
                    0.01 * step as f64
                },
                divergence_per_step: vec![],
                loss: 0.0,
                grad_norm: 0.0,
                lr: 0.0,
                seconds: 0.5,
                ..IterationMetrics::default()
            })
            .collect();
        let written = metrics_plots(&dir, &metrics).unwrap();
        assert_eq!(written.len(), 4);
        for p in &written {
            let bytes = std::fs::read(p).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.display());
        }
        metrics_plots(&dir, &[]).unwrap(); // empty: axes only, no panic
        std::fs::remove_dir_all(&dir).ok();
    }
}
