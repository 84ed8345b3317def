//! The grid file ([`Grid`]) and its expansion into named runs ([`Plan`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::report::Report;
use super::{GridError, RUNS_DIR};
use crate::experiment::error::io;

/// The key of a run configuration that [`Grid::plan`] sets to the run's own folder.
pub const OUTPUT_DIR_KEY: &str = "train.output_dir";

/// The grid file as written (private: [`Grid`] is its checked form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    name: Option<String>,
    base: Option<Value>,
    output_dir: PathBuf,
    #[serde(default)]
    set: Table,
    #[serde(default)]
    axes: Vec<AxisFile>,
    #[serde(default)]
    exclude: Vec<BTreeMap<String, Vec<Value>>>,
    #[serde(default)]
    quick: QuickSection,
    #[serde(default)]
    results: ResultsSection,
    #[serde(default)]
    reports: Vec<Report>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisFile {
    name: Option<String>,
    key: Option<String>,
    values: Vec<Value>,
    labels: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelledValue {
    label: String,
    set: Table,
}

/// `[quick]`: the reduced grid of `--quick`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickSection {
    /// Overrides applied to every run after the axes' (e.g. `{ "train.iterations" = 10 }`).
    #[serde(default)]
    pub set: Table,
    /// Axes restricted to some of their values, by label or value (e.g. `{ seed = [0] }`).
    #[serde(default)]
    pub axes: BTreeMap<String, Vec<Value>>,
    /// Where the quick grid's runs go (default `<output_dir>/quick`).
    pub output_dir: Option<PathBuf>,
}

/// `[results]`: how `results.md` groups the runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsSection {
    /// The axis averaged over: its runs make one row, mean ± std (default: the axis named
    /// `seed`, if any).
    pub average_over: Option<String>,
    /// Axes whose values each get their own table (default none: one table).
    #[serde(default)]
    pub split_by: Vec<String>,
}

/// One value of an axis: a label (part of the run ids) and the keys it sets.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisValue {
    /// The label, made of `A–Z a–z 0–9 . + -` (other characters become `_`).
    pub label: String,
    /// Dotted keys of the run configuration and their values (`train.beta = 0.3`).
    pub set: Table,
    /// Whether a table value replaces the table at its key (the values of an axis with
    /// `key`), rather than merging into it key by key (`set` tables).
    pub replace: bool,
}

/// One axis of the grid: a name and its values, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The name (a column of the results; `seed` is averaged over by default).
    pub name: String,
    /// The values.
    pub values: Vec<AxisValue>,
}

