//! The tables and figures of a grid (`[[reports]]`), drawn from its finished runs' evaluations
//! ([`RunCurves`]) and written next to `results.md`, which gets a section per report.
//!
//! | `kind` | what | writes |
//! |---|---|---|
//! | `table` | rows = one axis' labels, columns = metrics at the last evaluation, mean ± std over the averaged axis; one table per label of `split_by`, with a column left out per split (`omit`: the trained reward) and rows from the runs' step-0 evaluations (`base_rows`: the base models) | `<name>.csv` |
//! | `sweep` | metrics at the last evaluation against a numeric configuration key (`x`, e.g. `train.beta`), mean and each averaged run | `<name>_<metric>.png`, `<name>.csv` |
//! | `curves` | one metric against training seconds and against reward queries, one line per label of `series` (means over the averaged axis), and when each line first reached the `reach` line's final value | `<name>_vs_seconds.png`, `<name>_vs_queries.png`, `<name>.csv` |
//! | `grids` | the last evaluation's image grid of each label of `series` (and the base model's) | `<name>/<label>.png` |
//!
//! Metric names: `reward` (the trained reward, `reward_mean` of `eval.jsonl`) or a held-out
//! reward's name (`held_out` of `eval.jsonl`, the `[[held_out]]` of a run configuration).
//! `where` keeps the runs whose label on each named axis is one of those listed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Value;

use super::curves::{EvalPoint, RunCurves, mean_and_std};
use super::error::io;
use super::grid::{Axis, get_key, lists, sanitise};
use super::results::{mean_std, number, write_atomic};
use super::{GridError, Plan, PlannedRun};
use crate::images::RgbImage;
use crate::plot::{self, Chart, Series};

/// Runs kept by axis label: axis name → labels (or values).
pub type Filter = BTreeMap<String, Vec<Value>>;

/// One `[[reports]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// A table of final metrics.
    Table(TableReport),
    /// Final metrics against a numeric configuration key.
    Sweep(SweepReport),
    /// A metric against training seconds and reward queries.
    Curves(CurvesReport),
    /// The final image grids side by side.
    Grids(GridsReport),
}

/// `kind = "table"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableReport {
    /// The file stem (`<name>.csv`) and the section's anchor.
    pub name: String,
    /// The section title.
    pub title: String,
    /// The axis whose labels are the rows, in axis order.
    pub rows: String,
    /// An axis with one table per label (default: one table).
    #[serde(default)]
    pub split_by: Option<String>,
    /// The metric columns.
    pub columns: Vec<String>,
    /// Per label of `split_by`, the column that table leaves out (the trained reward).
    #[serde(default)]
    pub omit: BTreeMap<String, String>,
    /// Rows from the step-0 evaluations of the runs a filter keeps (the base models).
    #[serde(default)]
    pub base_rows: Vec<BaseRow>,
    /// Which runs.
    #[serde(default, rename = "where")]
    pub filter: Filter,
}

/// A row of a [`TableReport`] made of step-0 evaluations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRow {
    /// The row's name.
    pub label: String,
    /// Which runs' step-0 evaluations (within the table's split).
    #[serde(rename = "where")]
    pub filter: Filter,
}

/// `kind = "sweep"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepReport {
    /// The file stem.
    pub name: String,
    /// The section title.
    pub title: String,
    /// The dotted configuration key on the x axis (a number in every kept run).
    pub x: String,
    /// The x axis label.
    pub x_label: String,
    /// The metrics, one chart each.
    pub y: Vec<String>,
    /// A symmetric-log x axis (for sweeps over orders of magnitude that include 0).
    #[serde(default)]
    pub symlog_x: bool,
    /// Which runs.
    #[serde(default, rename = "where")]
    pub filter: Filter,
}

/// `kind = "curves"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvesReport {
    /// The file stem.
    pub name: String,
    /// The section title.
    pub title: String,
    /// The axis whose labels are the lines.
    pub series: String,
    /// The metric.
    pub y: String,
    /// The y axis label.
    pub y_label: String,
    /// A label of `series` whose final value the others race to (e.g. `rlcm`).
    #[serde(default)]
    pub reach: Option<String>,
    /// Which runs.
    #[serde(default, rename = "where")]
    pub filter: Filter,
}

/// `kind = "grids"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridsReport {
    /// The folder name.
    pub name: String,
    /// The section title.
    pub title: String,
    /// The axis whose labels get a grid each (one run per label: narrow `where` to one seed).
    pub series: String,
    /// Also the first kept run's step-0 grid, as `base`.
    #[serde(default)]
    pub base: bool,
    /// The composite `<name>.png`: the first this many rows (prompts) of every grid side by
    /// side, each grid's columns (seeds) kept together (default 8; 0: no composite).
    #[serde(default = "default_rows")]
    pub rows: usize,
    /// Its pixel zoom (default 3).
    #[serde(default = "default_zoom")]
    pub zoom: usize,
    /// Which runs.
    #[serde(default, rename = "where")]
    pub filter: Filter,
}

