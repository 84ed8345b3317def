//! The runs a report is drawn from: the plan's finished runs with their evaluations, selected by
//! axis label.

use std::path::PathBuf;

use std::fmt::Write as _;

use super::Filter;
use crate::experiment::curves::RunCurves;
use crate::experiment::grid::lists;
use crate::experiment::{GridError, Plan, PlannedRun};

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

    /// The position of axis `name` in the plan.
    pub(super) fn axis(&self, name: &str) -> Option<usize> {
        self.plan.axes.iter().position(|a| a == name)
    }

    /// The run's label on `axis` (`None` when the plan has no such axis).
    pub(super) fn label<'r>(&self, run: &'r Finished, axis: &str) -> Option<&'r str> {
        self.axis(axis).map(|a| run.run.labels[a].as_str())
    }

    /// The finished runs `filter` keeps.
    pub(super) fn kept(&self, filter: &Filter) -> Vec<&Finished<'a>> {
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
    pub(super) fn labels_in(&self, axis: &str, runs: &[&Finished]) -> Vec<String> {
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

    /// The runs among `runs` whose label on `axis` is `label`.
    pub(super) fn with_label<'r>(
        &self,
        runs: &[&'r Finished<'a>],
        axis: &str,
        label: &str,
    ) -> Vec<&'r Finished<'a>> {
        runs.iter()
            .copied()
            .filter(|f| self.label(f, axis) == Some(label))
            .collect()
    }

    /// `curves.csv` of these runs ([`crate::experiment::Results::curves_csv`]).
    pub(crate) fn curves_csv(&self) -> String {
        let mut metrics: Vec<String> = Vec::new();
        for f in &self.runs {
            for m in f.curves.metric_names() {
                if !metrics.contains(&m) {
                    metrics.push(m);
                }
            }
        }
        let mut out = String::from("run");
        for name in self.plan.axes.iter().chain(&metrics_header(&metrics)) {
            out.push(',');
            out.push_str(name);
        }
        out.push('\n');
        for f in &self.runs {
            for e in &f.curves.evals {
                out.push_str(&f.run.id);
                for label in &f.run.labels {
                    out.push(',');
                    out.push_str(label);
                }
                let _ = write!(out, ",{},{},{}", e.step, e.seconds, e.reward_queries);
                for m in &metrics {
                    out.push(',');
                    if let Some(v) = e.values.get(m) {
                        out.push_str(&v.to_string());
                    }
                }
                out.push('\n');
            }
        }
        out
    }

    /// The averaged axis.
    pub(super) fn averaged(&self) -> String {
        self.plan
            .results
            .average_over
            .clone()
            .unwrap_or_else(|| "seed".into())
    }
}

/// Each run's value of `metric` at its step-0 evaluation (`start`) or its last one, where it has
/// one.
pub(super) fn final_values(runs: &[&Finished], metric: &str, start: bool) -> Vec<f64> {
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

/// The header cells of `curves.csv` after the axes.
fn metrics_header(metrics: &[String]) -> Vec<String> {
    ["step", "seconds", "reward_queries"]
        .into_iter()
        .map(String::from)
        .chain(metrics.iter().cloned())
        .collect()
}
