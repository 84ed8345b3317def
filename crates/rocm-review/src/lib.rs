//! Human-preference studies of two models: their images side by side in a local web page, one
//! pair at a time, votes kept in SQLite, win rates with Wilson intervals.
//!
//! A study compares arm A with arm B (two LoRA adapters on one pipeline, or one of them the base
//! model) on the same prompts × seeds. Each (prompt, seed) is a *pair*: one image of each arm,
//! generated once and kept in the database under the content hash of what produced it
//! ([`StudySpec::image_key`]). Raters, named in a field of the page, vote on every pair for the
//! three criteria of the paper's user study ([`Criterion`]): left, right or tie, by keyboard
//! (`1`, `2`, `0`) or by clicking. Which arm is on the left is drawn per rater and pair from a
//! hash ([`left_arm`]) and recorded with the vote.
//!
//! - [`store`]: the SQLite database (WAL, versioned schema, one transaction per vote).
//! - [`http`]: the server (axum on a current-thread tokio runtime), the page's JSON API.
//! - [`stats`]: per-criterion tallies and the Wilson score interval.
//! - [`report`]: the results table for a terminal and the CSV of raw votes.
//!
//! Every vote is committed before the server answers it, so an acknowledged vote survives
//! the server being killed at any instant; a request that is malformed, too large, for a
//! pair that does not exist or was not served to that rater is answered with a 4xx and
//! changes nothing.
//!
//! ```
//! use rocm_review::{Arm, Store, StudySpec};
//!
//! let spec = StudySpec {
//!     a: Arm::new("base", "base"),
//!     b: Arm::new("lora step-000100", "sha256:…"),
//!     settings: "pipeline-a, 4 steps, guidance 8".into(),
//!     prompts: vec!["a red circle".into()],
//!     seeds: vec![0, 1],
//! };
//! let mut store = Store::open_in_memory()?;
//! store.ensure_study(&spec)?;
//! assert_eq!(store.pairs()?.len(), 2);
//! assert_eq!(store.missing_images()?.len(), 4); // both arms, both seeds
//! # Ok::<(), rocm_review::Error>(())
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
pub mod http;
mod page;
pub mod report;
pub mod stats;
pub mod store;
mod study;
mod vote;

pub use error::Error;
pub use http::Server;
pub use store::Store;
pub use study::{Arm, ImageKey, Pair, StudySpec, left_arm, rater_order, sha256_hex};
pub use vote::{Ballot, Choice, Criterion, Vote, Winner};
