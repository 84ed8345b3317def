//! The tables and figures of a grid (`[[reports]]`), drawn from its finished runs' evaluations
//! ([`crate::experiment::RunCurves`]) and written next to `results.md`, which gets a section per report.
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

mod context;
mod grids;
mod sweep;
mod table;
#[cfg(test)]
mod tests;
mod timeline;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Value;

use super::GridError;
use super::grid::{Axis, sanitise};

pub(crate) use context::Context;

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

/// Writes every report of the plan into `out` and returns the Markdown sections for
/// `results.md`.
pub(crate) fn write_reports(ctx: &Context, out: &Path) -> Result<String, GridError> {
    let mut md = String::new();
    for report in &ctx.plan.reports {
        let section = match report {
            Report::Table(r) => table::table(ctx, r, out)?,
            Report::Sweep(r) => sweep::sweep(ctx, r, out)?,
            Report::Curves(r) => timeline::curves(ctx, r, out)?,
            Report::Grids(r) => grids::grids(ctx, r, out)?,
        };
        md.push('\n');
        md.push_str(&section);
    }
    Ok(md)
}

pub(super) fn plot_error(path: &Path) -> impl FnOnce(std::io::Error) -> GridError + '_ {
    move |e| GridError::Parse {
        path: path.to_path_buf(),
        message: format!("cannot draw: {e}"),
    }
}
