//! Experiment grids: many independent training runs from one declarative TOML file, run
//! sequentially or several at a time, resumable, sliced into disjoint shards for several
//! machines, and summarised into one results table (docs/experiments.md).
//!
//! | piece | item |
//! |---|---|
//! | the grid file: a base run configuration, axes, `[quick]`, `[results]` | [`Grid`] |
//! | its runs, in a fixed order, with their resolved configurations | [`Plan`], [`PlannedRun`] |
//! | `i/N` slices of a plan | [`Shard`] |
//! | running a slice: skip finished runs, resume interrupted ones, N at a time | [`execute`], [`Launcher`] |
//! | a finished run's final numbers | [`RunSummary`] |
//! | `results.csv`, `results.md`, `timings.csv`, `curves.csv` from one or several output folders | [`Results`] |
//! | a finished run's evaluations, with the budget spent up to each | [`RunCurves`] |
//! | tables and figures from them (`[[reports]]`: Table 1, a β sweep, reward against time, image grids) | [`report::Report`] |
//!
//! A grid point is a *run configuration* (the `rocm` crate's `RunConfig`: `model`, `[reward]`,
//! `[prompts]`, `[train]` = [`crate::TrainConfig`]); this module treats it as a TOML table and
//! sets its keys by dotted path (`train.beta`), and leaves building and training it to a
//! [`Launcher`] (the `rocm experiment` command starts `rocm train` in a child process per run,
//! so runs share no state).
//!
//! ```
//! use rocm_trainer::experiment::{Grid, Shard};
//! let grid = Grid::from_toml_str(
//!     r#"
//!     output_dir = "target/experiments/demo"
//!     [base]
//!     model = "toy"
//!     [base.train]
//!     iterations = 40
//!     [[axes]]
//!     key = "train.beta"
//!     values = [0.0, 0.3]
//!     [[axes]]
//!     key = "train.seed"
//!     values = [0, 1]
//!     [quick]
//!     set = { "train.iterations" = 4 }
//!     axes = { seed = [0] }
//!     "#,
//!     "demo.toml",
//! )?;
//! let plan = grid.plan(false)?;
//! let ids: Vec<&str> = plan.runs.iter().map(|r| r.id.as_str()).collect();
//! assert_eq!(ids, ["beta-0.0_seed-0", "beta-0.0_seed-1", "beta-0.3_seed-0", "beta-0.3_seed-1"]);
//! let quick = grid.plan(true)?;
//! assert_eq!(quick.runs.len(), 2);
//! assert_eq!(quick.runs[0].config["train"]["iterations"].as_integer(), Some(4));
//! let first: Shard = "1/2".parse()?;
//! assert_eq!(first.select(&plan.runs).len(), 2); // runs 0 and 2
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod curves;
mod error;
mod execute;
mod grid;
pub mod report;
mod results;
mod shard;

pub use curves::{EvalPoint, RunCurves, TRAINED_REWARD};
pub use error::GridError;
pub use execute::{COMPLETED_FILE, Event, Launcher, Outcome, execute};
pub use grid::{Axis, AxisValue, Grid, Plan, PlannedRun, QuickSection, ResultsSection};
pub use results::{Results, RunSummary, SUMMARY_METRICS};
pub use shard::Shard;

/// `<output_dir>/plan.json`: the plan's run ids and labels, written by every invocation and read
/// back by [`Results::merge`].
pub const PLAN_FILE: &str = "plan.json";
/// `<output_dir>/runs/`: one folder per run, named by its id.
pub const RUNS_DIR: &str = "runs";
/// The results table: every run × every final metric.
pub const RESULTS_CSV: &str = "results.csv";
/// The results as Markdown tables, mean ± std over the averaged axis.
pub const RESULTS_MD: &str = "results.md";
/// Every evaluation of every finished run: the trained reward and each held-out reward by step,
/// with the training seconds and reward queries spent up to it.
pub const CURVES_CSV: &str = "curves.csv";
/// Each run's wall-clock training seconds (kept out of `results.csv`, which is a function of the
/// configurations alone).
pub const TIMINGS_CSV: &str = "timings.csv";
