//! Helpers of the shapes world's stage tests.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses some of them

use std::path::PathBuf;

use rocm_shapes::train::{StageOptions, StepReport};

/// A fresh scratch folder under the system's temporary folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-shapes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Stage options with seed 3 and no checkpoints.
pub fn options(steps: usize, batch: usize, lr: f64) -> StageOptions {
    StageOptions {
        steps,
        batch,
        lr,
        seed: 3,
        checkpoint_every: 0,
    }
}

/// Runs a stage, returning its per-step losses.
pub fn losses(run: impl FnOnce(&mut dyn FnMut(StepReport))) -> Vec<f32> {
    let mut out = Vec::new();
    run(&mut |r| out.push(r.loss));
    out
}
