//! Per-iteration metrics, and their JSONL / CSV files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::error::io;

/// What one training iteration measured (all means are over the iteration's whole batch,
/// every micro-batch included).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IterationMetrics {
    /// The 1-based iteration (= optimizer updates so far).
    pub step: usize,
    /// `mean_b R(x_K)`.
    pub reward_mean: f64,
    /// `mean_b Σ_{k<K−1} D_k`, without β (recorded even when β = 0).
    pub divergence_mean: f64,
    /// `mean_b D_k` of every non-final step `k`, without β.
    pub divergence_per_step: Vec<f64>,
    /// The loss `−mean R + β mean Σ D`.
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate of this update.
    pub lr: f64,
    /// Wall-clock seconds of the iteration.
    pub seconds: f64,
    /// The population standard deviation of the batch's rewards.
    #[serde(default)]
    pub reward_std: f64,
    /// `½ mean (lp − lp_old)²` of the policy-gradient baselines (0 for ROCM).
    #[serde(default)]
    pub approx_kl: f64,
    /// The fraction of transitions whose ratio left the clip window (baselines; 0 for ROCM).
    #[serde(default)]
    pub clipfrac: f64,
    /// Reward-model evaluations this iteration.
    #[serde(default)]
    pub reward_queries: usize,
    /// Images sampled this iteration.
    #[serde(default)]
    pub images_sampled: usize,
}

impl IterationMetrics {
    /// The CSV header for `steps` non-final sampler steps.
    pub fn csv_header(steps: usize) -> String {
        let mut h = "step,reward_mean,divergence_mean,loss,grad_norm,lr,seconds,reward_std,\
                     approx_kl,clipfrac,reward_queries,images_sampled"
            .to_string();
        for k in 0..steps {
            h.push_str(&format!(",divergence_{k}"));
        }
        h
    }

    /// One CSV row, in [`IterationMetrics::csv_header`]'s order.
    pub fn csv_row(&self) -> String {
        let mut r = format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            self.step,
            self.reward_mean,
            self.divergence_mean,
            self.loss,
            self.grad_norm,
            self.lr,
            self.seconds,
            self.reward_std,
            self.approx_kl,
            self.clipfrac,
            self.reward_queries,
            self.images_sampled
        );
        for d in &self.divergence_per_step {
            r.push_str(&format!(",{d}"));
        }
        r
    }

    /// The metrics without the wall-clock time (for reproducibility checks).
    pub fn without_time(&self) -> Self {
        Self {
            seconds: 0.0,
            ..self.clone()
        }
    }
}

/// The iterations recorded in a `metrics.jsonl` file, one per step in step order: a run
/// resumed from a checkpoint repeats the steps after it, and the last line of each step is
/// kept; lines that do not parse (a line cut short by a kill) are skipped. A missing file is
/// an error naming it.
pub fn read_metrics_jsonl(path: &Path) -> Result<Vec<IterationMetrics>, Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut by_step = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Ok(m) = serde_json::from_str::<IterationMetrics>(line) {
            by_step.insert(m.step, m);
        }
    }
    Ok(by_step.into_values().collect())
}

/// Appends metrics to `metrics.jsonl` and `metrics.csv` in a directory.
#[derive(Debug)]
pub struct MetricsWriter {
    jsonl: (PathBuf, File),
    csv: (PathBuf, File),
    header_written: bool,
}

impl MetricsWriter {
    /// Opens (creating the directory and files) `dir/metrics.jsonl` and `dir/metrics.csv` for
    /// appending; a resumed run continues the same files.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let open = |name: &str| -> Result<(PathBuf, File), Error> {
            let path = dir.join(name);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            Ok((path, file))
        };
        let csv = open("metrics.csv")?;
        let header_written = csv.1.metadata().map(|m| m.len() > 0).unwrap_or(false);
        Ok(Self {
            jsonl: open("metrics.jsonl")?,
            csv,
            header_written,
        })
    }

    /// The JSONL file's path.
    pub fn jsonl_path(&self) -> &Path {
        &self.jsonl.0
    }

    /// The CSV file's path.
    pub fn csv_path(&self) -> &Path {
        &self.csv.0
    }

    /// Appends one iteration to both files.
    pub fn write(&mut self, m: &IterationMetrics) -> Result<(), Error> {
        let line = serde_json::to_string(m).map_err(|e| Error::Json {
            path: self.jsonl.0.clone(),
            message: e.to_string(),
        })?;
        writeln!(self.jsonl.1, "{line}").map_err(io(&self.jsonl.0))?;
        if !self.header_written {
            let header = IterationMetrics::csv_header(m.divergence_per_step.len());
            writeln!(self.csv.1, "{header}").map_err(io(&self.csv.0))?;
            self.header_written = true;
        }
        writeln!(self.csv.1, "{}", m.csv_row()).map_err(io(&self.csv.0))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_jsonl_and_csv() {
        let dir = std::env::temp_dir().join(format!("rocm-metrics-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let m = IterationMetrics {
            step: 1,
            reward_mean: 0.5,
            divergence_mean: 0.25,
            divergence_per_step: vec![0.1, 0.15],
            loss: -0.475,
            grad_norm: 2.0,
            lr: 1e-3,
            seconds: 0.01,
            reward_std: 0.1,
            approx_kl: 1e-9,
            clipfrac: 0.5,
            reward_queries: 2,
            images_sampled: 2,
        };
        {
            let mut w = MetricsWriter::open(&dir).unwrap();
            w.write(&m).unwrap();
        }
        let mut w = MetricsWriter::open(&dir).unwrap();
        w.write(&IterationMetrics {
            step: 2,
            ..m.clone()
        })
        .unwrap();
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let lines: Vec<_> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        assert!(lines[0].ends_with("divergence_0,divergence_1"));
        let jsonl = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let back: IterationMetrics = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(back, m);
        // A resumed run repeats step 2; a cut line is skipped; the last line of a step wins.
        let again = IterationMetrics {
            step: 2,
            loss: 7.0,
            ..m.clone()
        };
        let extra = format!(
            "{{\"step\": 3, \"rew\n{}\n",
            serde_json::to_string(&again).unwrap()
        );
        std::fs::write(dir.join("metrics.jsonl"), format!("{jsonl}{extra}")).unwrap();
        let read = read_metrics_jsonl(&dir.join("metrics.jsonl")).unwrap();
        assert_eq!(read.iter().map(|m| m.step).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(read[1].loss, 7.0);
        let missing = read_metrics_jsonl(&dir.join("nope.jsonl")).unwrap_err();
        assert!(missing.to_string().contains("nope.jsonl"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
