//! The `rocm` binary on diffusers pipeline folders: `rocm-models`' tiny random `pipeline-a`
//! (16×16 images) with PickScore on `rocm-rewards`' tiny random CLIP.
//!
//! - `train`: two iterations of the paper's PickScore setup; checks the metrics, the plots, the
//!   LoRA checkpoint and the evaluation grids it writes, and that a bad configuration exits with
//!   code 2 naming the field;
//! - `sample`: PNGs of the pipeline's size, changed by a trained checkpoint's `--lora`;
//! - `eval`: one JSON line with base and LoRA rewards, the LoRA ones equal to training's last
//!   evaluation;
//! - bad input (missing model, adapter file, evaluation prompts): exit code 2, one line naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use rocm::trainer::images::caption_height;

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
            "model = {}\n[reward]\nkind = \"pickscore\"\n[train]\nnum_steps = 2\nbatch_size = 1\n\
             iterations = 2\ncheckpoint_every = 1\neval_every = 0\n\
             eval_prompts = [\"a photo of a cat wearing a wizard hat\"]\neval_seeds = [0]\n\
             output_dir = {}\n[train.lora]\nr = 4\nalpha = 8.0\n\
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
    std::fs::write(&config, "model = \"toy\"\n[train]\nlearning_rat = 1e-3\n").unwrap();
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

const CAT: &str = "a photo of a cat wearing a wizard hat";

fn pipeline_a() -> PathBuf {
    root().join("crates/rocm-models/tests/fixtures/pipeline-a")
}

fn tiny_clip() -> PathBuf {
    root().join("crates/rocm-rewards/tests/fixtures/tiny-clip")
}

/// A PNG's (width, height, RGB bytes).
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Runs `rocm ARGS…`, asserts success and returns stdout.
fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let output = rocm().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rocm {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `rocm ARGS…`, asserts exit code 2 with one line on stderr and returns it.
fn run_fails(args: &[&std::ffi::OsStr]) -> String {
    let output = rocm().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "rocm {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// `rocm sample` of two prompts on pipeline-a into `out`, with optional adapters; returns the
/// paths it printed.
fn sample(out: &Path, lora: Option<&Path>) -> Vec<PathBuf> {
    let pipeline = pipeline_a();
    let mut args = vec![
        os("sample"),
        os("--model"),
        pipeline.as_os_str(),
        os("--prompt"),
        os(CAT),
        os("--prompt"),
        os("a red car"),
        os("--steps"),
        os("2"),
        os("--seed"),
        os("3"),
        os("--out"),
        out.as_os_str(),
    ];
    if let Some(lora) = lora {
        args.extend([os("--lora"), lora.as_os_str()]);
    }
    run_ok(&args).lines().map(PathBuf::from).collect()
}

/// A 2-iteration run with evaluation every iteration on 2 prompts × 3 seeds, at a learning
/// rate large enough that the adapters visibly change 8-bit images.
fn eval_config(dir: &Path, out: &Path) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "model = {}\n[reward]\nkind = \"pickscore\"\n[train]\nnum_steps = 2\nbatch_size = 1\n\
             iterations = 2\ncheckpoint_every = 2\neval_every = 1\nlearning_rate = 0.01\n\
             eval_prompts = [\"{CAT}\", \"a red car\"]\neval_seeds = [0, 1, 2]\n\
             output_dir = {}\n[train.lora]\nr = 4\nalpha = 8.0\n\
             target_modules = [\"to_q\", \"to_k\", \"to_v\", \"to_out.0\"]\n",
            toml_path(&pipeline_a()),
            toml_path(out)
        ),
    )
    .unwrap();
    config
}

