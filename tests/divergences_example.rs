//! The `divergences` example end to end: it reproduces an independent high-precision reference
//! (mpmath, `tests/fixtures/scripts/divergence_reference.py`) to 1e-6 relative, and rejects bad
//! input with one line on stderr, exit code 2 and nothing on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn run(input: &Path) -> Output {
    Command::new(common::example_binary("divergences"))
        .arg("--input")
        .arg(input)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn matches_the_high_precision_reference() {
    let reference_path = fixture("crates/rocm-divergence/tests/fixtures/reference_pairs.json");
    let reference: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&reference_path).unwrap()).unwrap();
    // The example's input: only the four parameters of each pair.
    let input: Vec<Value> = reference
        .iter()
        .map(|r| {
            let keep = ["mu1", "s1", "mu2", "s2"].map(|k| (k.to_string(), r[k].clone()));
            Value::Object(keep.into_iter().collect())
        })
        .collect();
    let input_path = std::env::temp_dir().join(format!("rocm-pairs-{}.json", std::process::id()));
    std::fs::write(&input_path, serde_json::to_string(&input).unwrap()).unwrap();
    let out = run(&input_path);
    std::fs::remove_file(&input_path).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got.len(), reference.len());
    let mut worst = 0.0f64;
    for (g, r) in got.iter().zip(&reference) {
        for key in ["mu1", "s1", "mu2", "s2"] {
            assert_eq!(g[key], r[key], "input field {key} must be kept");
        }
        for key in [
            "kl",
            "reverse_kl",
            "js",
            "hellinger_sq",
            "fisher",
            "chi2",
            "tv",
        ] {
            match (g[key].as_f64(), r[key].as_f64()) {
                (Some(a), Some(b)) => {
                    let rel = (a - b).abs() / b.abs().max(1e-300);
                    worst = worst.max(rel);
                    assert!(rel < 1e-6, "{key} at {r}: {a} vs {b} (rel {rel:e})");
                }
                (None, None) => {} // infinite χ²: null on both sides
                (a, b) => panic!("{key} at {r}: {a:?} vs {b:?}"),
            }
        }
    }
    eprintln!("worst relative error against mpmath: {worst:e}");
}

#[test]
fn bad_input_is_one_line_on_stderr_and_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("rocm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("not-json", "{ this is not json"),
        ("missing", r#"[{"mu1": 0, "s1": 1, "mu2": 0}]"#),
        ("zero-std", r#"[{"mu1": 0, "s1": 0, "mu2": 0, "s2": 1}]"#),
        (
            "negative-std",
            r#"[{"mu1": 0, "s1": 1, "mu2": 0, "s2": -2}]"#,
        ),
        ("not-array", r#"{"mu1": 0, "s1": 1, "mu2": 0, "s2": 1}"#),
    ];
    for (name, text) in cases {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, text).unwrap();
        let out = run(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: stdout must be empty");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
    }
    let out = run(&dir.join("does-not-exist.json"));
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
