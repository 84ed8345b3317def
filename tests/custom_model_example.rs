//! The `custom_model` example: a downstream user's own model, reward and divergence, trained
//! through the builder, raise the reward; the run reports the custom divergence, and the frozen
//! base (adapters off) still scores what the untrained model scored.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::process::Command;

#[test]
fn a_downstream_model_reward_and_divergence_train_with_the_builder() {
    let out = Command::new(common::example_binary("custom_model"))
        .args(["--iterations", "40"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(lines["divergence"], "half_squared", "{stdout}");
    let value = |k: &str| lines[k].parse::<f64>().unwrap();
    let (before, after, base) = (
        value("reward_before"),
        value("reward_after"),
        value("reward_base"),
    );
    assert!(after > before + 0.1, "{stdout}");
    // Gaussian init: B = 0, so the untrained policy is the base; the base never trains.
    assert!((base - before).abs() < 1e-6, "{stdout}");
}
