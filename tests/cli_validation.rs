//! Numeric command-line and configuration inputs are checked (finite, in range) before anything
//! runs: `rocm sample --guidance NaN` used to be accepted and write images (docs/reliability.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("rocm-cli-validation-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `rocm sample` on pipeline-a with `extra` arguments; returns (exit code, stderr, PNGs).
fn sample(name: &str, extra: &[&str]) -> (Option<i32>, String, usize) {
    let out = scratch(name);
    let output = Command::new(env!("CARGO_BIN_EXE_rocm"))
        .arg("sample")
        .arg("--model")
        .arg(root().join("crates/rocm-models/tests/fixtures/pipeline-a"))
        .args(["--prompt", "a cat", "--out"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let pngs = std::fs::read_dir(&out)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
            })
            .count()
        })
        .unwrap_or(0);
    std::fs::remove_dir_all(&out).ok();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        pngs,
    )
}

#[test]
fn sample_refuses_non_finite_guidance_and_bad_steps() {
    for (name, args, names) in [
        ("nan", ["--guidance", "NaN"], "guidance"),
        ("inf", ["--guidance", "inf"], "guidance"),
        ("neg-inf", ["--guidance=-inf", "--seed=0"], "guidance"),
        ("zero-steps", ["--steps", "0"], "steps"),
        ("huge-steps", ["--steps", "1000000000000"], "steps"),
    ] {
        let (code, stderr, pngs) = sample(name, &args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
        assert_eq!(pngs, 0, "{args:?} wrote images");
    }
    let (code, stderr, pngs) = sample("ok", &["--steps", "1", "--guidance", "2.5"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(pngs >= 1);
}

/// Copies the folder `from` to `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The reported bug, through the binary: a pipeline whose UNet declares an absurd
/// `sample_size` aborted `rocm sample` with a capacity-overflow panic.
#[test]
fn sample_refuses_an_absurd_unet_sample_size_naming_the_file_and_field() {
    let dir = scratch("sample-size");
    let pipeline = dir.join("pipeline");
    copy_dir(
        &root().join("crates/rocm-models/tests/fixtures/pipeline-a"),
        &pipeline,
    );
    let config = pipeline.join("unet/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for size in [
        serde_json::Value::from(1u64 << 40),
        serde_json::Value::from(u64::MAX),
    ] {
        json["sample_size"] = size.clone();
        std::fs::write(&config, json.to_string()).unwrap();
        let out = dir.join("out");
        let output = Command::new(env!("CARGO_BIN_EXE_rocm"))
            .arg("sample")
            .arg("--model")
            .arg(&pipeline)
            .args(["--prompt", "a cat", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "sample_size {size}: {stderr}"
        );
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.contains("unet/config.json") && last.contains("sample_size"),
            "sample_size {size}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_config_refuses_out_of_range_numbers_naming_the_key() {
    let dir = scratch("train");
    let toy = std::fs::read_to_string(root().join("configs/toy.toml")).unwrap();
    for (from, to, key) in [
        (
            "batch_size = 128",
            "batch_size = 1000000000000",
            "batch_size",
        ),
        ("num_steps = 8", "num_steps = 100000000", "num_steps"),
        (
            "learning_rate = 1e-3",
            "learning_rate = nan",
            "learning_rate",
        ),
        ("beta = 0.3", "beta = inf", "beta"),
        ("r = 4", "r = 100000000", "lora.r"),
        (
            "max_grad_norm = 1.0",
            "max_grad_norm = -1.0",
            "max_grad_norm",
        ),
        ("seed = 7", "seed = 7\nadam_beta2 = 1.5", "adam_beta2"),
        ("seed = 7", "seed = 7\nweight_decay = nan", "weight_decay"),
    ] {
        assert!(toy.contains(from), "{from}");
        let config = dir.join("config.toml");
        std::fs::write(&config, toy.replacen(from, to, 1)).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_rocm"))
            .args(["train", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{to}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains("config.toml"),
            "{to}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
