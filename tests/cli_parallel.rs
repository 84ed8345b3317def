//! `rocm train --devices flex,flex` on the tiny random pipeline (`rocm-models`' `pipeline-a`,
//! PickScore on `rocm-rewards`' tiny CLIP): two replicas of batch 1 train as one device of batch
//! 2 (metrics and the sharded evaluation within floating-point tolerance), and rank 0 records
//! the device count and effective batch in its checkpoints (docs/scaling.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder unique to this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-cli-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Trains the tiny pipeline for 2 iterations with `batch_size` and the device arguments `args`;
/// returns the run's output folder.
fn train(dir: &Path, name: &str, batch_size: usize, args: &[&str]) -> PathBuf {
    let output = run(dir, name, batch_size, "", args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    dir.join(name)
}

/// `rocm train` of the tiny pipeline with `extra` lines in `[train]`.
fn run(
    dir: &Path,
    name: &str,
    batch_size: usize,
    extra: &str,
    args: &[&str],
) -> std::process::Output {
    let out = dir.join(name);
    let config = dir.join(format!("{name}.toml"));
    let pipeline = root().join("crates/rocm-models/tests/fixtures/pipeline-a");
    std::fs::write(
        &config,
        format!(
            "model = '{}'\n[reward]\nkind = \"pickscore\"\n[train]\nnum_steps = 2\n\
             batch_size = {batch_size}\niterations = 2\ncheckpoint_every = 2\neval_every = 2\n\
             learning_rate = 1e-3\nseed = 3\n{extra}\n\
             eval_prompts = [\"a photo of a cat\", \"a red bicycle\"]\neval_seeds = [0, 1]\n\
             output_dir = '{}'\n[train.lora]\nr = 4\nalpha = 8.0\n\
             target_modules = [\"to_q\", \"to_k\", \"to_v\", \"to_out.0\"]\n",
            pipeline.display(),
            out.display()
        ),
    )
    .unwrap();
    let clip = root().join("crates/rocm-rewards/tests/fixtures/tiny-clip");
    Command::new(env!("CARGO_BIN_EXE_rocm"))
        .args(["train", "--config"])
        .arg(&config)
        .arg("--reward-model")
        .arg(&clip)
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1e-3)
}

#[test]
fn two_flex_replicas_train_as_one_device_of_twice_the_batch() {
    let dir = scratch("parallel");
    let one = train(&dir, "one", 2, &["--device", "flex"]);
    let two = train(&dir, "two", 1, &["--devices", "flex,flex"]);
    let (m1, m2) = (
        json_lines(&one.join("metrics.jsonl")),
        json_lines(&two.join("metrics.jsonl")),
    );
    assert_eq!(m1.len(), 2);
    assert_eq!(m2.len(), 2);
    for (a, b) in m1.iter().zip(&m2) {
        for key in ["reward_mean", "loss", "grad_norm", "divergence_mean"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(close(x, y), "step {}: {key} {x} vs {y}", a["step"]);
        }
        assert_eq!(a["images_sampled"], b["images_sampled"]);
    }
    // The evaluation of 2 prompts × 2 seeds, sharded over the two replicas and gathered.
    let (e1, e2) = (
        json_lines(&one.join("eval.jsonl")),
        json_lines(&two.join("eval.jsonl")),
    );
    let rewards = |e: &[serde_json::Value]| -> Vec<f64> {
        e[0]["rewards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect()
    };
    let (r1, r2) = (rewards(&e1), rewards(&e2));
    assert_eq!(r1.len(), 4);
    assert!(
        r1.iter().zip(&r2).all(|(a, b)| close(*a, *b)),
        "{r1:?} vs {r2:?}"
    );
    assert!(two.join("samples/step-000002.png").is_file());
    // Rank 0's checkpoint records the devices and the effective batch (1 × 1 × 2).
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(two.join("checkpoints/step-000002/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["devices"], 2);
    assert_eq!(state["effective_batch"], 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn nccl_gradient_sync_is_refused_on_non_cuda_devices() {
    let dir = scratch("parallel-nccl");
    let output = run(
        &dir,
        "nccl",
        1,
        "gradient_sync = \"nccl\"",
        &["--devices", "flex,flex"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gradient_sync") && stderr.contains("`flex` is flex"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
