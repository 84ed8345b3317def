//! Running a plan's runs: [`execute`] with a [`Launcher`] that trains one run.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use super::error::io;
use super::results::write_atomic;
use super::{GridError, PLAN_FILE, Plan, PlannedRun, RunSummary};
use crate::checkpoint::latest_checkpoint;

/// `<run>/completed.json`: written once a run has trained to its end; a run holding it is
/// never run again.
pub const COMPLETED_FILE: &str = "completed.json";

/// The files of a run's earlier attempt that a fresh start (no checkpoint to resume) removes.
const STALE_FILES: [&str; 3] = ["metrics.jsonl", "metrics.csv", "eval.jsonl"];

/// Trains one run of a plan to its end.
pub trait Launcher: Sync {
    /// Trains `run` in its folder `dir`, whose `config.toml` holds its resolved configuration;
    /// with `resume`, from the newest checkpoint under `dir/checkpoints`. Once `stop` is set
    /// (a signal), the run should stop at a checkpoint and return an error. `Ok` means the run
    /// trained all its iterations; an error is one line saying why not.
    fn launch(
        &self,
        run: &PlannedRun,
        dir: &Path,
        resume: bool,
        stop: &AtomicBool,
    ) -> Result<(), String>;
}

impl<F> Launcher for F
where
    F: Fn(&PlannedRun, &Path, bool, &AtomicBool) -> Result<(), String> + Sync,
{
    fn launch(
        &self,
        run: &PlannedRun,
        dir: &Path,
        resume: bool,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        self(run, dir, resume, stop)
    }
}

/// What [`execute`] reports as it goes; `position` is the run's 1-based place among the
/// `total` runs given to it.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// The run was already complete: not run again.
    Skipped {
        /// The run.
        run: &'a PlannedRun,
        /// Its place, 1-based.
        position: usize,
        /// Runs given to [`execute`].
        total: usize,
    },
    /// The run started, from scratch or resuming a checkpoint.
    Started {
        /// The run.
        run: &'a PlannedRun,
        /// Its place, 1-based.
        position: usize,
        /// Runs given to [`execute`].
        total: usize,
        /// Whether it resumes from a checkpoint.
        resume: bool,
    },
    /// The run finished.
    Finished {
        /// The run.
        run: &'a PlannedRun,
        /// Its place, 1-based.
        position: usize,
        /// Runs given to [`execute`].
        total: usize,
        /// Its wall-clock seconds in this invocation.
        seconds: f64,
        /// Estimated seconds until the remaining runs are done (mean seconds of the runs
        /// trained so far × the runs left / the jobs), once one has finished.
        eta: Option<f64>,
    },
    /// The run failed (or was interrupted); the others go on.
    Failed {
        /// The run.
        run: &'a PlannedRun,
        /// Its place, 1-based.
        position: usize,
        /// Runs given to [`execute`].
        total: usize,
        /// Why.
        message: String,
    },
}

/// What became of each run given to [`execute`], by id, in the order they ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Trained to the end in this invocation.
    pub finished: Vec<String>,
    /// Already complete.
    pub skipped: Vec<String>,
    /// Failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Stopped by the stop flag (they resume from their checkpoint next time), or never
    /// started because of it.
    pub interrupted: Vec<String>,
}

impl Outcome {
    /// Whether every run is complete.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.interrupted.is_empty()
    }
}