fn default_rows() -> usize {
    8
}

fn default_zoom() -> usize {
    3
}

impl Report {
    /// The file stem.
    pub fn name(&self) -> &str {
        match self {
            Self::Table(r) => &r.name,
            Self::Sweep(r) => &r.name,
            Self::Curves(r) => &r.name,
            Self::Grids(r) => &r.name,
        }
    }

    /// Checks the axis names and labels it uses; errors are `(key, message)`.
    pub(crate) fn check(&self, axes: &[Axis]) -> Result<(), (String, String)> {
        let axis = |name: &str, key: &str| {
            axes.iter().find(|a| a.name == name).ok_or_else(|| {
                let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
                (
                    key.to_string(),
                    format!("no axis `{name}` (axes: {})", names.join(", ")),
                )
            })
        };
        let labels = |filter: &Filter, key: &str| -> Result<(), (String, String)> {
            for (name, list) in filter {
                axis(name, key)?
                    .check_listed(list)
                    .map_err(|m| (format!("{key}.{name}"), m))?;
            }
            Ok(())
        };
        let name = self.name();
        if name.is_empty() || sanitise(name) != name {
            return Err((
                "name".into(),
                format!("`{name}`: use letters, digits, `.`, `+`, `-` or `_`"),
            ));
        }
        match self {
            Self::Table(r) => {
                axis(&r.rows, "rows")?;
                if let Some(s) = &r.split_by {
                    let a = axis(s, "split_by")?;
                    for label in r.omit.keys() {
                        if !a.values.iter().any(|v| v.label == *label) {
                            return Err((
                                "omit".into(),
                                format!("`{label}` is not a label of `{s}`"),
                            ));
                        }
                    }
                } else if !r.omit.is_empty() {
                    return Err(("omit".into(), "needs `split_by`".into()));
                }
                if r.columns.is_empty() {
                    return Err(("columns".into(), "name at least one metric".into()));
                }
                for b in &r.base_rows {
                    labels(&b.filter, "base_rows.where")?;
                }
                labels(&r.filter, "where")
            }
            Self::Sweep(r) => {
                if r.y.is_empty() {
                    return Err(("y".into(), "name at least one metric".into()));
                }
                labels(&r.filter, "where")
            }
            Self::Curves(r) => {
                let a = axis(&r.series, "series")?;
                if let Some(reach) = &r.reach
                    && !a.values.iter().any(|v| v.label == *reach)
                {
                    return Err((
                        "reach".into(),
                        format!("`{reach}` is not a label of `{}`", r.series),
                    ));
                }
                labels(&r.filter, "where")
            }
            Self::Grids(r) => {
                axis(&r.series, "series")?;
                labels(&r.filter, "where")
            }
        }
    }
}

/// A finished run with its folder and curves.
pub(crate) struct Finished<'a> {
    /// The planned run (its labels).
    pub run: &'a PlannedRun,
    /// Its folder.
    pub dir: PathBuf,
    /// Its evaluations.
    pub curves: RunCurves,
}

/// The context the reports are drawn in: the plan and its finished runs.
pub(crate) struct Context<'a> {
    pub plan: &'a Plan,
    pub runs: Vec<Finished<'a>>,
}

impl<'a> Context<'a> {
    /// Reads the curves of each finished run (`dirs[i]`: the folder of plan run `i`, if done).
    pub fn read(plan: &'a Plan, dirs: &[Option<PathBuf>]) -> Result<Self, GridError> {
        let mut runs = Vec::new();
        for (run, dir) in plan.runs.iter().zip(dirs) {
            if let Some(dir) = dir {
                runs.push(Finished {
                    run,
                    dir: dir.clone(),
                    curves: RunCurves::read(dir)?,
                });
            }
        }
        Ok(Self { plan, runs })
    }

    fn axis(&self, name: &str) -> Option<usize> {
        self.plan.axes.iter().position(|a| a == name)
    }