impl Axis {
    /// Checks that every entry of `list` (labels or values) is one of the axis' labels; the
    /// error lists them.
    pub(crate) fn check_listed(&self, list: &[Value]) -> Result<(), String> {
        for v in list {
            let label = label_of(v).map(|l| sanitise(&l));
            if !self.values.iter().any(|x| Some(&x.label) == label.as_ref()) {
                let labels: Vec<&str> = self.values.iter().map(|x| x.label.as_str()).collect();
                return Err(format!(
                    "`{v}` is none of the axis' labels ({})",
                    labels.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// A checked grid file.
///
/// ```toml
/// name = "toy_grid"                      # default: the file's stem
/// base = "../configs/toy.toml"           # a run configuration, relative to this file,
///                                        # or an inline [base] table
/// output_dir = "target/experiments/toy"  # runs go to <output_dir>/runs/<id>/
/// set = { "train.iterations" = 20 }      # overrides for every run (optional)
///
/// [[axes]]                               # the first axis varies slowest
/// key = "train.algorithm"                # any dotted key of the run configuration
/// name = "method"                        # default: the key's last part
/// values = ["rocm", "rlcm"]              # labels: the values, or `labels = [...]`
///
/// [[axes]]                               # an axis whose values set several keys
/// name = "reg"
/// values = [
///   { label = "none", set = { "train.beta" = 0.0 } },
///   { label = "js", set = { "train.beta" = 0.3, "train.divergence" = "js" } },
/// ]
///
/// [[axes]]
/// key = "train.seed"
/// values = [0, 1, 2]
///
/// [quick]                                # `--quick`
/// set = { "train.iterations" = 5 }
/// axes = { seed = [0] }                  # keep these labels (or values) of an axis
///
/// [results]
/// average_over = "seed"                  # default: the axis named seed
/// split_by = ["method"]                  # one table per method
/// ```
///
/// An axis with `key` sets that key to each value, whole (a table value replaces the table
/// there). In `set` tables a table value merges into the table at its key, key by key, and any
/// other value replaces; so dotted keys may be quoted (`"train.beta" = 1`) or not
/// (`train.beta = 1` is the nested table `train = { beta = 1 }`, which merges).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// The grid file (names it in errors).
    pub path: PathBuf,
    /// The grid's name (the results' title).
    pub name: String,
    /// The base run configuration.
    pub base: Table,
    /// The folder that relative paths of [`Grid::path_keys`] are also tried against: the base
    /// file's, else the grid file's.
    pub base_dir: PathBuf,
    /// Where the runs go (relative to the working directory).
    pub output_dir: PathBuf,
    /// Overrides for every run.
    pub set: Table,
    /// The axes, slowest first.
    pub axes: Vec<Axis>,
    /// Combinations left out of the product (`[[exclude]]`): a run is left out when, for every
    /// axis an entry names, its label is one of the entry's (e.g. `{ method = ["kl-0.1"],
    /// reward = ["clipscore", "aesthetic"] }`: the β sweep only on one reward).
    pub exclude: Vec<BTreeMap<String, Vec<Value>>>,
    /// The quick grid.
    pub quick: QuickSection,
    /// How the results are grouped.
    pub results: ResultsSection,
    /// The tables and figures drawn from the runs' evaluations (`[[reports]]`).
    pub reports: Vec<Report>,
    /// Dotted keys holding file paths (the `rocm` crate's run configuration passes
    /// `prompts.file` and `reward.head`): a relative one that does not exist from the working
    /// directory but does from [`Grid::base_dir`] is rewritten to that, as the base file
    /// would have read it.
    pub path_keys: Vec<String>,
}

/// One run of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// Its position in the whole plan (0-based; shards slice by it).
    pub index: usize,
    /// Its id and folder name: `<axis>-<label>` joined by `_`, in axis order (`run` without
    /// axes).
    pub id: String,
    /// Its label on each axis, in axis order.
    pub labels: Vec<String>,
    /// Its resolved run configuration (not in `plan.json`).
    #[serde(skip)]
    pub config: Table,
}

impl PlannedRun {
    /// The resolved configuration as TOML text (what `<run>/config.toml` holds).
    pub fn config_text(&self) -> String {
        toml::to_string(&self.config).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }
}

/// The runs of a grid, in order, and how their results are grouped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The grid's name.
    pub name: String,
    /// Whether this is the `[quick]` grid.
    pub quick: bool,
    /// Where the runs go (not in `plan.json`: merged folders may live anywhere).
    #[serde(skip)]
    pub output_dir: PathBuf,
    /// The axis names, in order.
    pub axes: Vec<String>,
    /// The averaged axis and the split axes.
    pub results: ResultsSection,
    /// The reports (`[[reports]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<Report>,
    /// Every run.
    pub runs: Vec<PlannedRun>,
}

impl Plan {
    /// The folder of `run`: `<output_dir>/runs/<id>`.
    pub fn run_dir(&self, run: &PlannedRun) -> PathBuf {
        self.output_dir.join(RUNS_DIR).join(&run.id)
    }
}

/// Splits a dotted key, refusing empty parts.
fn key_parts(key: &str) -> Result<Vec<&str>, String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err(format!("`{key}` is not a dotted key (empty part)"));
    }
    Ok(parts)
}

/// Sets `key` (dotted) of `table` to `value`: a table merges into a table key by key, anything
/// else replaces.
pub(crate) fn set_key(table: &mut Table, key: &str, value: &Value) -> Result<(), String> {
    assign(table, key, value, false)
}

/// Sets `key` (dotted) of `table` to `value`; with `replace`, a table value replaces the table
/// there instead of merging into it.
fn assign(table: &mut Table, key: &str, value: &Value, replace: bool) -> Result<(), String> {
    let parts = key_parts(key)?;
    let (last, walk) = parts.split_last().ok_or_else(|| "empty key".to_string())?;
    let mut here = table;
    for (i, part) in walk.iter().enumerate() {
        let entry = here
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        here = match entry {
            Value::Table(t) => t,
            other => {
                return Err(format!(
                    "`{}` is a {}, not a table",
                    parts[..=i].join("."),
                    other.type_str()
                ));
            }
        };
    }
    match (here.get_mut(*last), value) {
        (Some(Value::Table(existing)), Value::Table(new)) if !replace => {
            for (k, v) in new {
                set_key(existing, k, v).map_err(|e| format!("{key}.{e}"))?;
            }
        }
        _ => {
            here.insert(last.to_string(), value.clone());
        }
    }
    Ok(())
}

/// The value at `key` (dotted), if any.
pub(crate) fn get_key<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// A value's label: strings as they are, numbers and booleans as TOML writes them.
pub(crate) fn label_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => Some(value.to_string()),
        _ => None,
    }
}