fn eval_json(config: &Path, extra: &[&std::ffi::OsStr]) -> serde_json::Value {
    let clip = tiny_clip();
    let mut args = vec![
        os("eval"),
        os("--config"),
        config.as_os_str(),
        os("--reward-model"),
        clip.as_os_str(),
    ];
    args.extend(extra);
    let stdout = run_ok(&args);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn sample_and_eval_see_what_training_changed() {
    let dir = scratch("sample-eval");
    let out = dir.join("run");
    let config = eval_config(&dir, &out);

    // Before training: no checkpoint, base only.
    let before = eval_json(&config, &[]);
    assert_eq!(before["reward"], "pickscore");
    assert_eq!(before["n"], 6);
    assert_eq!(floats(&before["base"]).len(), 6);
    assert!(before.get("lora_mean").is_none(), "{before}");

    let clip = tiny_clip();
    run_ok(&[
        os("train"),
        os("--config"),
        config.as_os_str(),
        os("--reward-model"),
        clip.as_os_str(),
    ]);
    // An evaluation grid per evaluation: rows = 2 prompts, columns = 3 seeds of 16×16.
    for step in [1, 2] {
        let grid = out.join(format!("samples/step-{step:06}.png"));
        let (w, h, _) = read_png(&grid);
        // under the images, a caption strip: the step and seeds, then one line per prompt
        assert_eq!(
            (w, h),
            (48, 32 + caption_height(3) as u32),
            "{}",
            grid.display()
        );
    }
    let checkpoint = out.join("checkpoints/step-000002");

    // After training: base unchanged, the newest checkpoint found, the LoRA rewards those of
    // training's last evaluation (same noise and settings).
    let after = eval_json(&config, &[]);
    assert_eq!(after["base"], before["base"]);
    assert_eq!(after["lora_path"], checkpoint.display().to_string());
    let (base, lora) = (floats(&after["base"]), floats(&after["lora"]));
    assert_eq!(lora.len(), 6);
    assert_ne!(base, lora, "training did not change the evaluation rewards");
    let mean = after["lora_mean"].as_f64().unwrap();
    assert!((mean - lora.iter().sum::<f64>() / 6.0).abs() < 1e-9);
    assert_ne!(after["base_mean"].as_f64().unwrap(), mean);
    let eval_log = std::fs::read_to_string(out.join("eval.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(eval_log.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 2);
    let logged = floats(&last["rewards"]);
    for (a, b) in lora.iter().zip(&logged) {
        assert!((a - b).abs() < 1e-5, "eval {lora:?} vs training {logged:?}");
    }
    // `--lora FILE` is the same as the checkpoint folder.
    let file = checkpoint.join("pytorch_lora_weights.safetensors");
    let explicit = eval_json(&config, &[os("--lora"), file.as_os_str()]);
    assert_eq!(explicit["lora"], after["lora"]);

    // Sampling: 16×16 images and a 2×1 grid; the adapters change them.
    let plain = sample(&dir.join("plain"), None);
    let names: Vec<_> = plain.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(names, ["image-0.png", "image-1.png", "grid.png"]);
    let sizes: Vec<_> = plain
        .iter()
        .map(|p| {
            let (w, h, _) = read_png(p);
            (w, h)
        })
        .collect();
    assert_eq!(
        sizes,
        [(16, 16), (16, 16), (32, 16 + caption_height(3) as u32)]
    );
    let tuned = sample(&dir.join("tuned"), Some(&checkpoint));
    let pixels = |p: &PathBuf| read_png(p).2;
    for (a, b) in plain.iter().zip(&tuned) {
        assert!(
            pixels(a) != pixels(b),
            "--lora left {} unchanged",
            b.display()
        );
    }
    // Deterministic: the same command gives the same image.
    let again = sample(&dir.join("again"), None);
    assert!(
        pixels(&plain[0]) == pixels(&again[0]),
        "sampling is not reproducible"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_sample_and_eval_input_exits_2_naming_it() {
    let dir = scratch("bad-input");
    let pipeline = pipeline_a();
    let missing_model = dir.join("no-such-pipeline");
    let e = run_fails(&[
        os("sample"),
        os("--model"),
        missing_model.as_os_str(),
        os("--prompt"),
        os("a cat"),
    ]);
    assert!(e.contains("no-such-pipeline"), "{e}");
    let e = run_fails(&[
        os("sample"),
        os("--model"),
        os("nobody/no-such-model"),
        os("--prompt"),
        os("a cat"),
    ]);
    assert!(e.contains("nobody/no-such-model"), "{e}");
    let missing_lora = dir.join("missing.safetensors");
    let e = run_fails(&[
        os("sample"),
        os("--model"),
        pipeline.as_os_str(),
        os("--prompt"),
        os("a cat"),
        os("--lora"),
        missing_lora.as_os_str(),
    ]);
    assert!(e.contains("missing.safetensors"), "{e}");
    let e = run_fails(&[
        os("sample"),
        os("--model"),
        pipeline.as_os_str(),
        os("--prompt"),
        os("a cat"),
        os("--lora"),
        dir.as_os_str(),
    ]);
    assert!(e.contains("pytorch_lora_weights.safetensors"), "{e}");

    let config = dir.join("no-eval.toml");
    std::fs::write(
        &config,
        format!(
            "model = {}\n[reward]\nkind = \"pickscore\"\n[train]\noutput_dir = {}\n",
            toml_path(&pipeline),
            toml_path(&dir.join("run"))
        ),
    )
    .unwrap();
    let e = run_fails(&[os("eval"), os("--config"), config.as_os_str()]);
    assert!(
        e.contains("no-eval.toml") && e.contains("eval_prompts"),
        "{e}"
    );
    let config = eval_config(&dir, &dir.join("run"));
    let e = run_fails(&[
        os("eval"),
        os("--config"),
        config.as_os_str(),
        os("--lora"),
        missing_lora.as_os_str(),
    ]);
    assert!(e.contains("missing.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_on_the_toy_uses_one_empty_prompt() {
    let dir = scratch("toy-eval");
    let config = dir.join("toy.toml");
    std::fs::write(
        &config,
        format!(
            "model = \"toy\"\n[train]\nnum_steps = 4\nguidance = \"none\"\nbatch_size = 16\n\
             learning_rate = 1e-2\niterations = 2\ncheckpoint_every = 2\neval_every = 0\n\
             eval_seeds = [0, 1, 2]\noutput_dir = {}\n[train.lora]\nr = 2\nalpha = 4.0\n\
             target_modules = [\"linear_in\", \"linear_out\"]\n",
            toml_path(&dir.join("run"))
        ),
    )
    .unwrap();
    let eval = || -> serde_json::Value {
        let stdout = run_ok(&[os("eval"), os("--config"), config.as_os_str()]);
        serde_json::from_str(stdout.trim()).unwrap()
    };
    let before = eval();
    assert_eq!(
        (before["reward"].as_str(), before["n"].as_u64()),
        (Some("x"), Some(3))
    );
    assert!(before.get("lora").is_none(), "{before}");
    run_ok(&[os("train"), os("--config"), config.as_os_str()]);
    let after = eval();
    assert_eq!(after["base"], before["base"]);
    assert_ne!(after["lora"], after["base"], "{after}");
    std::fs::remove_dir_all(&dir).ok();
}
