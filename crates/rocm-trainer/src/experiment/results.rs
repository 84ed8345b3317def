//! A finished run's final numbers ([`RunSummary`]) and the grid's results files ([`Results`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::error::io;
use super::report::{Context, write_reports};
use super::{
    COMPLETED_FILE, CURVES_CSV, GridError, PLAN_FILE, Plan, PlannedRun, RESULTS_CSV, RESULTS_MD,
    RUNS_DIR, TIMINGS_CSV,
};
use crate::metrics::read_metrics_jsonl;

/// The final metrics of a run, the columns of `results.csv` after the run id and its labels:
///
/// - `steps`: iterations trained;
/// - `reward`, `reward_std`, `divergence`, `loss`, `grad_norm`: the last iteration's batch
///   reward mean and standard deviation, divergence (without β), loss and gradient norm
///   ([`crate::IterationMetrics`]);
/// - `eval_reward`: the mean reward of the last evaluation (`eval.jsonl`; the fixed
///   `eval_prompts × eval_seeds`), empty without evaluation;
/// - `reward_queries`, `images_sampled`: totals over the run.
pub const SUMMARY_METRICS: [&str; 9] = [
    "steps",
    "reward",
    "reward_std",
    "divergence",
    "loss",
    "grad_norm",
    "eval_reward",
    "reward_queries",
    "images_sampled",
];

/// The metrics of `results.md`'s tables (`results.csv` has all of [`SUMMARY_METRICS`]).
const TABLE_METRICS: [&str; 5] = [
    "reward",
    "eval_reward",
    "divergence",
    "reward_std",
    "reward_queries",
];

/// A finished run's final numbers, read from its folder.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// The value of each of [`SUMMARY_METRICS`], in order (`None`: not measured).
    pub values: Vec<Option<f64>>,
    /// Wall-clock seconds of its training iterations, summed (`timings.csv`).
    pub seconds: f64,
}

impl RunSummary {
    /// Reads `dir/metrics.jsonl` (and `dir/eval.jsonl`, if any).
    pub fn read(dir: &Path) -> Result<Self, GridError> {
        let path = dir.join("metrics.jsonl");
        let metrics = read_metrics_jsonl(&path).map_err(|e| GridError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let last = metrics.last().ok_or_else(|| GridError::Parse {
            path: path.clone(),
            message: "no iterations recorded".into(),
        })?;
        let eval_reward = Self::last_eval(&dir.join("eval.jsonl"))?;
        let total =
            |f: fn(&crate::IterationMetrics) -> usize| metrics.iter().map(f).sum::<usize>() as f64;
        let values = vec![
            Some(last.step as f64),
            Some(last.reward_mean),
            Some(last.reward_std),
            Some(last.divergence_mean),
            Some(last.loss),
            Some(last.grad_norm),
            eval_reward,
            Some(total(|m| m.reward_queries)),
            Some(total(|m| m.images_sampled)),
        ];
        Ok(Self {
            values,
            seconds: metrics.iter().map(|m| m.seconds).sum(),
        })
    }

    /// The mean reward of the evaluation with the highest step in an `eval.jsonl`, if any.
    fn last_eval(path: &Path) -> Result<Option<f64>, GridError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path)(e)),
        };
        let mut best: Option<(u64, f64)> = None;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // cut short by a kill
            };
            if let (Some(step), Some(mean)) = (v["step"].as_u64(), v["reward_mean"].as_f64())
                && best.is_none_or(|(s, _)| step >= s)
            {
                best = Some((step, mean));
            }
        }
        Ok(best.map(|(_, mean)| mean))
    }

    /// The value of metric `name` (one of [`SUMMARY_METRICS`]).
    pub fn get(&self, name: &str) -> Option<f64> {
        let i = SUMMARY_METRICS.iter().position(|m| *m == name)?;
        self.values.get(i).copied().flatten()
    }
}

/// The results of a plan: each run's summary where it finished.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    /// The plan (configurations not needed).
    pub plan: Plan,
    /// One entry per plan run, `None` where no folder holds it finished.
    pub summaries: Vec<Option<RunSummary>>,
    /// The folder of each finished run (parallel to `summaries`), for `curves.csv` and the
    /// reports; `None` where not finished or not known.
    pub dirs: Vec<Option<PathBuf>>,
}

