//! PNG charts drawn with [plotters](https://docs.rs/plotters) (bitmap backend, the crate's
//! embedded font, encoded with the `png` crate; no system libraries): line charts of one or
//! more runs ([`curves`]), 2-D scatter plots ([`scatter`]), and the training curves of a run
//! ([`metrics_plots`]: reward and divergence against iteration and against wall-clock seconds).
//! Every chart has a title, labelled axes with ticks, and a legend naming each series; a y axis
//! can be [`Scale::Symlog`] (ticks at round data values) so diverging and stable runs share one
//! chart. The caption strips of image grids ([`RgbImage::with_caption`]) use the same font.
//!
//! ```
//! use rocm_trainer::plot::{Chart, Series, curves};
//!
//! let path = std::env::temp_dir().join(format!("rocm-plot-doc-{}.png", std::process::id()));
//! let run = Series::new("β = 0.1", (0..10).map(|i| (i as f64, (i * i) as f64)).collect());
//! curves(&path, &Chart::new("reward", "iteration", "mean reward").symlog(), &[run])?;
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), std::io::Error>(())
//! ```

mod font;
mod symlog;
mod text;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

pub use symlog::{SymlogRange, symlog};
pub(crate) use text::draw_lines;

use crate::IterationMetrics;
use crate::images::RgbImage;

/// Series colours, in run order, with the names the accompanying text may use.
/// Eight distinct colours (ColorBrewer Set1 with grey), so the seven methods of
/// `baselines_toy` never share one.
pub const COLOURS: [([u8; 3], &str); 8] = [
    ([228, 26, 28], "red"),
    ([55, 126, 184], "blue"),
    ([77, 175, 74], "green"),
    ([152, 78, 163], "purple"),
    ([255, 127, 0], "orange"),
    ([90, 90, 90], "grey"),
    ([166, 86, 40], "brown"),
    ([247, 129, 191], "pink"),
];

/// Chart size in pixels.
const SIZE: (u32, u32) = (900, 500);

/// How values map onto the y axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    #[default]
    Linear,
    /// [`symlog`]: linear near 0, logarithmic far from it; ticks stay in data units.
    Symlog,
}

/// What a chart says about itself: its title, axis labels (with units) and y scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The title above the plot.
    pub title: String,
    /// The x axis label, units included (`"wall-clock time (s)"`).
    pub x_label: String,
    /// The y axis label, units included.
    pub y_label: String,
    /// The y axis scale.
    pub y_scale: Scale,
    /// The x axis scale ([`curves`] only; default linear).
    pub x_scale: Scale,
}

impl Chart {
    /// A chart with a linear y axis.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            y_scale: Scale::Linear,
            x_scale: Scale::Linear,
        }
    }

    /// The same chart on a [`Scale::Symlog`] x axis (e.g. a sweep over β = 0, 0.1, …, 10).
    pub fn symlog_x(mut self) -> Self {
        self.x_scale = Scale::Symlog;
        self
    }

    /// The same chart on a [`Scale::Symlog`] y axis.
    pub fn symlog(mut self) -> Self {
        self.y_scale = Scale::Symlog;
        self
    }
}

/// One named line of a chart: `(x, y)` points in order; non-finite points leave a gap.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The name in the legend.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The colour of series `i` ([`COLOURS`], cycling).
fn colour(i: usize) -> RGBColor {
    let [r, g, b] = COLOURS[i % COLOURS.len()].0;
    RGBColor(r, g, b)
}

fn failed(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A compact tick label: `0`, `20`, `-500`, `0.25`, `1.5e4`.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".into() } else { s.into() }
    }
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Mark {
    Line,
    Dot,
    Cross,
}

/// Draws `rgb` (`SIZE`, white) with `draw` and writes it to `path` as an 8-bit RGB PNG.
fn render(path: &Path, draw: impl FnOnce(&Area) -> Result<(), io::Error>) -> io::Result<()> {
    font::ensure()?;
    let (w, h) = SIZE;
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw(&root)?;
        root.present().map_err(failed)?;
    }
    let (width, height) = (w as usize, h as usize);
    RgbImage { width, height, rgb }.save(path).map_err(failed)
}

