//! Text-free PNG plots for the quickstart, drawn by hand and encoded with the `png` crate (no
//! fonts, no system libraries): axes, a zero line, one coloured polyline per run. The legend
//! (colour → run) goes into the markdown report.

use std::path::Path;

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

    fn save(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, W as u32, H as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(&self.rgb)?;
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
fn symlog(v: f64) -> f64 {
    v.signum() * v.abs().ln_1p()
}

/// One polyline per run of `symlog(value(point))` against iteration.
pub fn curves(
    path: &Path,
    runs: &[(String, Vec<super::Point>)],
    value: impl Fn(&super::Point) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let value = |p: &super::Point| symlog(value(p));
    let all = runs.iter().flat_map(|(_, c)| c.iter());
    let (mut lo, mut hi, mut last) = (f64::INFINITY, f64::NEG_INFINITY, 1usize);
    for p in all {
        lo = lo.min(value(p));
        hi = hi.max(value(p));
        last = last.max(p.0);
    }
    let margin = 0.05 * (hi - lo).max(1e-6);
    let frame = Frame {
        x: (0.0, last as f64),
        y: (lo - margin, hi + margin),
    };
    let mut canvas = Canvas::new();
    frame.axes(&mut canvas);
    for (i, (_, curve)) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()].0;
        for w in curve.windows(2) {
            let a = frame.px(w[0].0 as f64, value(&w[0]));
            let b = frame.px(w[1].0 as f64, value(&w[1]));
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
) -> Result<(), Box<dyn std::error::Error>> {
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

/// The markdown legend of [`curves`]: colour → run.
pub fn legend(runs: &[(String, Vec<super::Point>)]) -> String {
    let mut s = String::from(
        "\nPlots (iteration on x, no text in the images): `proxy_vs_iteration.png` and \
         `true_vs_iteration.png` for the KL runs, y = sign(v)·ln(1 + |v|) (dashed line: 0); colours:",
    );
    for (i, (name, _)) in runs.iter().enumerate() {
        s.push_str(&format!(" {} = `{name}`;", COLOURS[i % COLOURS.len()].1));
    }
    s.push_str(
        "\n`samples_<run>.png`: final samples (blue) and the target's modes (red), x ∈ [−4, 8], \
         y ∈ [−4, 4].\n",
    );
    s
}
