//! The image quickstart end to end, cut to one short run: ROCM on the shipped shapes-world LCM
//! against its preference model writes the table, the curves, both plots and the before/after
//! grid, and its numbers are finite with h in `[0, 2]`; bad input exits with code 2 and one line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::process::Command;

#[test]
fn one_short_run_writes_the_table_plots_and_grid() {
    let out = std::env::temp_dir().join(format!("rocm-quickstart-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let run = Command::new(common::example_binary("quickstart"))
        .args(["--out", out.to_str().unwrap()])
        .args(["--betas", "0", "--iterations", "2", "--eval-every", "1"])
        .args(["--batch", "2", "--eval-prompts", "2", "--eval-seeds", "1"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for file in [
        "results.md",
        "results.csv",
        "curves.csv",
        "reward_vs_iteration.png",
        "h_vs_iteration.png",
        "grid_kl-beta0.png",
    ] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let fields: Vec<f64> = lines[1]
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(fields.iter().all(|v| v.is_finite()), "{csv}");
    // h before and after (columns h_before, h_after).
    for h in [fields[3], fields[4]] {
        assert!((0.0..=2.0).contains(&h), "h {h}: {csv}");
    }
    // Evaluations at iterations 0, 1 and 2.
    let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    assert_eq!(curves.lines().count(), 4, "{curves}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for args in [
        &["--betas", "0,x"][..],
        &["--betas", "-1"],
        &["--iterations", "0"],
        &["--model", "/nonexistent/shapes-lcm", "--iterations", "1"],
    ] {
        let out = Command::new(common::example_binary("quickstart"))
            .args(args)
            .args([
                "--out",
                std::env::temp_dir()
                    .join("rocm-quickstart-bad")
                    .to_str()
                    .unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}