/// Whether `list` (labels or values, as a grid file gives them) names the label `label`.
pub(crate) fn lists(list: &[Value], label: &str) -> bool {
    list.iter()
        .any(|v| label_of(v).map(|l| sanitise(&l)).as_deref() == Some(label))
}

/// A label with every character outside `A–Z a–z 0–9 . + -` replaced by `_`.
pub(crate) fn sanitise(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Grid {
    /// Reads a grid file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, GridError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        Self::from_toml_str(&text, path)
    }

    /// Parses and checks a grid; `path` names it in errors and anchors a relative `base`.
    pub fn from_toml_str(text: &str, path: impl AsRef<Path>) -> Result<Self, GridError> {
        let path = path.as_ref().to_path_buf();
        let file: GridFile = toml::from_str(text).map_err(|e| GridError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let invalid = |key: &str, message: String| GridError::Invalid {
            path: path.clone(),
            key: key.to_string(),
            message,
        };
        let grid_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let (base, base_dir) = match file.base {
            None => (Table::new(), grid_dir.clone()),
            Some(Value::Table(t)) => (t, grid_dir.clone()),
            Some(Value::String(file)) => {
                let base_path = grid_dir.join(&file);
                let text = std::fs::read_to_string(&base_path).map_err(io(&base_path))?;
                let table: Table = toml::from_str(&text).map_err(|e| GridError::Parse {
                    path: base_path.clone(),
                    message: e.to_string(),
                })?;
                let dir = base_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                (table, dir)
            }
            Some(other) => {
                return Err(invalid(
                    "base",
                    format!("a file name or a table, not a {}", other.type_str()),
                ));
            }
        };
        let name = match file.name {
            Some(n) => n,
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "grid".into()),
        };
        let mut axes: Vec<Axis> = Vec::new();
        for (i, axis) in file.axes.into_iter().enumerate() {
            let key = |field: &str| format!("axes[{i}].{field}");
            let axis = Self::axis(axis).map_err(|(field, m)| invalid(&key(field), m))?;
            if axes.iter().any(|a| a.name == axis.name) {
                return Err(invalid(
                    &key("name"),
                    format!("two axes are named `{}`", axis.name),
                ));
            }
            axes.push(axis);
        }
        for (k, v) in &file.set {
            set_key(&mut Table::new(), k, v).map_err(|m| invalid(&format!("set.{k}"), m))?;
        }
        for (k, v) in &file.quick.set {
            set_key(&mut Table::new(), k, v).map_err(|m| invalid(&format!("quick.set.{k}"), m))?;
        }
        let grid = Self {
            path: path.clone(),
            name,
            base,
            base_dir,
            output_dir: file.output_dir,
            set: file.set,
            axes,
            exclude: file.exclude,
            quick: file.quick,
            results: file.results,
            reports: file.reports,
            path_keys: Vec::new(),
        };
        grid.check_names().map_err(|(k, m)| invalid(&k, m))?;
        Ok(grid)
    }

    /// One axis, checked; errors name the field of `[[axes]]`.
    fn axis(axis: AxisFile) -> Result<Axis, (&'static str, String)> {
        if axis.values.is_empty() {
            return Err(("values", "an axis needs at least one value".into()));
        }
        let values: Vec<AxisValue> = match &axis.key {
            Some(key) => {
                key_parts(key).map_err(|m| ("key", m))?;
                if let Some(labels) = &axis.labels
                    && labels.len() != axis.values.len()
                {
                    return Err((
                        "labels",
                        format!("{} labels for {} values", labels.len(), axis.values.len()),
                    ));
                }
                let mut out = Vec::new();
                for (j, value) in axis.values.iter().enumerate() {
                    let label = match &axis.labels {
                        Some(labels) => labels[j].clone(),
                        None => label_of(value).ok_or_else(|| {
                            (
                                "labels",
                                format!(
                                    "value {j} is a {}: give the axis `labels = [...]`",
                                    value.type_str()
                                ),
                            )
                        })?,
                    };
                    let mut set = Table::new();
                    set.insert(key.clone(), value.clone());
                    out.push(AxisValue {
                        label: sanitise(&label),
                        set,
                        replace: true,
                    });
                }
                out
            }
            None => {
                if axis.labels.is_some() {
                    return Err((
                        "labels",
                        "labels go inside `{ label = …, set = … }` values without `key`".into(),
                    ));
                }
                let mut out = Vec::new();
                for (j, value) in axis.values.into_iter().enumerate() {
                    let v: LabelledValue = value.try_into().map_err(|e: toml::de::Error| {
                        (
                            "values",
                            format!(
                                "value {j}: without `key`, each value is \
                                 `{{ label = \"…\", set = {{ … }} }}`: {}",
                                e.message()
                            ),
                        )
                    })?;
                    for (k, val) in &v.set {
                        set_key(&mut Table::new(), k, val)
                            .map_err(|m| ("values", format!("value {j}: {m}")))?;
                    }
                    out.push(AxisValue {
                        label: sanitise(&v.label),
                        set: v.set,
                        replace: false,
                    });
                }
                out
            }
        };
        let name = match (axis.name, &axis.key) {
            (Some(n), _) => n,
            (None, Some(key)) => key.rsplit('.').next().unwrap_or(key).to_string(),
            (None, None) => return Err(("name", "an axis without `key` needs a `name`".into())),
        };
        if name.is_empty() || sanitise(&name) != name {
            return Err((
                "name",
                format!("`{name}`: use letters, digits, `.`, `+`, `-` or `_`"),
            ));
        }
        for (j, v) in values.iter().enumerate() {
            if v.label.is_empty() {
                return Err(("values", format!("value {j} has an empty label")));
            }
            if values[..j].iter().any(|w| w.label == v.label) {
                return Err(("values", format!("two values are labelled `{}`", v.label)));
            }
        }
        Ok(Axis { name, values })
    }

    /// `[quick.axes]` and `[results]` name existing axes and values.
    fn check_names(&self) -> Result<(), (String, String)> {
        let names = || {
            self.axes
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let axis = |name: &str, key: String| {
            self.axes
                .iter()
                .find(|a| a.name == name)
                .ok_or_else(|| (key, format!("no axis `{name}` (axes: {})", names())))
        };
        let lists = self
            .quick
            .axes
            .iter()
            .map(|(name, keep)| (format!("quick.axes.{name}"), name, keep))
            .chain(self.exclude.iter().enumerate().flat_map(|(i, e)| {
                e.iter()
                    .map(move |(name, labels)| (format!("exclude[{i}].{name}"), name, labels))
            }));
        for (i, e) in self.exclude.iter().enumerate() {
            if e.is_empty() {
                return Err((
                    format!("exclude[{i}]"),
                    "name at least one axis (an empty entry would exclude every run)".into(),
                ));
            }
        }
        for (key, name, keep) in lists {
            let a = axis(name, key.clone())?;
            if keep.is_empty() {
                return Err((key, "list at least one value".into()));
            }
            a.check_listed(keep).map_err(|m| (key, m))?;
        }
        if let Some(name) = &self.results.average_over {
            axis(name, "results.average_over".into())?;
            if self.results.split_by.contains(name) {
                return Err((
                    "results.split_by".into(),
                    format!("`{name}` is averaged over; it cannot also split the tables"),
                ));
            }
        }
        for name in &self.results.split_by {
            axis(name, "results.split_by".into())?;
        }
        for (i, report) in self.reports.iter().enumerate() {
            report
                .check(&self.axes)
                .map_err(|(k, m)| (format!("reports[{i}].{k}"), m))?;
            if self.reports[..i].iter().any(|r| r.name() == report.name()) {
                return Err((
                    format!("reports[{i}].name"),
                    format!("two reports are named `{}`", report.name()),
                ));
            }
        }
        Ok(())
    }

    /// The same grid, rebasing the relative paths at `keys` (see [`Grid::path_keys`]).
    pub fn with_path_keys(mut self, keys: &[&str]) -> Self {
        self.path_keys = keys.iter().map(|k| k.to_string()).collect();
        self
    }

    /// The averaged axis: `[results] average_over`, else the axis named `seed`, if any.
    pub fn average_over(&self) -> Option<String> {
        self.results.average_over.clone().or_else(|| {
            self.axes
                .iter()
                .any(|a| a.name == "seed")
                .then(|| "seed".to_string())
        })
    }

    /// The output folder of the full grid or, with `quick`, of the quick one.
    pub fn output_dir(&self, quick: bool) -> PathBuf {
        match (quick, &self.quick.output_dir) {
            (false, _) => self.output_dir.clone(),
            (true, Some(dir)) => dir.clone(),
            (true, None) => self.output_dir.join("quick"),
        }
    }

    /// Every run of the grid (with `quick`, of the quick grid), the first axis varying slowest:
    /// the base, then `set`, then each axis' value, then `[quick] set`, then
    /// `train.output_dir = <output_dir>/runs/<id>`.
    pub fn plan(&self, quick: bool) -> Result<Plan, GridError> {
        let invalid = |key: String, message: String| GridError::Invalid {
            path: self.path.clone(),
            key,
            message,
        };
        let output_dir = self.output_dir(quick);
        // The values of each axis that this plan keeps.
        let mut kept: Vec<Vec<&AxisValue>> = Vec::new();
        for axis in &self.axes {
            let restrict = if quick {
                self.quick.axes.get(&axis.name)
            } else {
                None
            };
            kept.push(
                axis.values
                    .iter()
                    .filter(|v| restrict.is_none_or(|keep| lists(keep, &v.label)))
                    .collect(),
            );
        }
        let total: usize = kept.iter().map(Vec::len).product();
        let mut runs = Vec::with_capacity(total);
        let mut common = self.base.clone();
        for (k, v) in &self.set {
            set_key(&mut common, k, v).map_err(|m| invalid(format!("set.{k}"), m))?;
        }
        for product_index in 0..total {
            // Mixed-radix digits of the product index, the last axis fastest.
            let mut rest = product_index;
            let mut picks = vec![0; kept.len()];
            for (a, values) in kept.iter().enumerate().rev() {
                picks[a] = rest % values.len();
                rest /= values.len();
            }
            let excluded = self.exclude.iter().any(|entry| {
                entry.iter().all(|(name, list)| {
                    self.axes
                        .iter()
                        .position(|a| a.name == *name)
                        .is_some_and(|a| lists(list, &kept[a][picks[a]].label))
                })
            });
            if excluded {
                continue;
            }
            let mut config = common.clone();
            let mut labels = Vec::new();
            let mut parts = Vec::new();
            for (a, pick) in picks.iter().enumerate() {
                let value = kept[a][*pick];
                for (k, v) in &value.set {
                    assign(&mut config, k, v, value.replace)
                        .map_err(|m| invalid(format!("axes[{a}] ({})", self.axes[a].name), m))?;
                }
                labels.push(value.label.clone());
                parts.push(format!("{}-{}", self.axes[a].name, value.label));
            }
            if quick {
                for (k, v) in &self.quick.set {
                    set_key(&mut config, k, v).map_err(|m| invalid(format!("quick.set.{k}"), m))?;
                }
            }
            let id = if parts.is_empty() {
                "run".to_string()
            } else {
                parts.join("_")
            };
            if runs.iter().any(|r: &PlannedRun| r.id == id) {
                return Err(invalid(
                    "axes".into(),
                    format!("two runs have the id `{id}`: rename a label"),
                ));
            }
            let dir = output_dir.join(RUNS_DIR).join(&id);
            set_key(
                &mut config,
                OUTPUT_DIR_KEY,
                &Value::String(dir.to_string_lossy().into_owned()),
            )
            .map_err(|m| invalid(OUTPUT_DIR_KEY.into(), m))?;
            self.rebase_paths(&mut config);
            runs.push(PlannedRun {
                index: runs.len(),
                id,
                labels,
                config,
            });
        }
        Ok(Plan {
            name: self.name.clone(),
            quick,
            output_dir,
            axes: self.axes.iter().map(|a| a.name.clone()).collect(),
            results: ResultsSection {
                average_over: self.average_over(),
                split_by: self.results.split_by.clone(),
            },
            reports: self.reports.clone(),
            runs,
        })
    }

    /// Rewrites the relative paths at [`Grid::path_keys`] that exist only from
    /// [`Grid::base_dir`].
    fn rebase_paths(&self, config: &mut Table) {
        for key in &self.path_keys {
            let Some(Value::String(p)) = get_key(config, key) else {
                continue;
            };
            let path = Path::new(p);
            if path.is_absolute() || path.exists() {
                continue;
            }
            let rebased = self.base_dir.join(path);
            if rebased.exists() {
                let value = Value::String(rebased.to_string_lossy().into_owned());
                set_key(config, key, &value).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: &str = r#"
        output_dir = "out"
        set = { "train.iterations" = 8 }
        [base]
        model = "toy"
        [base.train]
        beta = 0.1
        divergence = { kind = "js", nodes = 8 }
        [[axes]]
        name = "method"
        values = [
          { label = "rocm", set = { "train.algorithm" = "rocm" } },
          { label = "draft 1", set = { train = { backprop_steps = 1, beta = 0.0 } } },
        ]
        [[axes]]
        key = "train.divergence"
        values = ["kl", { kind = "js" }]
        labels = ["kl", "js"]
        [[axes]]
        key = "train.seed"
        values = [0, 1, 2]
        [quick]
        set = { "train.iterations" = 2 }
        axes = { seed = [1] }
        [results]
        split_by = ["method"]
    "#;

    fn grid() -> Grid {
        Grid::from_toml_str(GRID, "g.toml").unwrap()
    }

    #[test]
    fn exclude_leaves_out_matching_combinations_and_renumbers() {
        let text = format!(
            "{GRID}\n[[exclude]]\nmethod = [\"draft 1\"]\ndivergence = [\"js\"]\n\
             [[exclude]]\nseed = [2]\nmethod = [\"rocm\"]\n"
        );
        let plan = Grid::from_toml_str(&text, "g.toml")
            .unwrap()
            .plan(false)
            .unwrap();
        let ids: Vec<&str> = plan.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "method-rocm_divergence-kl_seed-0",
                "method-rocm_divergence-kl_seed-1",
                "method-rocm_divergence-js_seed-0",
                "method-rocm_divergence-js_seed-1",
                "method-draft_1_divergence-kl_seed-0",
                "method-draft_1_divergence-kl_seed-1",
                "method-draft_1_divergence-kl_seed-2",
            ]
        );
        assert!(plan.runs.iter().enumerate().all(|(i, r)| r.index == i));
        // The quick grid (seed 1 only) excludes the same combinations.
        let quick = Grid::from_toml_str(&text, "g.toml")
            .unwrap()
            .plan(true)
            .unwrap();
        assert_eq!(quick.runs.len(), 3);
        for (bad, needle) in [
            ("[[exclude]]\nmethdo = [\"rocm\"]\n", "no axis `methdo`"),
            (
                "[[exclude]]\nmethod = [\"rocmm\"]\n",
                "none of the axis' labels",
            ),
            ("[[exclude]]\nmethod = []\n", "at least one value"),
        ] {
            let e = Grid::from_toml_str(&format!("{GRID}\n{bad}"), "g.toml").unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert!(e.to_string().contains("exclude[0]"), "{e}");
        }
    }

    #[test]
    fn expands_in_order_with_ids_and_resolved_configs() {
        let plan = grid().plan(false).unwrap();
        assert_eq!(plan.runs.len(), 12);
        assert_eq!(plan.runs[0].id, "method-rocm_divergence-kl_seed-0");
        assert_eq!(plan.runs[1].id, "method-rocm_divergence-kl_seed-1");
        assert_eq!(plan.runs[3].id, "method-rocm_divergence-js_seed-0");
        assert_eq!(plan.runs[11].id, "method-draft_1_divergence-js_seed-2");
        assert!(plan.runs.iter().enumerate().all(|(i, r)| r.index == i));
        let last = &plan.runs[11].config["train"];
        assert_eq!(last["backprop_steps"].as_integer(), Some(1));
        assert_eq!(last["beta"].as_float(), Some(0.0));
        assert_eq!(last["iterations"].as_integer(), Some(8));
        assert_eq!(last["seed"].as_integer(), Some(2));
        // An axis value replaces a table whole; a `set` table merges.
        assert_eq!(last["divergence"].as_table().map(Table::len), Some(1));
        assert_eq!(
            last["output_dir"].as_str(),
            Some(
                Path::new("out/runs/method-draft_1_divergence-js_seed-2")
                    .to_str()
                    .unwrap()
            )
        );
        assert_eq!(plan.runs[0].config["train"]["beta"].as_float(), Some(0.1));
        assert_eq!(plan.results.average_over.as_deref(), Some("seed"));
        // The same file gives the same plan.
        assert_eq!(grid().plan(false).unwrap(), plan);
    }

    #[test]
    fn quick_keeps_some_values_and_overrides_last() {
        let plan = grid().plan(true).unwrap();
        assert_eq!(plan.runs.len(), 4);
        assert!(plan.runs.iter().all(|r| r.labels[2] == "1"));
        assert!(
            plan.runs
                .iter()
                .all(|r| r.config["train"]["iterations"].as_integer() == Some(2))
        );
        assert_eq!(plan.output_dir, Path::new("out/quick"));
    }

    fn error(text: &str) -> String {
        Grid::from_toml_str(text, "bad.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn refuses_bad_grids_naming_the_key() {
        let base = "output_dir = \"o\"\n[base]\nmodel = \"toy\"\n";
        let cases = [
            ("output_dir = \"o\"\nbogus = 1\n", "bogus"),
            ("[base]\nmodel = \"toy\"\n", "output_dir"),
            ("output_dir = \"o\"\nbase = 3\n", "`base`"),
            (
                "output_dir = \"o\"\nbase = \"missing.toml\"\n",
                "missing.toml",
            ),
            (
                &format!("{base}[[axes]]\nkey = \"train.beta\"\nvalues = []\n"),
                "axes[0].values",
            ),
            (
                &format!("{base}[[axes]]\nkey = \"train..beta\"\nvalues = [1]\n"),
                "axes[0].key",
            ),
            (
                &format!("{base}[[axes]]\nkey = \"train.beta\"\nvalues = [1, 1]\n"),
                "labelled `1`",
            ),
            (
                &format!(
                    "{base}[[axes]]\nkey = \"train.divergence\"\nvalues = [{{ kind = \"js\" }}]\n"
                ),
                "axes[0].labels",
            ),
            (
                &format!(
                    "{base}[[axes]]\nkey = \"train.beta\"\nvalues = [1]\nlabels = [\"a\", \"b\"]\n"
                ),
                "2 labels for 1 values",
            ),
            (
                &format!("{base}[[axes]]\nname = \"m\"\nvalues = [\"rocm\"]\n"),
                "axes[0].values",
            ),
            (
                &format!("{base}[[axes]]\nvalues = [{{ label = \"a\", set = {{}} }}]\n"),
                "axes[0].name",
            ),
            (
                &format!(
                    "{base}[[axes]]\nkey = \"train.seed\"\nvalues = [0]\n[[axes]]\nkey = \"lora.seed\"\nvalues = [0]\n"
                ),
                "two axes are named `seed`",
            ),
            (
                &format!(
                    "{base}[[axes]]\nkey = \"train.seed\"\nvalues = [0]\n[quick]\naxes = {{ sed = [0] }}\n"
                ),
                "quick.axes.sed",
            ),
            (
                &format!(
                    "{base}[[axes]]\nkey = \"train.seed\"\nvalues = [0]\n[quick]\naxes = {{ seed = [5] }}\n"
                ),
                "`5` is none of the axis' labels (0)",
            ),
            (
                &format!(
                    "{base}[[axes]]\nkey = \"train.seed\"\nvalues = [0]\n[results]\nsplit_by = [\"beta\"]\n"
                ),
                "results.split_by",
            ),
            (
                &format!(
                    "{base}[[axes]]\nkey = \"train.seed\"\nvalues = [0]\n[results]\naverage_over = \"seed\"\nsplit_by = [\"seed\"]\n"
                ),
                "averaged over",
            ),
            (
                &format!("{base}[set]\n\"train..beta\" = 1\n"),
                "set.train..beta",
            ),
        ];
        for (text, want) in cases {
            let e = error(text);
            assert!(e.contains("bad.toml") || e.contains("missing.toml"), "{e}");
            assert!(e.contains(want), "{text}\n→ {e}\n(wanted {want})");
        }
    }

    #[test]
    fn a_key_through_a_value_is_refused_when_planning() {
        let text = "output_dir = \"o\"\nset = { \"model.x\" = 1 }\n[base]\nmodel = \"toy\"\n";
        let e = Grid::from_toml_str(text, "bad.toml")
            .unwrap()
            .plan(false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.toml: `set.model.x`: `model` is a string"),
            "{e}"
        );
    }

    #[test]
    fn set_key_nests_merges_and_replaces() {
        let mut t = Table::new();
        set_key(&mut t, "a.b.c", &Value::Integer(1)).unwrap();
        set_key(&mut t, "a.b.d", &Value::Integer(2)).unwrap();
        assert_eq!(t["a"]["b"]["c"].as_integer(), Some(1));
        assert_eq!(t["a"]["b"]["d"].as_integer(), Some(2));
        set_key(&mut t, "a.b", &Value::String("x".into())).unwrap();
        assert_eq!(t["a"]["b"].as_str(), Some("x"));
        let e = set_key(&mut t, "a.b.c", &Value::Integer(1)).unwrap_err();
        assert!(e.contains("`a.b` is a string"), "{e}");
    }

    #[test]
    fn relative_paths_are_rebased_onto_the_base_folder() {
        let dir = std::env::temp_dir().join(format!("rocm-grid-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("configs")).unwrap();
        std::fs::write(dir.join("configs/prompts.txt"), "a cat\n").unwrap();
        std::fs::write(
            dir.join("configs/base.toml"),
            "model = \"m\"\n[prompts]\nfile = \"prompts.txt\"\n",
        )
        .unwrap();
        let grid_path = dir.join("grid.toml");
        std::fs::write(
            &grid_path,
            "base = \"configs/base.toml\"\noutput_dir = \"o\"\n",
        )
        .unwrap();
        let grid = Grid::load(&grid_path).unwrap();
        let plain = grid.plan(false).unwrap();
        assert_eq!(
            plain.runs[0].config["prompts"]["file"].as_str(),
            Some("prompts.txt")
        );
        let rebased = grid.with_path_keys(&["prompts.file"]).plan(false).unwrap();
        assert_eq!(plain.runs[0].id, "run");
        assert_eq!(
            rebased.runs[0].config["prompts"]["file"].as_str(),
            dir.join("configs/prompts.txt").to_str()
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
