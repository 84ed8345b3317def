//! A finished run's curves, read back from its folder ([`RunCurves`]): every evaluation
//! (`eval.jsonl`: the trained reward and the held-out rewards at each evaluated step) with the
//! training seconds and reward queries spent up to it (`metrics.jsonl`), and its resolved
//! configuration (`config.toml`). What the `[[reports]]` of a grid are drawn from, and what
//! `curves.csv` lists.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Table;

use super::GridError;
use super::error::io;
use crate::metrics::read_metrics_jsonl;

/// The metric name of the trained reward's evaluation mean (`reward_mean` in `eval.jsonl`);
/// any other metric name is a held-out reward's (`held_out.<name>.mean`).
pub const TRAINED_REWARD: &str = "reward";

/// One evaluation of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPoint {
    /// The iteration it followed (0: before training, the base model).
    pub step: usize,
    /// Training wall-clock seconds up to `step` (the iterations' own, evaluations excluded).
    pub seconds: f64,
    /// Reward queries made by training up to `step`.
    pub reward_queries: f64,
    /// The mean of each metric: [`TRAINED_REWARD`] and each held-out reward by name.
    pub values: BTreeMap<String, f64>,
}

/// A finished run's evaluations, in step order, and its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurves {
    /// Its evaluations (one per step: a step evaluated twice, after a resume, keeps the last).
    pub evals: Vec<EvalPoint>,
    /// Its resolved run configuration (`config.toml`; empty if absent).
    pub config: Table,
}

impl RunCurves {
    /// Reads `dir/eval.jsonl`, `dir/metrics.jsonl` and `dir/config.toml`. A run without
    /// evaluations has no points; a line cut short by a kill is skipped.
    pub fn read(dir: &Path) -> Result<Self, GridError> {
        let config = match std::fs::read_to_string(dir.join("config.toml")) {
            Ok(text) => toml::from_str(&text).map_err(|e| GridError::Parse {
                path: dir.join("config.toml"),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::new(),
            Err(e) => return Err(io(dir.join("config.toml"))(e)),
        };
        let eval_path = dir.join("eval.jsonl");
        let text = match std::fs::read_to_string(&eval_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&eval_path)(e)),
        };
        let metrics_path = dir.join("metrics.jsonl");
        let metrics = if text.trim().is_empty() {
            Vec::new()
        } else {
            read_metrics_jsonl(&metrics_path).map_err(|e| GridError::Parse {
                path: metrics_path.clone(),
                message: e.to_string(),
            })?
        };
        let spent = |step: usize| {
            metrics
                .iter()
                .filter(|m| m.step <= step)
                .fold((0.0, 0.0), |(s, q), m| {
                    (s + m.seconds, q + m.reward_queries as f64)
                })
        };
        let mut by_step: BTreeMap<usize, BTreeMap<String, f64>> = BTreeMap::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // cut short by a kill
            };
            let (Some(step), Some(mean)) = (v["step"].as_u64(), v["reward_mean"].as_f64()) else {
                continue;
            };
            let mut values = BTreeMap::from([(TRAINED_REWARD.to_string(), mean)]);
            if let Some(held) = v["held_out"].as_object() {
                for (name, h) in held {
                    if let Some(m) = h["mean"].as_f64() {
                        values.insert(name.clone(), m);
                    }
                }
            }
            by_step.insert(step as usize, values);
        }
        let evals = by_step
            .into_iter()
            .map(|(step, values)| {
                let (seconds, reward_queries) = spent(step);
                EvalPoint {
                    step,
                    seconds,
                    reward_queries,
                    values,
                }
            })
            .collect();
        Ok(Self { evals, config })
    }

    /// The evaluation at `step` 0 (the base model), if the run made one.
    pub fn start(&self) -> Option<&EvalPoint> {
        self.evals.first().filter(|e| e.step == 0)
    }

    /// The last evaluation, if any.
    pub fn last(&self) -> Option<&EvalPoint> {
        self.evals.last()
    }

    /// The metric names of its evaluations, [`TRAINED_REWARD`] first.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = vec![TRAINED_REWARD.to_string()];
        for e in &self.evals {
            for k in e.values.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        names
    }
}

/// The mean and sample standard deviation (0 for one value) of `values`, `None` if empty.
pub(crate) fn mean_and_std(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some((mean, std))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_evaluations_with_the_budget_spent_up_to_each() {
        let dir = std::env::temp_dir().join(format!("rocm-curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let metric = |step: usize, seconds: f64| {
            let m = crate::IterationMetrics {
                step,
                seconds,
                reward_queries: 8,
                ..crate::IterationMetrics::default()
            };
            serde_json::to_string(&m).unwrap() + "\n"
        };
        let metrics: String = (1..=4).map(|s| metric(s, 0.5 * s as f64)).collect();
        std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
        std::fs::write(
            dir.join("eval.jsonl"),
            "{\"step\":0,\"reward_mean\":1.0,\"held_out\":{\"h\":{\"mean\":1.5,\"values\":[1.5]}}}\n\
             {\"step\":2,\"reward_mean\":2.0,\"held_out\":{\"h\":{\"mean\":1.4,\"values\":[1.4]}}}\n\
             {\"step\":2,\"reward_mean\":2.5,\"held_out\":{}}\n\
             {\"step\":4,\"reward_mean\":3.0}\n{\"step\":",
        )
        .unwrap();
        std::fs::write(dir.join("config.toml"), "[train]\nbeta = 0.3\n").unwrap();
        let c = RunCurves::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let steps: Vec<usize> = c.evals.iter().map(|e| e.step).collect();
        assert_eq!(steps, [0, 2, 4]);
        assert_eq!(c.start().unwrap().values["h"], 1.5);
        // The re-evaluated step keeps its last line.
        assert_eq!(c.evals[1].values[TRAINED_REWARD], 2.5);
        assert!(!c.evals[1].values.contains_key("h"));
        assert_eq!((c.evals[1].seconds, c.evals[1].reward_queries), (1.5, 16.0));
        assert_eq!(
            (c.last().unwrap().seconds, c.last().unwrap().reward_queries),
            (5.0, 32.0)
        );
        assert_eq!(c.metric_names(), ["reward", "h"]);
        assert_eq!(c.config["train"]["beta"].as_float(), Some(0.3));
        assert_eq!(mean_and_std(&[1.0, 3.0]), Some((2.0, 2f64.sqrt())));
        assert_eq!(mean_and_std(&[]), None);
    }
}