    fn label<'r>(&self, run: &'r Finished, axis: &str) -> Option<&'r str> {
        self.axis(axis).map(|a| run.run.labels[a].as_str())
    }

    /// The finished runs `filter` keeps.
    fn kept(&self, filter: &Filter) -> Vec<&Finished<'a>> {
        self.runs
            .iter()
            .filter(|r| {
                filter
                    .iter()
                    .all(|(axis, list)| self.label(r, axis).is_some_and(|l| lists(list, l)))
            })
            .collect()
    }

    /// The labels of `axis` in axis order that some of `runs` have.
    fn labels_in(&self, axis: &str, runs: &[&Finished]) -> Vec<String> {
        let Some(a) = self.axis(axis) else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for r in &self.plan.runs {
            let l = &r.labels[a];
            if !out.contains(l) && runs.iter().any(|f| f.run.labels[a] == *l) {
                out.push(l.clone());
            }
        }
        out
    }

    /// The averaged axis.
    fn averaged(&self) -> String {
        self.plan
            .results
            .average_over
            .clone()
            .unwrap_or_else(|| "seed".into())
    }
}

fn plot_error(path: &Path) -> impl FnOnce(std::io::Error) -> GridError + '_ {
    move |e| GridError::Parse {
        path: path.to_path_buf(),
        message: format!("cannot draw: {e}"),
    }
}

/// Writes every report of the plan into `out` and returns the Markdown sections for
/// `results.md`.
pub(crate) fn write_reports(ctx: &Context, out: &Path) -> Result<String, GridError> {
    let mut md = String::new();
    for report in &ctx.plan.reports {
        let section = match report {
            Report::Table(r) => table(ctx, r, out)?,
            Report::Sweep(r) => sweep(ctx, r, out)?,
            Report::Curves(r) => curves(ctx, r, out)?,
            Report::Grids(r) => grids(ctx, r, out)?,
        };
        md.push('\n');
        md.push_str(&section);
    }
    Ok(md)
}

fn final_values(runs: &[&Finished], metric: &str, start: bool) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| {
            let e = if start {
                r.curves.start()
            } else {
                r.curves.last()
            };
            e.and_then(|e| e.values.get(metric).copied())
        })
        .collect()
}