impl Results {
    /// The summaries of `plan`'s finished runs, each from the first of `dirs` (output
    /// folders: `<dir>/runs/<id>/`) where it is marked complete ([`COMPLETED_FILE`]).
    pub fn collect(plan: &Plan, dirs: &[PathBuf]) -> Result<Self, GridError> {
        let mut summaries = Vec::with_capacity(plan.runs.len());
        let mut found_dirs = Vec::with_capacity(plan.runs.len());
        for run in &plan.runs {
            let found = dirs
                .iter()
                .map(|d| d.join(RUNS_DIR).join(&run.id))
                .find(|d| d.join(COMPLETED_FILE).is_file());
            summaries.push(match &found {
                Some(dir) => Some(RunSummary::read(dir)?),
                None => None,
            });
            found_dirs.push(found);
        }
        Ok(Self {
            plan: plan.clone(),
            summaries,
            dirs: found_dirs,
        })
    }

    /// The results of the output folders `dirs` of one grid (shards run on several machines
    /// and copied together, or sharing one folder): their `plan.json` files must agree.
    pub fn merge(dirs: &[PathBuf]) -> Result<Self, GridError> {
        let mut plan: Option<(PathBuf, Plan)> = None;
        for dir in dirs {
            let path = dir.join(PLAN_FILE);
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let this: Plan = serde_json::from_str(&text).map_err(|e| GridError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
            match &plan {
                None => plan = Some((path, this)),
                Some((first, p)) if *p != this => {
                    return Err(GridError::Mismatch {
                        path,
                        message: format!(
                            "a different grid from {} (`{}`{}, {} runs vs `{}`{}, {} runs)",
                            first.display(),
                            this.name,
                            if this.quick { " quick" } else { "" },
                            this.runs.len(),
                            p.name,
                            if p.quick { " quick" } else { "" },
                            p.runs.len()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        let (_, plan) = plan.ok_or_else(|| GridError::Shard {
            given: "--merge".into(),
            message: "no output folders given".into(),
        })?;
        Self::collect(&plan, dirs)
    }

    /// The ids of the runs without a summary.
    pub fn missing(&self) -> Vec<&str> {
        self.plan
            .runs
            .iter()
            .zip(&self.summaries)
            .filter(|(_, s)| s.is_none())
            .map(|(r, _)| r.id.as_str())
            .collect()
    }

    /// The finished runs with their summaries, in plan order.
    fn finished(&self) -> impl Iterator<Item = (&PlannedRun, &RunSummary)> {
        self.plan
            .runs
            .iter()
            .zip(&self.summaries)
            .filter_map(|(r, s)| s.as_ref().map(|s| (r, s)))
    }

    /// `results.csv`: a header `run,<axes…>,<SUMMARY_METRICS…>` and one row per finished run in
    /// plan order; numbers in Rust's shortest round-trip form, an empty cell where not measured.
    pub fn csv(&self) -> String {
        let mut out = String::from("run");
        for name in self
            .plan
            .axes
            .iter()
            .map(String::as_str)
            .chain(SUMMARY_METRICS)
        {
            out.push(',');
            out.push_str(name);
        }
        out.push('\n');
        for (run, summary) in self.finished() {
            out.push_str(&run.id);
            for label in &run.labels {
                out.push(',');
                out.push_str(label);
            }
            for v in &summary.values {
                out.push(',');
                if let Some(v) = v {
                    out.push_str(&v.to_string());
                }
            }
            out.push('\n');
        }
        out
    }

    /// `timings.csv`: `run,seconds` per finished run (machine-dependent, hence not in
    /// `results.csv`).
    pub fn timings_csv(&self) -> String {
        let mut out = String::from("run,seconds\n");
        for (run, summary) in self.finished() {
            let _ = writeln!(out, "{},{:.3}", run.id, summary.seconds);
        }
        out
    }

    /// `results.md`: per value combination of the split axes a table whose rows are the
    /// combinations of the other axes but the averaged one, with mean ± sample standard
    /// deviation over the averaged axis' runs (`n` of them); the missing runs listed last.
    pub fn markdown(&self) -> String {
        let plan = &self.plan;
        let averaged = plan.results.average_over.as_deref();
        let axis_at = |name: &str| plan.axes.iter().position(|a| a == name);
        let split: Vec<usize> = plan
            .results
            .split_by
            .iter()
            .filter_map(|n| axis_at(n))
            .collect();
        let avg = averaged.and_then(axis_at);
        let rows_axes: Vec<usize> = (0..plan.axes.len())
            .filter(|a| !split.contains(a) && Some(*a) != avg)
            .collect();
        let pick = |labels: &[String], axes: &[usize]| -> Vec<String> {
            axes.iter().map(|a| labels[*a].clone()).collect()
        };
        let mut out = format!(
            "# {}{}: results\n\n",
            plan.name,
            if plan.quick { " (quick)" } else { "" }
        );
        let finished = self.finished().count();
        let _ = write!(out, "{finished} of {} runs finished. ", plan.runs.len());
        match averaged {
            Some(a) => {
                let _ = write!(
                    out,
                    "Mean ± sample standard deviation over `{a}` (n runs per row). "
                );
            }
            None => out.push_str("One run per row. "),
        }
        out.push_str(
            "Metrics of the last iteration (`eval_reward`: the last evaluation); every number \
             of every run is in results.csv, training seconds in timings.csv.\n",
        );
        // Tables and rows in plan order of first appearance.
        let mut tables: Vec<(Vec<String>, Vec<Row>)> = Vec::new();
        for (run, summary) in self.finished() {
            let key = pick(&run.labels, &split);
            let row = pick(&run.labels, &rows_axes);
            let t = match tables.iter().position(|(k, _)| *k == key) {
                Some(t) => t,
                None => {
                    tables.push((key, Vec::new()));
                    tables.len() - 1
                }
            };
            let rows = &mut tables[t].1;
            match rows.iter_mut().find(|(r, _)| *r == row) {
                Some((_, runs)) => runs.push(summary),
                None => rows.push((row, vec![summary])),
            }
        }
        for (key, rows) in &tables {
            out.push('\n');
            if !split.is_empty() {
                let title: Vec<String> = split
                    .iter()
                    .zip(key)
                    .map(|(a, l)| format!("{} = {l}", plan.axes[*a]))
                    .collect();
                let _ = writeln!(out, "## {}\n", title.join(", "));
            }
            let mut header: Vec<&str> = rows_axes.iter().map(|a| plan.axes[*a].as_str()).collect();
            header.push("n");
            header.extend(TABLE_METRICS);
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
            for (row, runs) in rows {
                let mut cells = row.clone();
                cells.push(runs.len().to_string());
                for metric in TABLE_METRICS {
                    let values: Vec<f64> = runs.iter().filter_map(|s| s.get(metric)).collect();
                    cells.push(mean_std(&values));
                }
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
        }
        let missing = self.missing();
        if !missing.is_empty() {
            let _ = writeln!(
                out,
                "\nMissing ({} runs not finished): {}",
                missing.len(),
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        out
    }

    /// `curves.csv`: every evaluation of every finished run, a row per (run, step):
    /// `run,<axes…>,step,seconds,reward_queries,<metrics…>` (the trained reward as `reward`,
    /// then the held-out rewards by name; empty where a run did not measure one). Training
    /// seconds are machine-dependent, like `timings.csv`'s.
    pub fn curves_csv(&self) -> Result<String, GridError> {
        Ok(Context::read(&self.plan, &self.dirs)?.curves_csv())
    }

    /// Writes `results.csv`, `results.md` (with a section per `[[reports]]` entry, whose files
    /// go next to it), `timings.csv` and `curves.csv` into `dir` (each written whole, then
    /// renamed into place). Every run's curves are read once, for the reports and `curves.csv`.
    pub fn write(&self, dir: &Path) -> Result<(), GridError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_atomic(&dir.join(RESULTS_CSV), &self.csv())?;
        let ctx = Context::read(&self.plan, &self.dirs)?;
        let reports = write_reports(&ctx, dir)?;
        write_atomic(&dir.join(RESULTS_MD), &(self.markdown() + &reports))?;
        write_atomic(&dir.join(TIMINGS_CSV), &self.timings_csv())?;
        write_atomic(&dir.join(CURVES_CSV), &ctx.curves_csv())
    }
}

/// Writes `text` to a temporary file beside `path`, then renames it onto `path`.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), GridError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A row of a results table: its labels and the runs averaged into it.
type Row<'a> = (Vec<String>, Vec<&'a RunSummary>);

/// A number for a table: a whole number as it is, else 4 decimals, or 3 significant digits in
/// exponent form when very large or small.
/// A number as results.md prints it: integers bare, 4 decimals, exponents outside [1e-3, 1e5).
pub(crate) fn number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into() // also −0
    } else if v.fract() == 0.0 && a < 1e15 {
        format!("{v:.0}")
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// `mean ± std` (sample standard deviation) of `values`; the value alone for one, `—` for none.
pub(crate) fn mean_std(values: &[f64]) -> String {
    match super::curves::mean_and_std(values) {
        None => "—".into(),
        Some((mean, _)) if values.len() == 1 => number(mean),
        Some((mean, std)) => format!("{} ± {}", number(mean), number(std)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Grid, ResultsSection};

    fn summary(reward: f64) -> RunSummary {
        let mut values = vec![Some(4.0), Some(reward)];
        values.extend([Some(0.5), Some(0.1), Some(-reward), Some(1.0), None]);
        values.extend([Some(64.0), Some(64.0)]);
        RunSummary {
            values,
            seconds: 1.25,
        }
    }

    fn plan() -> Plan {
        Grid::from_toml_str(
            "output_dir = \"o\"\n[base]\nmodel = \"toy\"\n\
             [[axes]]\nkey = \"train.algorithm\"\nvalues = [\"rocm\", \"rlcm\"]\n\
             [[axes]]\nkey = \"train.beta\"\nvalues = [0.0, 0.3]\n\
             [[axes]]\nkey = \"train.seed\"\nvalues = [0, 1]\n\
             [results]\nsplit_by = [\"algorithm\"]\n",
            "g.toml",
        )
        .unwrap()
        .plan(false)
        .unwrap()
    }

    #[test]
    fn tables_average_over_seeds_and_list_missing_runs() {
        let plan = plan();
        let mut summaries: Vec<Option<RunSummary>> =
            (0..8).map(|i| Some(summary(i as f64))).collect();
        summaries[7] = None;
        let dirs = vec![None; summaries.len()];
        let results = Results {
            plan,
            summaries,
            dirs,
        };
        let csv = results.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "run,algorithm,beta,seed,steps,reward,reward_std,divergence,loss,grad_norm,\
             eval_reward,reward_queries,images_sampled"
        );
        assert_eq!(
            lines[2],
            "algorithm-rocm_beta-0.0_seed-1,rocm,0.0,1,4,1,0.5,0.1,-1,1,,64,64"
        );
        assert_eq!(lines.len(), 8);
        let md = results.markdown();
        assert!(md.contains("7 of 8 runs finished"), "{md}");
        assert!(md.contains("## algorithm = rocm\n"), "{md}");
        assert!(md.contains("## algorithm = rlcm\n"), "{md}");
        assert!(md.contains("| beta | n | reward | eval_reward |"), "{md}");
        // Seeds 0 and 1 of rocm β 0: rewards 0 and 1, mean 0.5, sample std 0.7071.
        assert!(md.contains("| 0.0 | 2 | 0.5000 ± 0.7071 | — |"), "{md}");
        // rlcm β 0.3 has one finished seed.
        assert!(md.contains("| 0.3 | 1 | 6 | — |"), "{md}");
        assert!(
            md.contains("Missing (1 runs not finished): `algorithm-rlcm_beta-0.3_seed-1`"),
            "{md}"
        );
        assert_eq!(results.missing(), ["algorithm-rlcm_beta-0.3_seed-1"]);
        assert!(
            results
                .timings_csv()
                .contains("algorithm-rocm_beta-0.0_seed-0,1.250\n")
        );
    }

    #[test]
    fn without_an_averaged_axis_each_run_is_a_row() {
        let mut plan = plan();
        plan.results = ResultsSection::default();
        let results = Results {
            summaries: vec![Some(summary(2.0)); 8],
            dirs: vec![None; 8],
            plan,
        };
        let md = results.markdown();
        assert!(md.contains("One run per row"), "{md}");
        assert!(md.contains("| algorithm | beta | seed | n |"), "{md}");
        assert_eq!(md.matches("| 1 | 2 |").count(), 8, "{md}");
    }

    #[test]
    fn numbers_and_spreads() {
        assert_eq!(number(1.5), "1.5000");
        assert_eq!(number(-546.6012), "-546.6012");
        assert_eq!(number(123456.5), "1.235e5");
        assert_eq!(number(2e-5), "2.000e-5");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(1280.0), "1280");
        assert_eq!(mean_std(&[]), "—");
        assert_eq!(mean_std(&[1.0, 3.0]), "2 ± 1.4142");
        assert_eq!(mean_std(&[0.5, 0.75]), "0.6250 ± 0.1768");
    }

    #[test]
    fn summary_reads_the_last_step_and_evaluation() {
        let dir = std::env::temp_dir().join(format!("rocm-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = |step, reward| crate::IterationMetrics {
            step,
            reward_mean: reward,
            reward_queries: 8,
            images_sampled: 8,
            seconds: 0.5,
            ..Default::default()
        };
        let lines: Vec<String> = [m(1, 1.0), m(2, 2.0), m(2, 3.0)]
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect();
        std::fs::write(dir.join("metrics.jsonl"), lines.join("\n")).unwrap();
        std::fs::write(
            dir.join("eval.jsonl"),
            "{\"step\":1,\"reward_mean\":0.25}\n{\"step\":2,\"reward_mean\":0.75}\n",
        )
        .unwrap();
        let s = RunSummary::read(&dir).unwrap();
        assert_eq!(s.get("steps"), Some(2.0));
        assert_eq!(s.get("reward"), Some(3.0));
        assert_eq!(s.get("eval_reward"), Some(0.75));
        assert_eq!(s.get("reward_queries"), Some(16.0));
        assert_eq!(s.seconds, 1.0);
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
        let e = RunSummary::read(&dir).unwrap_err().to_string();
        assert!(
            e.contains("metrics.jsonl") && e.contains("no iterations"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