/// Runs `runs` (of `plan`) with `jobs` at a time (at least 1), each in its folder
/// `<output_dir>/runs/<id>/`, after writing `<output_dir>/plan.json`:
///
/// - a run holding [`COMPLETED_FILE`] is skipped;
/// - otherwise its resolved configuration is written to `config.toml` (a folder whose
///   `config.toml` differs — the grid changed after the run started — fails that run rather
///   than mix two configurations), and it is launched, resuming from its newest checkpoint if
///   it has one (an interrupted run), else from scratch (files of an attempt that never
///   checkpointed are removed first);
/// - a run that trained to the end gets [`COMPLETED_FILE`] once its metrics read back
///   ([`RunSummary::read`]);
/// - a failed run is reported and the others go on; once `stop` is set no new run starts.
///
/// Errors only when `plan.json` cannot be written; every run's fate is in the [`Outcome`].
pub fn execute(
    plan: &Plan,
    runs: &[&PlannedRun],
    jobs: usize,
    stop: &AtomicBool,
    launcher: &dyn Launcher,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<Outcome, GridError> {
    std::fs::create_dir_all(&plan.output_dir).map_err(io(&plan.output_dir))?;
    let manifest = serde_json::to_string_pretty(plan).map_err(|e| GridError::Parse {
        path: plan.output_dir.join(PLAN_FILE),
        message: e.to_string(),
    })?;
    write_atomic(&plan.output_dir.join(PLAN_FILE), &format!("{manifest}\n"))?;

    let total = runs.len();
    // The runs to train: those not complete when the command started (the ETA's denominator).
    let to_train = runs
        .iter()
        .filter(|r| !plan.run_dir(r).join(COMPLETED_FILE).is_file())
        .count();
    let jobs = jobs.clamp(1, total.max(1));
    let next = AtomicUsize::new(0);
    let state: Shared = Mutex::new((Outcome::default(), Vec::new()));
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(run) = runs.get(i) else { break };
            let position = i + 1;
            let dir = plan.run_dir(run);
            if dir.join(COMPLETED_FILE).is_file() {
                record(&state, |o, _| o.skipped.push(run.id.clone()));
                on_event(&Event::Skipped {
                    run,
                    position,
                    total,
                });
                continue;
            }
            if stop.load(Ordering::SeqCst) {
                record(&state, |o, _| o.interrupted.push(run.id.clone()));
                continue;
            }
            let began = Instant::now();
            let result = prepare(run, &dir).and_then(|resume| {
                on_event(&Event::Started {
                    run,
                    position,
                    total,
                    resume,
                });
                launcher.launch(run, &dir, resume, stop)?;
                complete(run, &dir)
            });
            let seconds = began.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    let eta = record(&state, |o, times| {
                        o.finished.push(run.id.clone());
                        times.push(seconds);
                        let done = o.finished.len() + o.failed.len() + o.interrupted.len();
                        let mean = times.iter().sum::<f64>() / times.len() as f64;
                        let left = to_train.saturating_sub(done) as f64;
                        Some(mean * left / jobs as f64)
                    });
                    on_event(&Event::Finished {
                        run,
                        position,
                        total,
                        seconds,
                        eta,
                    });
                }
                Err(message) if stop.load(Ordering::SeqCst) => {
                    record(&state, |o, _| o.interrupted.push(run.id.clone()));
                    on_event(&Event::Failed {
                        run,
                        position,
                        total,
                        message: format!("interrupted: {message}"),
                    });
                }
                Err(message) => {
                    record(&state, |o, _| {
                        o.failed.push((run.id.clone(), message.clone()))
                    });
                    on_event(&Event::Failed {
                        run,
                        position,
                        total,
                        message,
                    });
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(worker);
        }
    });
    let (outcome, _) = state.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(outcome)
}

/// The outcome so far and the seconds of each run trained, shared by the workers.
type Shared = Mutex<(Outcome, Vec<f64>)>;

/// Calls `f` on the shared state under its lock.
fn record<T>(state: &Shared, f: impl FnOnce(&mut Outcome, &mut Vec<f64>) -> T) -> T {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    let (outcome, times) = &mut *guard;
    f(outcome, times)
}

/// Writes (or checks) the run's `config.toml`; returns whether it resumes from a checkpoint.
fn prepare(run: &PlannedRun, dir: &Path) -> Result<bool, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = run.config_text();
    let path = dir.join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(old) if old == text => {}
        Ok(_) => {
            return Err(format!(
                "{} differs from the grid's configuration of this run (the grid changed after \
                 it started): restore the grid, or delete {} to run it afresh",
                path.display(),
                dir.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomic(&path, &text).map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let resume = latest_checkpoint(&dir.join("checkpoints"))
        .map_err(|e| e.to_string())?
        .is_some();
    if !resume {
        for name in STALE_FILES {
            let stale = dir.join(name);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| format!("{}: {e}", stale.display()))?;
            }
        }
    }
    Ok(resume)
}