fn table(ctx: &Context, r: &TableReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let averaged = ctx.averaged();
    let splits: Vec<Option<String>> = match &r.split_by {
        Some(s) => ctx.labels_in(s, &kept).into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut md = format!(
        "## {}\n\nMean ± sample standard deviation over `{averaged}` (n runs) at each run's last \
         evaluation; base rows: the same runs' evaluation before training (step 0). Best trained \
         mean per column in bold. Numbers: `{}.csv`.\n",
        r.title, r.name
    );
    let mut csv = String::from("split,row,n,metric,mean,std\n");
    for split in &splits {
        let in_split: Vec<&Finished> = kept
            .iter()
            .copied()
            .filter(|f| match (&r.split_by, split) {
                (Some(axis), Some(l)) => ctx.label(f, axis) == Some(l.as_str()),
                _ => true,
            })
            .collect();
        let omitted = split.as_ref().and_then(|s| r.omit.get(s));
        let columns: Vec<&String> = r.columns.iter().filter(|c| Some(*c) != omitted).collect();
        let mut rows: Vec<(String, Vec<Vec<f64>>, bool)> = Vec::new();
        for b in &r.base_rows {
            let runs: Vec<&Finished> = ctx
                .kept(&b.filter)
                .into_iter()
                .filter(|f| in_split.iter().any(|g| std::ptr::eq(*g, *f)))
                .collect();
            let cols = columns
                .iter()
                .map(|c| final_values(&runs, c, true))
                .collect();
            rows.push((b.label.clone(), cols, false));
        }
        for label in ctx.labels_in(&r.rows, &in_split) {
            let runs: Vec<&Finished> = in_split
                .iter()
                .copied()
                .filter(|f| ctx.label(f, &r.rows) == Some(label.as_str()))
                .collect();
            let cols = columns
                .iter()
                .map(|c| final_values(&runs, c, false))
                .collect();
            rows.push((label, cols, true));
        }
        // The best trained mean of each column.
        let best: Vec<Option<f64>> = (0..columns.len())
            .map(|c| {
                rows.iter()
                    .filter(|(_, _, trained)| *trained)
                    .filter_map(|(_, cols, _)| mean_and_std(&cols[c]).map(|(m, _)| m))
                    .fold(None, |acc: Option<f64>, m| {
                        Some(acc.map_or(m, |a| a.max(m)))
                    })
            })
            .collect();
        if let (Some(axis), Some(l)) = (&r.split_by, split) {
            let _ = write!(md, "\n### {axis} = {l}");
            if let Some(o) = omitted {
                let _ = write!(md, " (column `{o}` left out: the trained reward)");
            }
            md.push('\n');
        }
        let header: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(md, "\n| {} | n | {} |", r.rows, header.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---|".repeat(columns.len()));
        for (label, cols, trained) in &rows {
            let n = cols.iter().map(Vec::len).max().unwrap_or(0);
            let cells: Vec<String> = cols
                .iter()
                .zip(&best)
                .map(|(v, b)| {
                    let text = mean_std(v);
                    let m = mean_and_std(v).map(|(m, _)| m);
                    if *trained && m.is_some() && m == *b {
                        format!("**{text}**")
                    } else {
                        text
                    }
                })
                .collect();
            let name = if *trained {
                label.clone()
            } else {
                format!("*{label}*")
            };
            let _ = writeln!(md, "| {name} | {n} | {} |", cells.join(" | "));
            for (c, v) in columns.iter().zip(cols) {
                if let Some((m, s)) = mean_and_std(v) {
                    let _ = writeln!(
                        csv,
                        "{},{},{},{c},{m},{s}",
                        split.as_deref().unwrap_or(""),
                        label,
                        v.len()
                    );
                }
            }
        }
    }
    write_atomic(&out.join(format!("{}.csv", r.name)), &csv)?;
    Ok(md)
}

fn sweep(ctx: &Context, r: &SweepReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let averaged = ctx.averaged();
    // x → the kept runs there, in x order.
    let mut points: Vec<(f64, Vec<&Finished>)> = Vec::new();
    for f in &kept {
        let x = get_key(&f.curves.config, &r.x)
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .ok_or_else(|| GridError::Parse {
                path: f.dir.join("config.toml"),
                message: format!("report `{}`: `{}` is not a number here", r.name, r.x),
            })?;
        match points.iter_mut().find(|(v, _)| *v == x) {
            Some((_, runs)) => runs.push(f),
            None => points.push((x, vec![f])),
        }
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut md = format!(
        "## {}\n\nEach metric at the last evaluation against `{}`: mean ± sample standard \
         deviation over `{averaged}` (n runs). Numbers: `{}.csv`.\n\n| `{}` | n |",
        r.title, r.x, r.name, r.x
    );
    for y in &r.y {
        let _ = write!(md, " {y} |");
    }
    let _ = writeln!(md, "\n|---|---|{}", "---|".repeat(r.y.len()));
    let mut csv = String::from("x,metric,n,mean,std\n");
    for (x, runs) in &points {
        let _ = write!(md, "| {x} | {} |", runs.len());
        for y in &r.y {
            let v = final_values(runs, y, false);
            let _ = write!(md, " {} |", mean_std(&v));
            if let Some((m, s)) = mean_and_std(&v) {
                let _ = writeln!(csv, "{x},{y},{},{m},{s}", v.len());
            }
        }
        md.push('\n');
    }
    md.push('\n');
    for y in &r.y {
        let means: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|(x, runs)| {
                mean_and_std(&final_values(runs, y, false)).map(|(m, _)| (*x, m))
            })
            .collect();
        if let Some((x, m)) = means.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)) {
            let _ = writeln!(md, "- `{y}` is highest at {} = {x} ({}).", r.x, number(m));
        }
        let mut series = vec![Series::new(format!("mean over {averaged}"), means)];
        // Each averaged run as its own faint line, by its label on the averaged axis.
        let mut by_label: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (x, runs) in &points {
            for f in runs {
                let label = ctx.label(f, &averaged).unwrap_or("run").to_string();
                if let Some(v) = f.curves.last().and_then(|e| e.values.get(y)) {
                    match by_label.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, p)) => p.push((*x, *v)),
                        None => by_label.push((label, vec![(*x, *v)])),
                    }
                }
            }
        }
        series.extend(
            by_label
                .into_iter()
                .map(|(l, p)| Series::new(format!("{averaged} {l}"), p)),
        );
        let mut chart = Chart::new(format!("{}: {y}", r.title), &r.x_label, y.clone());
        if r.symlog_x {
            chart = chart.symlog_x();
        }
        let file = format!("{}_{}.png", r.name, sanitise(y));
        let path = out.join(&file);
        plot::curves(&path, &chart, &series).map_err(plot_error(&path))?;
        let _ = writeln!(md, "\n![{y} against {}]({file})", r.x);
    }
    write_atomic(&out.join(format!("{}.csv", r.name)), &csv)?;
    Ok(md)
}

/// One point of a mean curve.
#[derive(Clone, Copy, Debug)]
struct CurvePoint {
    step: usize,
    seconds: f64,
    queries: f64,
    mean: f64,
    std: f64,
}

