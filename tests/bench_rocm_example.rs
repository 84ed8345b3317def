//! The `bench_rocm` example end to end on the `tiny` workload: the JSON line has the fields that
//! `benches/compare.sh` and docs/performance.md read, the loss does not depend on per-step
//! checkpointing, on the second thread or on rocm-kernels' fused kernels (same weights, same
//! noise), and bad input exits with code 2 and one line on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(common::example_binary("bench_rocm"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn tiny_prints_the_fields_and_the_same_loss_in_every_mode() {
    let base = [
        "--config", "tiny", "--iters", "2", "--warmup", "0", "--json",
    ];
    let plain = json(
        &[
            &base[..],
            &["--checkpointing", "off", "--concurrent", "off"],
        ]
        .concat(),
    );
    for field in [
        "config",
        "steps",
        "iters",
        "s_per_iter",
        "peak_rss_mib",
        "backend",
    ] {
        assert!(plain.get(field).is_some(), "missing `{field}` in {plain}");
    }
    assert_eq!(plain["config"], "tiny");
    assert_eq!(plain["steps"], 8);
    assert_eq!(plain["iters"], 2);
    assert_eq!(plain["backend"], "flex");
    assert!(plain["s_per_iter"].as_f64().unwrap() > 0.0);
    assert!(plain["peak_rss_mib"].as_f64().unwrap() > 0.0);
    // The LoRA factors of to_q/to_k/to_v/to_out.0 in 4 transformers, r = 16.
    assert_eq!(plain["lora_layers"], 32);
    assert_eq!(plain["trainable_params"], 39_936);
    let loss = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(loss(&plain, "loss_first").is_finite());
    for (checkpointing, concurrent) in [("on", "off"), ("off", "on"), ("on", "on")] {
        let other = json(
            &[
                &base[..],
                &["--checkpointing", checkpointing, "--concurrent", concurrent],
            ]
            .concat(),
        );
        assert_eq!(other["checkpointing"], checkpointing);
        assert_eq!(other["concurrent"], concurrent);
        for k in ["loss_first", "loss_last"] {
            let (a, b) = (loss(&plain, k), loss(&other, k));
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "{k}: {a} plain vs {b} (checkpointing {checkpointing}, concurrent {concurrent})"
            );
        }
    }
}

/// rocm-kernels' fused Flex kernels (the default) and Burn's composed ops train the same model:
/// the same losses before and after an AdamW step, on the same weights and noise.
#[test]
fn fused_kernels_and_composed_ops_give_the_same_losses() {
    let base = [
        "--config", "tiny", "--iters", "2", "--warmup", "0", "--json",
    ];
    let fused = json(&base);
    let composed = json(&[&base[..], &["--kernels", "composed"]].concat());
    assert_eq!(fused["kernels"], "fused");
    assert_eq!(composed["kernels"], "composed");
    for k in ["loss_first", "loss_last"] {
        let (a, b) = (fused[k].as_f64().unwrap(), composed[k].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "{k}: {a} fused vs {b} composed"
        );
    }
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for args in [
        &["--iters", "1"][..],
        &["--config", "medium"],
        &["--config", "tiny", "--iters", "0"],
        &["--config", "tiny", "--checkpointing", "maybe"],
        &["--config", "tiny", "--kernels", "cubecl"],
        &["--config", "tiny", "--bogus"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