/// Splits `root` into the plot and a legend panel at the right wide enough for `entries`, and
/// draws the legend.
fn with_legend<'a>(root: &Area<'a>, entries: &[(String, RGBColor, Mark)]) -> io::Result<Area<'a>> {
    let style = TextStyle::from((font::FAMILY, 15).into_font()).color(&BLACK);
    let widest = entries
        .iter()
        .map(|(name, _, _)| root.estimate_text_size(name, &style).map_or(0, |(w, _)| w))
        .max()
        .unwrap_or(0);
    let panel = (widest + 56).clamp(90, SIZE.0 * 2 / 5);
    let (plot, legend) = root.split_horizontally(SIZE.0 - panel);
    let top = 60;
    for (i, (name, c, mark)) in entries.iter().enumerate() {
        let y = top + 24 * i as i32;
        let x = 10;
        match mark {
            Mark::Line => legend
                .draw(&PathElement::new(
                    vec![(x, y), (x + 26, y)],
                    c.stroke_width(3),
                ))
                .map_err(failed)?,
            Mark::Dot => legend
                .draw(&Circle::new((x + 13, y), 4, c.filled()))
                .map_err(failed)?,
            Mark::Cross => legend
                .draw(&Cross::new((x + 13, y), 5, c.stroke_width(2)))
                .map_err(failed)?,
        }
        legend
            .draw(&Text::new(name.clone(), (x + 34, y - 8), style.clone()))
            .map_err(failed)?;
    }
    Ok(plot)
}

/// The `(min, max)` of the finite values, `None` without any.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// `(lo, hi)` widened by 5 % of its span on each side (in the scale's own coordinates) and to
/// a non-empty range.
fn padded((lo, hi): (f64, f64), scale: Scale) -> Range<f64> {
    let symlog_scale = scale == Scale::Symlog;
    let to = |v: f64| if symlog_scale { symlog(v) } else { v };
    let from = |s: f64| {
        if symlog_scale {
            s.signum() * s.abs().exp_m1()
        } else {
            s
        }
    };
    let (a, b) = (to(lo), to(hi));
    let margin = if b > a { 0.05 * (b - a) } else { 0.5 };
    from(a - margin)..from(b + margin)
}

/// Draws the titled, labelled mesh on `area` and returns the chart to draw series into.
fn mesh<'a, X, Y>(
    area: &Area<'a>,
    chart: &Chart,
    x: X,
    y: Y,
) -> io::Result<ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, (font::FAMILY, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(failed)?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((font::FAMILY, 14))
        .axis_desc_style((font::FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(failed)?;
    Ok(ctx)
}

/// Draws `series` as lines (with markers when short) and a dashed line at y = 0 when the range
/// crosses it.
fn lines<X, Y>(
    ctx: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<X, Y>>,
    series: &[Series],
    x: &Range<f64>,
    y: &Range<f64>,
) -> io::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    if y.start < 0.0 && y.end > 0.0 {
        let zero = [(x.start, 0.0), (x.end, 0.0)];
        ctx.draw_series(DashedLineSeries::new(
            zero,
            6,
            6,
            RGBColor(120, 120, 120).into(),
        ))
        .map_err(failed)?;
    }
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        for run in s.points.split(|p| !(p.0.is_finite() && p.1.is_finite())) {
            ctx.draw_series(LineSeries::new(run.iter().copied(), c.stroke_width(2)))
                .map_err(failed)?;
        }
        let n = s.points.iter().filter(finite).count();
        if n <= 40 {
            let dots = s
                .points
                .iter()
                .filter(finite)
                .map(|p| Circle::new(*p, 3, c.filled()));
            ctx.draw_series(dots).map_err(failed)?;
        }
    }
    Ok(())
}

/// A line chart of `series` (legend: their names, in [`COLOURS`] order) written to `path`.
/// The axes span the finite points (plus 5 %); on [`Scale::Symlog`] y ticks stay in data units.
pub fn curves(path: &Path, chart: &Chart, series: &[Series]) -> io::Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = extent(points().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let x = match chart.x_scale {
        Scale::Linear if x1 > x0 => x0..x1,
        Scale::Linear => x0 - 0.5..x1 + 0.5,
        Scale::Symlog => padded((x0, x1), Scale::Symlog),
    };
    let y = padded(
        extent(points().map(|p| p.1)).unwrap_or((0.0, 1.0)),
        chart.y_scale,
    );
    let entries: Vec<_> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), colour(i), Mark::Line))
        .collect();
    render(path, |root| {
        let plot = with_legend(root, &entries)?;
        let (lx, ly) = (
            RangedCoordf64::from(x.clone()),
            RangedCoordf64::from(y.clone()),
        );
        let (sx, sy) = (SymlogRange::new(x.clone()), SymlogRange::new(y.clone()));
        match (chart.x_scale, chart.y_scale) {
            (Scale::Linear, Scale::Linear) => {
                lines(&mut mesh(&plot, chart, lx, ly)?, series, &x, &y)
            }
            (Scale::Linear, Scale::Symlog) => {
                lines(&mut mesh(&plot, chart, lx, sy)?, series, &x, &y)
            }
            (Scale::Symlog, Scale::Linear) => {
                lines(&mut mesh(&plot, chart, sx, ly)?, series, &x, &y)
            }
            (Scale::Symlog, Scale::Symlog) => {
                lines(&mut mesh(&plot, chart, sx, sy)?, series, &x, &y)
            }
        }
    })
}