/// The mean curve of `runs` over their common evaluation steps.
fn mean_curve(runs: &[&Finished], y: &str) -> Vec<CurvePoint> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in &first.curves.evals {
        let at: Vec<&EvalPoint> = runs
            .iter()
            .filter_map(|r| r.curves.evals.iter().find(|p| p.step == e.step))
            .filter(|p| p.values.contains_key(y))
            .collect();
        if at.len() != runs.len() {
            continue;
        }
        let mean =
            |f: &dyn Fn(&EvalPoint) -> f64| at.iter().map(|p| f(p)).sum::<f64>() / at.len() as f64;
        let ys: Vec<f64> = at.iter().map(|p| p.values[y]).collect();
        let (m, s) = mean_and_std(&ys).unwrap_or((f64::NAN, 0.0));
        out.push(CurvePoint {
            step: e.step,
            seconds: mean(&|p| p.seconds),
            queries: mean(&|p| p.reward_queries),
            mean: m,
            std: s,
        });
    }
    out
}

fn curves(ctx: &Context, r: &CurvesReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let averaged = ctx.averaged();
    let mut lines: Vec<(String, Vec<CurvePoint>)> = Vec::new();
    for label in ctx.labels_in(&r.series, &kept) {
        let runs: Vec<&Finished> = kept
            .iter()
            .copied()
            .filter(|f| ctx.label(f, &r.series) == Some(label.as_str()))
            .collect();
        lines.push((label, mean_curve(&runs, &r.y)));
    }
    let mut csv = String::from("series,step,seconds,reward_queries,mean,std\n");
    for (label, curve) in &lines {
        for p in curve {
            let _ = writeln!(
                csv,
                "{label},{},{},{},{},{}",
                p.step, p.seconds, p.queries, p.mean, p.std
            );
        }
    }
    write_atomic(&out.join(format!("{}.csv", r.name)), &csv)?;
    let mut md = format!(
        "## {}\n\n`{}` at each evaluation against the training seconds (the iterations' own \
         wall-clock, evaluations excluded) and the reward queries spent up to it, mean over \
         `{averaged}`. Numbers: `{}.csv`.\n\n",
        r.title, r.y, r.name
    );
    for (suffix, x_label, pick) in [
        (
            "seconds",
            "training wall-clock (s)",
            (|p: &CurvePoint| p.seconds) as fn(&CurvePoint) -> f64,
        ),
        ("queries", "reward queries", |p| p.queries),
    ] {
        let series: Vec<Series> = lines
            .iter()
            .map(|(l, c)| Series::new(l.clone(), c.iter().map(|p| (pick(p), p.mean)).collect()))
            .collect();
        let file = format!("{}_vs_{suffix}.png", r.name);
        let path = out.join(&file);
        let chart = Chart::new(r.title.clone(), x_label, r.y_label.clone());
        plot::curves(&path, &chart, &series).map_err(plot_error(&path))?;
        let _ = writeln!(md, "![{} against {x_label}]({file})\n", r.y);
    }
    let _ = writeln!(
        md,
        "| {} | n | before | after | seconds | reward queries |{}",
        r.series,
        if r.reach.is_some() {
            " seconds to reach the reference's final | ratio to the reference's seconds | queries to reach it |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|{}",
        if r.reach.is_some() {
            "---|---|---|"
        } else {
            ""
        }
    );
    let reference = r
        .reach
        .as_ref()
        .and_then(|l| lines.iter().find(|(x, _)| x == l))
        .and_then(|(_, c)| c.last().copied());
    for (label, curve) in &lines {
        let n = kept
            .iter()
            .filter(|f| ctx.label(f, &r.series) == Some(label.as_str()))
            .count();
        let (Some(first), Some(last)) = (curve.first(), curve.last()) else {
            continue;
        };
        let _ = write!(
            md,
            "| {label} | {n} | {} | {} | {} | {} |",
            number(first.mean),
            number(last.mean),
            number(last.seconds),
            number(last.queries)
        );
        if let Some(reference) = reference {
            // The first evaluation after training started (step 0 is the base model).
            match curve
                .iter()
                .find(|p| p.step > 0 && p.mean >= reference.mean)
            {
                Some(p) => {
                    let _ = write!(
                        md,
                        " {} | {} | {} |",
                        number(p.seconds),
                        number(p.seconds / reference.seconds),
                        number(p.queries)
                    );
                }
                None => md.push_str(" not reached | — | — |"),
            }
        }
        md.push('\n');
    }
    if let (Some(l), Some(reference)) = (&r.reach, reference) {
        let _ = writeln!(
            md,
            "\nReference: `{l}`'s final mean {} after {} s. \"Reach\": the first evaluation \
             after step 0 whose mean is at least that.",
            number(reference.mean),
            number(reference.seconds)
        );
        let start = lines
            .iter()
            .find(|(x, _)| x == l)
            .and_then(|(_, c)| c.first().copied());
        if let Some(start) = start
            && reference.mean <= start.mean
        {
            let _ = writeln!(
                md,
                "\n**`{l}` ended at or below where it started ({} → {}): reaching its final value \
                 says nothing about speed here.**",
                number(start.mean),
                number(reference.mean)
            );
        }
    }
    Ok(md)
}

fn grids(ctx: &Context, r: &GridsReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let folder = out.join(&r.name);
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let mut md = format!(
        "## {}\n\nThe last evaluation's images of each run (rows = evaluation prompts, columns = \
         seeds), same prompts and noise in every grid.\n\n",
        r.title
    );
    let sample = |f: &Finished, step: usize| {
        f.dir
            .join(crate::SAMPLES_DIR)
            .join(format!("step-{step:06}.png"))
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    if r.base
        && let Some(f) = kept.first()
        && f.curves.start().is_some()
    {
        entries.push(("base".into(), sample(f, 0)));
    }
    for label in ctx.labels_in(&r.series, &kept) {
        if let Some(f) = kept
            .iter()
            .find(|f| ctx.label(f, &r.series) == Some(label.as_str()))
            && let Some(last) = f.curves.last()
        {
            entries.push((label, sample(f, last.step)));
        }
    }
    md.push_str("| ");
    md.push_str(
        &entries
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    let _ = writeln!(md, " |\n|{}", "---|".repeat(entries.len()));
    md.push('|');
    for (label, src) in &entries {
        let file = format!("{}.png", sanitise(label));
        let dst = folder.join(&file);
        std::fs::copy(src, &dst).map_err(io(src))?;
        let _ = write!(md, " ![{label}]({}/{file}) |", r.name);
    }
    md.push('\n');
    if r.rows > 0 && !entries.is_empty() {
        let seeds = kept
            .first()
            .and_then(|f| get_key(&f.curves.config, "train.eval_seeds"))
            .and_then(Value::as_array)
            .map_or(1, |a| a.len().max(1));
        let prompts: Vec<String> = kept
            .first()
            .and_then(|f| get_key(&f.curves.config, "train.eval_prompts"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let file = format!("{}.png", r.name);
        let path = out.join(&file);
        composite(&entries, seeds, &prompts, r, &path)?;
        let _ = writeln!(
            md,
            "\nThe first {} prompts of each, side by side (`{file}`):\n\n![{}]({file})",
            r.rows, r.title
        );
    }
    Ok(md)
}

/// Reads an 8-bit RGB PNG (what [`crate::images::RgbImage::save`] writes).
fn read_png(path: &Path) -> Result<RgbImage, GridError> {
    let bad = |message: String| GridError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(bad(format!(
            "expected an 8-bit RGB PNG, found {:?} {:?}",
            info.color_type, info.bit_depth
        )));
    }
    buf.truncate(info.buffer_size());
    Ok(RgbImage {
        width: info.width as usize,
        height: info.height as usize,
        rgb: buf,
    })
}

/// The first `r.rows` rows of square tiles (`seeds` per row) of each grid, side by side with a
/// white gap, zoomed by `r.zoom`, captioned with the labels and the prompts.
fn composite(
    entries: &[(String, PathBuf)],
    seeds: usize,
    prompts: &[String],
    r: &GridsReport,
    path: &Path,
) -> Result<(), GridError> {
    let zoom = r.zoom.clamp(1, 16);
    let grids: Vec<RgbImage> = entries
        .iter()
        .map(|(_, p)| read_png(p))
        .collect::<Result<_, _>>()?;
    let tile = grids[0].width / seeds;
    let rows = r.rows.min(grids[0].height / tile.max(1));
    let (block_w, block_h) = (seeds * tile * zoom, rows * tile * zoom);
    let gap = 2 * zoom;
    let width = entries.len() * (block_w + gap) - gap;
    let mut rgb = vec![255u8; width * block_h * 3];
    for (g, grid) in grids.iter().enumerate() {
        if grid.width != seeds * tile || grid.height < rows * tile {
            return Err(GridError::Parse {
                path: entries[g].1.clone(),
                message: format!(
                    "{}x{} is not a grid of {seeds} columns of {tile}-pixel tiles",
                    grid.width, grid.height
                ),
            });
        }
        let x0 = g * (block_w + gap);
        for y in 0..block_h {
            for x in 0..block_w {
                let src = ((y / zoom) * grid.width + x / zoom) * 3;
                let dst = (y * width + x0 + x) * 3;
                rgb[dst..dst + 3].copy_from_slice(&grid.rgb[src..src + 3]);
            }
        }
    }
    let labels: Vec<&str> = entries.iter().map(|(l, _)| l.as_str()).collect();
    let header = format!(
        "{}: left to right {} ({seeds} seeds each); rows = prompts",
        r.title,
        labels.join(", ")
    );
    let lines = crate::images::numbered_caption(header, "row", &prompts[..rows.min(prompts.len())]);
    let image = RgbImage {
        width,
        height: block_h,
        rgb,
    }
    .with_caption(&lines)
    .map_err(plot_error(path))?;
    image.save(path).map_err(|e| GridError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{COMPLETED_FILE, Grid, Results};
    use super::read_png;
    use std::path::Path;

    /// Two methods × two betas × two seeds on a fabricated world: method `a` climbs with β
    /// in `score` and peaks in `truth` at β 1; `b` is slower.
    const GRID: &str = r#"
        output_dir = "OUT"
        [base]
        model = "toy"
        [[axes]]
        name = "method"
        values = [
          { label = "a", set = { "train.algorithm" = "rocm" } },
          { label = "b", set = { "train.algorithm" = "rlcm" } },
        ]
        [[axes]]
        key = "train.beta"
        values = [0.0, 1.0, 3.0]
        [[axes]]
        key = "train.seed"
        values = [0, 1]
        [[reports]]
        kind = "table"
        name = "t1"
        title = "Table"
        rows = "method"
        split_by = "beta"
        columns = ["score", "truth"]
        omit = { "0.0" = "score" }
        base_rows = [{ label = "base", where = { method = ["a"] } }]
        [[reports]]
        kind = "sweep"
        name = "sw"
        title = "Sweep"
        x = "train.beta"
        x_label = "beta"
        symlog_x = true
        y = ["truth"]
        where = { method = ["a"] }
        [[reports]]
        kind = "curves"
        name = "cv"
        title = "Curves"
        series = "method"
        y = "reward"
        y_label = "reward"
        reach = "b"
        where = { beta = [1.0] }
        [[reports]]
        kind = "grids"
        name = "gr"
        title = "Grids"
        series = "method"
        base = true
        zoom = 2
        where = { beta = [1.0], seed = [0] }
    "#;

    /// A finished run folder: evaluations at steps 0, 2, 4 and 1 s per iteration.
    fn fabricate(dir: &Path, method: &str, beta: f64, seed: i64) {
        std::fs::create_dir_all(dir.join("samples")).unwrap();
        let speed = if method == "a" { 2.0 } else { 1.0 };
        let mut metrics = String::new();
        for step in 1..=4 {
            let m = crate::IterationMetrics {
                step,
                seconds: if method == "a" { 1.0 } else { 2.0 },
                reward_queries: 8,
                ..crate::IterationMetrics::default()
            };
            metrics += &(serde_json::to_string(&m).unwrap() + "\n");
        }
        std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
        let mut evals = String::new();
        for step in [0usize, 2, 4] {
            let reward = 1.0 + speed * step as f64 + seed as f64 * 0.1;
            let score = reward + beta;
            let truth = if step == 0 {
                1.0
            } else {
                2.0 - (beta - 1.0).abs()
            };
            evals += &format!(
                "{{\"step\":{step},\"reward_mean\":{reward},\"held_out\":{{\
                 \"score\":{{\"mean\":{score}}},\"truth\":{{\"mean\":{truth}}}}}}}\n"
            );
            // A grid of 2 seeds × 3 prompts of 2-pixel tiles, its colour saying the step.
            let v = (step * 50) as u8;
            crate::images::RgbImage {
                width: 4,
                height: 6,
                rgb: vec![v; 4 * 6 * 3],
            }
            .save(&dir.join(format!("samples/step-{step:06}.png")))
            .unwrap();
        }
        std::fs::write(dir.join("eval.jsonl"), evals).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "[train]\nbeta = {beta:?}\nseed = {seed}\neval_seeds = [5, 6]\n\
                 eval_prompts = [\"p1\", \"p2\", \"p3\"]\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join(COMPLETED_FILE), "{}").unwrap();
    }

    #[test]
    fn reports_tabulate_sweep_race_and_copy_grids() {
        let out = std::env::temp_dir().join(format!("rocm-report-{}", std::process::id()));
        std::fs::remove_dir_all(&out).ok();
        let text = GRID.replace("OUT", &out.display().to_string());
        let plan = Grid::from_toml_str(&text, "g.toml")
            .unwrap()
            .plan(false)
            .unwrap();
        for run in &plan.runs {
            let beta: f64 = run.labels[1].parse().unwrap();
            let seed: i64 = run.labels[2].parse().unwrap();
            fabricate(&plan.run_dir(run), &run.labels[0], beta, seed);
        }
        let results = Results::collect(&plan, std::slice::from_ref(&out)).unwrap();
        results.write(&out).unwrap();
        let md = std::fs::read_to_string(out.join("results.md")).unwrap();
        // Table: the split β = 0 leaves `score` out; base rows from step 0; best in bold.
        let section = &md[md.find("### beta = 0.0").unwrap()..md.find("### beta = 1.0").unwrap()];
        assert!(section.contains("(column `score` left out"), "{section}");
        assert!(section.contains("| method | n | truth |"), "{section}");
        assert!(section.contains("| *base* | 2 | 1 ± 0 |"), "{section}");
        assert!(
            md.contains("| a | 2 | **10.0500 ± 0.0707** | **2 ± 0** |"),
            "{md}"
        );
        let t1 = std::fs::read_to_string(out.join("t1.csv")).unwrap();
        assert!(t1.contains("3.0,b,2,score,8.0"), "{t1}");
        // Sweep: truth peaks at β = 1, one chart per metric.
        assert!(
            md.contains("`truth` is highest at train.beta = 1 (2)"),
            "{md}"
        );
        assert!(out.join("sw_truth.png").is_file());
        let sw = std::fs::read_to_string(out.join("sw.csv")).unwrap();
        assert!(sw.contains("3,truth,2,0,0"), "{sw}");
        // Curves: b ends at 5.05 after 8 s; a reaches that at step 2, after 2 s: ratio 0.25.
        assert!(
            md.contains("| a | 2 | 1.0500 | 9.0500 | 4 | 32 | 2 | 0.2500 | 16 |"),
            "{md}"
        );
        assert!(md.contains("`b`'s final mean 5.0500 after 8 s"), "{md}");
        assert!(out.join("cv_vs_seconds.png").is_file() && out.join("cv_vs_queries.png").is_file());
        // Grids: the base (step 0) and each method's last grid (step 4), and the composite of
        // their first rows (all 3 here), zoom 2: 3 grids of 8 px with 4-px gaps, 12 px high.
        let sample = |id: &str, step: usize| {
            std::fs::read(
                out.join("runs")
                    .join(id)
                    .join(format!("samples/step-{step:06}.png")),
            )
            .unwrap()
        };
        let first = "method-a_beta-1.0_seed-0";
        assert_eq!(
            std::fs::read(out.join("gr/base.png")).unwrap(),
            sample(first, 0)
        );
        assert_eq!(
            std::fs::read(out.join("gr/a.png")).unwrap(),
            sample(first, 4)
        );
        assert!(md.contains("![b](gr/b.png)"), "{md}");
        let composite = read_png(&out.join("gr.png")).unwrap();
        assert_eq!(composite.width, 3 * 8 + 2 * 4);
        assert!(composite.height > 12, "a caption strip under the images");
        let px = |x: usize, y: usize| composite.rgb[(y * composite.width + x) * 3];
        assert_eq!(
            (px(0, 0), px(12, 11), px(9, 5)),
            (0, 200, 255),
            "base, a at step 4, the gap"
        );
        // curves.csv: every evaluation of every run, the held-out metrics as columns.
        let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
        let lines: Vec<&str> = curves.lines().collect();
        assert_eq!(
            lines[0],
            "run,method,beta,seed,step,seconds,reward_queries,reward,score,truth"
        );
        assert_eq!(lines.len(), 1 + 12 * 3);
        assert_eq!(lines[2], "method-a_beta-0.0_seed-0,a,0.0,0,2,2,16,5,5,1");
        std::fs::remove_dir_all(&out).ok();
    }

    #[test]
    fn reports_naming_unknown_axes_or_labels_are_refused() {
        for (from, to, needle) in [
            (
                "rows = \"method\"",
                "rows = \"methd\"",
                "`reports[0].rows`: no axis `methd`",
            ),
            (
                "omit = { \"0.0\" = \"score\" }",
                "omit = { \"9\" = \"score\" }",
                "`reports[0].omit`: `9` is not a label of `beta`",
            ),
            (
                "name = \"t1\"",
                "name = \"t1\"\nwhere = { method = [\"c\"] }",
                "`reports[0].where.method`",
            ),
            ("reach = \"b\"", "reach = \"z\"", "`reports[2].reach`"),
        ] {
            let text = GRID.replacen(from, to, 1);
            let e = Grid::from_toml_str(&text, "g.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
        let twice = GRID.replace("name = \"sw\"", "name = \"t1\"");
        let e = Grid::from_toml_str(&twice, "g.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("two reports are named `t1`"), "{e}");
    }
}
