//! `rocm train` on a diffusers pipeline folder: two iterations of the paper's PickScore setup on
//! `rocm-models`' tiny random `pipeline-a` with PickScore on `rocm-rewards`' tiny random CLIP,
//! through the real binary. Checks the metrics, the plots and the LoRA checkpoint it writes, and
//! that a bad configuration exits with code 2 naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rocm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rocm"))
}

/// A scratch folder unique to this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-cli-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn toml_path(p: &Path) -> String {
    // TOML literal strings: no escapes, so Windows backslashes survive.
    format!("'{}'", p.display())
}

#[test]
fn train_on_a_pipeline_folder_writes_metrics_plots_and_lora() {
    let dir = scratch("train");
    let out = dir.join("run");
    let pipeline = root().join("crates/rocm-models/tests/fixtures/pipeline-a");
    let clip = root().join("crates/rocm-rewards/tests/fixtures/tiny-clip");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "pretrained_model = {}\nreward = \"pickscore\"\nnum_steps = 2\nbatch_size = 1\n\
             iterations = 2\ncheckpoint_every = 1\neval_every = 0\n\
             eval_prompts = [\"a photo of a cat wearing a wizard hat\"]\neval_seeds = [0]\n\
             output_dir = {}\n[lora]\nr = 4\nalpha = 8.0\n\
             target_modules = [\"to_q\", \"to_k\", \"to_v\", \"to_out.0\"]\n",
            toml_path(&pipeline),
            toml_path(&out)
        ),
    )
    .unwrap();
    let output = rocm()
        .args(["train", "--config"])
        .arg(&config)
        .arg("--reward-model")
        .arg(&clip)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("step     2/2"), "{stderr}");

    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{metrics}");
    assert!(
        lines
            .iter()
            .all(|m| m["reward_mean"].as_f64().unwrap().is_finite())
    );
    assert!(out.join("metrics.csv").is_file());
    for png in [
        "reward_vs_iteration.png",
        "divergence_vs_iteration.png",
        "reward_vs_seconds.png",
        "divergence_vs_seconds.png",
    ] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{png}");
    }
    let lora = out.join("checkpoints/step-000002/pytorch_lora_weights.safetensors");
    assert!(lora.is_file(), "{}", lora.display());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let dir = scratch("bad");
    let config = dir.join("config.toml");
    std::fs::write(&config, "pretrained_model = \"toy\"\nlearning_rat = 1e-3\n").unwrap();
    let output = rocm()
        .args(["train", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("learning_rat"), "{stderr}");
    let output = rocm()
        .args(["train", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