/// Reads the finished run's metrics back and marks it complete.
fn complete(run: &PlannedRun, dir: &Path) -> Result<(), String> {
    let summary = RunSummary::read(dir).map_err(|e| e.to_string())?;
    let marker = serde_json::json!({"run": run.id, "steps": summary.get("steps")});
    write_atomic(&dir.join(COMPLETED_FILE), &format!("{marker}\n")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::experiment::{Grid, Results};

    fn plan(out: &Path) -> Plan {
        let text = format!(
            "output_dir = '{}'\n[base]\nmodel = \"toy\"\n\
             [[axes]]\nkey = \"train.beta\"\nvalues = [0.0, 0.3]\n\
             [[axes]]\nkey = \"train.seed\"\nvalues = [0, 1, 2]\n",
            out.display()
        );
        Grid::from_toml_str(&text, "g.toml")
            .unwrap()
            .plan(false)
            .unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rocm-exec-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir
    }

    /// A launcher standing in for training: writes two iterations of metrics whose reward is
    /// the run's index, fails the runs whose id contains `fail`, records what it was asked.
    struct Fake {
        fail: &'static str,
        calls: Mutex<Vec<(String, bool)>>,
    }

    impl Launcher for Fake {
        fn launch(
            &self,
            run: &PlannedRun,
            dir: &Path,
            resume: bool,
            _: &AtomicBool,
        ) -> Result<(), String> {
            self.calls.lock().unwrap().push((run.id.clone(), resume));
            if !self.fail.is_empty() && run.id.contains(self.fail) {
                return Err("exit code 2: the trainer said no".into());
            }
            assert!(dir.join("config.toml").is_file());
            let mut w = crate::MetricsWriter::open(dir).unwrap();
            for step in 1..=2 {
                w.write(&crate::IterationMetrics {
                    step,
                    reward_mean: run.index as f64,
                    ..Default::default()
                })
                .unwrap();
            }
            Ok(())
        }
    }

    fn fake(fail: &'static str) -> Fake {
        Fake {
            fail,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn run_all(plan: &Plan, jobs: usize, launcher: &Fake) -> Outcome {
        let runs: Vec<&PlannedRun> = plan.runs.iter().collect();
        let events = Mutex::new(Vec::new());
        let on_event = |e: &Event| events.lock().unwrap().push(format!("{e:?}"));
        execute(
            plan,
            &runs,
            jobs,
            &AtomicBool::new(false),
            launcher,
            &on_event,
        )
        .unwrap()
    }

    #[test]
    fn a_failed_run_does_not_stop_the_grid() {
        let out = scratch("fail");
        let plan = plan(&out);
        let launcher = fake("beta-0.0_seed-1");
        let outcome = run_all(&plan, 2, &launcher);
        assert_eq!(outcome.finished.len(), 5, "{outcome:?}");
        assert_eq!(outcome.failed.len(), 1);
        assert_eq!(outcome.failed[0].0, "beta-0.0_seed-1");
        assert!(outcome.failed[0].1.contains("the trainer said no"));
        assert!(!outcome.is_success());
        let results = Results::collect(&plan, std::slice::from_ref(&out)).unwrap();
        assert_eq!(results.missing(), ["beta-0.0_seed-1"]);
        assert!(out.join("plan.json").is_file());
        // Run again: the five finished are skipped, the failed one retried.
        let again = fake("");
        let outcome = run_all(&plan, 1, &again);
        assert_eq!(outcome.skipped.len(), 5);
        assert_eq!(outcome.finished, ["beta-0.0_seed-1"]);
        assert_eq!(
            *again.calls.lock().unwrap(),
            [("beta-0.0_seed-1".to_string(), false)]
        );
        std::fs::remove_dir_all(&out).ok();
    }

    #[test]
    fn a_finished_run_is_never_redone_and_an_interrupted_one_resumes() {
        let out = scratch("resume");
        let plan = plan(&out);
        let first = fake("");
        assert!(run_all(&plan, 1, &first).is_success());
        let metrics = plan.run_dir(&plan.runs[0]).join("metrics.jsonl");
        let before = (
            std::fs::read(&metrics).unwrap(),
            std::fs::metadata(&metrics).unwrap().modified().unwrap(),
        );
        // Interrupt run 1 after a checkpoint: no completion marker, a `latest` checkpoint.
        let dir1 = plan.run_dir(&plan.runs[1]);
        std::fs::remove_file(dir1.join(COMPLETED_FILE)).unwrap();
        std::fs::create_dir_all(dir1.join("checkpoints/step-000001")).unwrap();
        std::fs::write(dir1.join("checkpoints/step-000001/state.json"), "{}").unwrap();
        std::fs::write(dir1.join("checkpoints/latest"), "step-000001").unwrap();
        // Run 2 interrupted before its first checkpoint: starts afresh, stale metrics removed.
        let dir2 = plan.run_dir(&plan.runs[2]);
        std::fs::remove_file(dir2.join(COMPLETED_FILE)).unwrap();
        let second = fake("");
        let outcome = run_all(&plan, 1, &second);
        assert_eq!(outcome.skipped.len(), 4);
        let calls = second.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                (plan.runs[1].id.clone(), true),
                (plan.runs[2].id.clone(), false)
            ]
        );
        let after = (
            std::fs::read(&metrics).unwrap(),
            std::fs::metadata(&metrics).unwrap().modified().unwrap(),
        );
        assert_eq!(before, after, "a finished run's metrics were rewritten");
        // Resumed: metrics appended (steps repeated), fresh: rewritten.
        let lines = |d: &Path| {
            std::fs::read_to_string(d.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!((lines(&dir1), lines(&dir2)), (4, 2));
        std::fs::remove_dir_all(&out).ok();
    }

    #[test]
    fn a_changed_configuration_fails_its_run() {
        let out = scratch("changed");
        let plan = plan(&out);
        let dir = plan.run_dir(&plan.runs[3]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), "model = \"toy\"\n").unwrap();
        let outcome = run_all(&plan, 1, &fake(""));
        assert_eq!(outcome.finished.len(), 5);
        assert_eq!(outcome.failed.len(), 1);
        assert!(
            outcome.failed[0].1.contains("differs"),
            "{:?}",
            outcome.failed
        );
        std::fs::remove_dir_all(&out).ok();
    }

    #[test]
    fn nothing_starts_once_stopped() {
        let out = scratch("stop");
        let plan = plan(&out);
        let runs: Vec<&PlannedRun> = plan.runs.iter().collect();
        let launcher = fake("");
        let outcome = execute(&plan, &runs, 1, &AtomicBool::new(true), &launcher, &|_| {}).unwrap();
        assert_eq!(outcome.interrupted.len(), 6);
        assert!(launcher.calls.lock().unwrap().is_empty());
        std::fs::remove_dir_all(&out).ok();
    }

    #[test]
    fn the_estimate_counts_only_the_runs_left_to_train() {
        let out = scratch("eta");
        let plan = plan(&out);
        // The last four of six runs are already complete: after the first run the estimate is
        // one run's time (one left to train), not five runs' (five left in the plan).
        let launcher = fake("");
        for run in &plan.runs[2..] {
            let dir = plan.run_dir(run);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(COMPLETED_FILE), "{}").unwrap();
        }
        let runs: Vec<&PlannedRun> = plan.runs.iter().collect();
        let etas = Mutex::new(Vec::new());
        let on_event = |e: &Event| {
            if let Event::Finished { seconds, eta, .. } = e {
                etas.lock().unwrap().push((*seconds, *eta));
            }
        };
        execute(
            &plan,
            &runs,
            1,
            &AtomicBool::new(false),
            &launcher,
            &on_event,
        )
        .unwrap();
        let etas = etas.into_inner().unwrap();
        std::fs::remove_dir_all(&out).ok();
        assert_eq!(etas.len(), 2);
        let (first, eta) = etas[0];
        assert_eq!(eta, Some(first), "one run left after the first");
        assert_eq!(etas[1].1, Some(0.0));
    }
}