/// A scatter plot of 2-D `samples` (blue dots, legend `samples_name`) and `modes` (red crosses,
/// legend "target modes") on `x × y`, written to `path`.
pub fn scatter(
    path: &Path,
    chart: &Chart,
    (x, y): (Range<f64>, Range<f64>),
    (samples_name, samples): (&str, &[[f32; 2]]),
    modes: impl Iterator<Item = (f32, f32)>,
) -> io::Result<()> {
    let entries = [
        (samples_name.to_string(), colour(1), Mark::Dot),
        ("target modes".to_string(), colour(0), Mark::Cross),
    ];
    render(path, |root| {
        let plot = with_legend(root, &entries)?;
        let mut ctx = mesh(
            &plot,
            chart,
            RangedCoordf64::from(x.clone()),
            RangedCoordf64::from(y.clone()),
        )?;
        let inside = |p: &(f64, f64)| x.contains(&p.0) && y.contains(&p.1);
        let dots = samples
            .iter()
            .map(|p| (f64::from(p[0]), f64::from(p[1])))
            .filter(inside)
            .map(|p| Circle::new(p, 2, colour(1).mix(0.6).filled()));
        ctx.draw_series(dots).map_err(failed)?;
        let crosses = modes
            .map(|(mx, my)| (f64::from(mx), f64::from(my)))
            .map(|p| Cross::new(p, 7, colour(0).stroke_width(3)));
        ctx.draw_series(crosses).map_err(failed)?;
        Ok(())
    })
}

/// The file names [`metrics_plots`] writes, in order.
pub const METRICS_PLOTS: [&str; 4] = [
    "reward_vs_iteration.png",
    "divergence_vs_iteration.png",
    "reward_vs_seconds.png",
    "divergence_vs_seconds.png",
];

/// Writes [`METRICS_PLOTS`] into `dir`: the batch-mean reward and the mean divergence
/// ([`IterationMetrics::reward_mean`], [`IterationMetrics::divergence_mean`]) against the
/// iteration and against cumulative wall-clock seconds (the sum of
/// [`IterationMetrics::seconds`]), the legend naming the run `run`. Returns the paths written.
pub fn metrics_plots(
    dir: &Path,
    run: &str,
    metrics: &[IterationMetrics],
) -> io::Result<Vec<PathBuf>> {
    let mut elapsed = 0.0;
    let seconds: Vec<f64> = metrics
        .iter()
        .map(|m| {
            elapsed += m.seconds;
            elapsed
        })
        .collect();
    let series = |x: &dyn Fn(usize) -> f64, y: fn(&IterationMetrics) -> f64| {
        let points = metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (x(i), y(m)))
            .collect();
        vec![Series::new(run, points)]
    };
    let step = |i: usize| metrics[i].step as f64;
    let wall = |i: usize| seconds[i];
    let reward = |m: &IterationMetrics| m.reward_mean;
    let divergence = |m: &IterationMetrics| m.divergence_mean;
    let (iteration, time) = ("iteration", "wall-clock training time (s)");
    let (r, d) = ("mean reward (batch)", "mean divergence (Σ over steps)");
    let plots = [
        (
            Chart::new("Reward against iteration", iteration, r),
            series(&step, reward),
        ),
        (
            Chart::new("Divergence against iteration", iteration, d),
            series(&step, divergence),
        ),
        (
            Chart::new("Reward against time", time, r),
            series(&wall, reward),
        ),
        (
            Chart::new("Divergence against time", time, d),
            series(&wall, divergence),
        ),
    ];
    let mut written = Vec::new();
    for (name, (chart, series)) in METRICS_PLOTS.iter().zip(plots) {
        let path = dir.join(name);
        curves(&path, &chart, &series)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests;
