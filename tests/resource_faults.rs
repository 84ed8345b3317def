//! Resource faults during `rocm train` and `rocm export` (docs/reliability.md): a full disk
//! (a file-size limit, `RLIMIT_FSIZE` through `prlimit`, with SIGXFSZ ignored so writes fail
//! with EFBIG as on a full disk) ends the run with exit code 2 and one line naming the path,
//! the published checkpoints intact and resumable; SIGTERM (as SIGINT) stops after the
//! iteration in progress with a final checkpoint, exit code 130, and `--resume` finishes the
//! run to the same bits as an uninterrupted one. Skipped, saying so, without `prlimit`.
//!
//! A read-only output folder (`chmod a-w`) during training and export: one error naming the
//! path, exit code 2, the published checkpoints (or the previous export) intact. Root ignores
//! permission bits, so as root (CI) `rocm` runs under `setpriv` without `CAP_DAC_OVERRIDE` and
//! `CAP_DAC_READ_SEARCH`: the bits then apply to it as to any user (skipped, saying so, without
//! `setpriv`). Every export failure also leaves the previous file byte for byte: exports are
//! written to a temporary sibling and renamed into place.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-faults-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn toy_config(dir: &Path, iterations: usize) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/toy.toml"))
        .unwrap()
        .replace("batch_size = 128", "batch_size = 16")
        .replace("iterations = 40", &format!("iterations = {iterations}"))
        .replace("checkpoint_every = 10", "checkpoint_every = 2")
        .replace("eval_every = 10", "eval_every = 0")
        .replace(
            "output_dir = \"target/runs/toy\"",
            &format!("output_dir = '{}'", dir.join("run").display()),
        );
    let path = dir.join("toy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn rocm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rocm"));
    cmd.env("RAYON_NUM_THREADS", "1");
    cmd
}

/// `rocm ARGS` with every file it writes limited to `bytes` (writes past it fail with EFBIG).
fn rocm_with_file_limit(bytes: u64, args: &[&std::ffi::OsStr]) -> Option<Output> {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return None;
    }
    // `trap '' XFSZ` is inherited through exec: the limit makes writes fail instead of killing.
    let output = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\"")
        .arg(bytes.to_string())
        .arg(env!("CARGO_BIN_EXE_rocm"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    Some(output)
}

/// Every published checkpoint is complete and `latest` names one; returns the newest step.
fn published_checkpoints_sound(checkpoints: &Path) -> Option<usize> {
    for entry in std::fs::read_dir(checkpoints).into_iter().flatten() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("step-")
        {
            continue;
        }
        rocm::trainer::checkpoint::read_state(&path).unwrap();
        for file in [
            "adapters.bpk",
            "optimizer.bpk",
            "pytorch_lora_weights.safetensors",
        ] {
            assert!(path.join(file).is_file(), "{} lacks {file}", path.display());
        }
    }
    let latest = rocm::trainer::checkpoint::latest_checkpoint(checkpoints).unwrap()?;
    Some(rocm::trainer::checkpoint::read_state(&latest).unwrap().step)
}

#[test]
fn full_disk_during_training_is_one_error_and_the_checkpoints_survive() {
    let dir = scratch("full-train");
    let config = toy_config(&dir, 60);
    let args = ["train".as_ref(), "--config".as_ref(), config.as_os_str()];
    let Some(output) = rocm_with_file_limit(20_000, &args) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.contains("File too large"), "{stderr}");
    assert!(
        last.contains(&dir.join("run").display().to_string()),
        "{stderr}"
    );
    let step = published_checkpoints_sound(&dir.join("run/checkpoints"));
    assert!(step.is_some_and(|s| s < 60), "{step:?}: {stderr}");
    // With room again, --resume finishes the run from the last published checkpoint.
    let resumed = rocm()
        .args(["train", "--resume", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("resumed from"), "{stderr}");
    assert_eq!(
        published_checkpoints_sound(&dir.join("run/checkpoints")),
        Some(60)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn full_disk_during_export_is_one_error_naming_the_file() {
    let dir = scratch("full-export");
    let out = dir.join("merged");
    let pipeline = root().join("crates/rocm-models/tests/fixtures/pipeline-a");
    let lora = root().join("tests/fixtures/lora/trained");
    let args = [
        "export".as_ref(),
        "--model".as_ref(),
        pipeline.as_os_str(),
        "--lora".as_ref(),
        lora.as_os_str(),
        "--format".as_ref(),
        "merged".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    // A previous export, which the failed one must leave as it was.
    let first = rocm().args(args).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let weights = out.join("diffusion_pytorch_model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    assert!(before.len() > 20_000);
    let Some(output) = rocm_with_file_limit(20_000, &args) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(last.contains(&out.display().to_string()), "{stderr}");
    assert!(last.contains("File too large"), "{stderr}");
    assert!(
        std::fs::read(&weights).unwrap() == before,
        "the failed export changed {}",
        weights.display()
    );
    assert_eq!(
        names(&out),
        ["config.json", "diffusion_pytorch_model.safetensors"]
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `rocm ARGS` as a process that permission bits apply to: as root, under `setpriv` without
/// the capabilities that override them; `None` (the test skips) when that is not possible.
fn rocm_bound_by_permissions(args: &[&std::ffi::OsStr]) -> Option<Output> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    let mut cmd = if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        if Command::new("setpriv").arg("--version").output().is_err() {
            eprintln!("skipped: running as root and setpriv (util-linux) is not installed");
            return None;
        }
        let mut cmd = Command::new("setpriv");
        cmd.args(["--bounding-set=-dac_override,-dac_read_search", "--"])
            .arg(env!("CARGO_BIN_EXE_rocm"));
        cmd
    } else {
        Command::new(env!("CARGO_BIN_EXE_rocm"))
    };
    Some(
        cmd.args(args)
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap(),
    )
}

/// Sets `path`'s permission bits (folders, non-recursively).
#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn read_only_output_folder_during_training_is_one_error_and_the_checkpoints_survive() {
    let dir = scratch("read-only-train");
    let run = dir.join("run");
    let checkpoints = run.join("checkpoints");
    // Six iterations with checkpoints at 2, 4 and 6, then the run goes on to twelve.
    let config = toy_config(&dir, 6);
    assert!(
        rocm()
            .args(["train", "--config"])
            .arg(&config)
            .output()
            .unwrap()
            .status
            .success()
    );
    let config = toy_config(&dir, 12);
    let resume = [
        "train".as_ref(),
        "--resume".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];

    // checkpoints/ read-only: iterations 7 and 8 train, the checkpoint of 8 cannot be created.
    chmod(&checkpoints, 0o555);
    let Some(output) = rocm_bound_by_permissions(&resume) else {
        chmod(&checkpoints, 0o755);
        return;
    };
    chmod(&checkpoints, 0o755);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(
        last.contains(&checkpoints.display().to_string()),
        "{stderr}"
    );
    assert!(last.contains("Permission denied"), "{stderr}");
    assert_eq!(
        published_checkpoints_sound(&checkpoints),
        Some(6),
        "{stderr}"
    );

    // The whole output folder read-only: refused before training, naming the file.
    let files = ["metrics.jsonl", "metrics.csv"].map(|f| run.join(f));
    files.iter().for_each(|f| chmod(f, 0o444));
    chmod(&run, 0o555);
    chmod(&checkpoints, 0o555);
    let output = rocm_bound_by_permissions(&resume).unwrap();
    chmod(&checkpoints, 0o755);
    chmod(&run, 0o755);
    files.iter().for_each(|f| chmod(f, 0o644));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.contains(&run.display().to_string()), "{stderr}");
    assert!(last.contains("Permission denied"), "{stderr}");
    assert_eq!(
        published_checkpoints_sound(&checkpoints),
        Some(6),
        "{stderr}"
    );

    // Writable again: --resume finishes the run.
    let resumed = rocm().args(resume).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert_eq!(
        published_checkpoints_sound(&checkpoints),
        Some(12),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn read_only_output_folder_during_export_is_one_error_and_the_previous_file_survives() {
    let dir = scratch("read-only-export");
    let out = dir.join("out");
    let file = out.join("lora.safetensors");
    let pipeline = root().join("crates/rocm-models/tests/fixtures/pipeline-a");
    let lora = root().join("tests/fixtures/lora/trained");
    let args = [
        "export".as_ref(),
        "--model".as_ref(),
        pipeline.as_os_str(),
        "--lora".as_ref(),
        lora.as_os_str(),
        "--format".as_ref(),
        "kohya".as_ref(),
        "--out".as_ref(),
        file.as_os_str(),
    ];
    let first = rocm().args(args).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = std::fs::read(&file).unwrap();
    chmod(&file, 0o444);
    chmod(&out, 0o555);
    let output = rocm_bound_by_permissions(&args);
    chmod(&out, 0o755);
    chmod(&file, 0o644);
    let Some(output) = output else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(last.contains(&file.display().to_string()), "{stderr}");
    assert!(last.contains("Permission denied"), "{stderr}");
    assert!(std::fs::read(&file).unwrap() == before);
    assert_eq!(names(&out), ["lora.safetensors"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// The adapters of a finished run, by name, bit for bit (tests/crash_resume.rs also compares
/// the optimizer state).
fn final_files(run: &Path, step: usize) -> Vec<(String, Vec<u8>)> {
    use burn::store::{ModuleStore, SafetensorsStore, bridge::to_data};
    let path = run.join(format!(
        "checkpoints/step-{step:06}/pytorch_lora_weights.safetensors"
    ));
    let mut store = SafetensorsStore::from_file(path);
    let all = store.get_all_tensors().unwrap();
    all.iter()
        .map(|(k, t)| (k.clone(), to_data(t).unwrap().as_bytes().to_vec()))
        .collect()
}

#[test]
fn sigterm_checkpoints_exits_130_and_resume_finishes_the_same_run() {
    let iterations = 30;
    let reference = scratch("sigterm-reference");
    let config = toy_config(&reference, iterations);
    assert!(
        rocm()
            .args(["train", "--config"])
            .arg(&config)
            .output()
            .unwrap()
            .status
            .success()
    );
    let want = final_files(&reference.join("run"), iterations);

    let dir = scratch("sigterm");
    let config = toy_config(&dir, iterations);
    let metrics = dir.join("run/metrics.jsonl");
    let child = rocm()
        .args(["train", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once a few iterations are done (an odd count: not at a regular checkpoint).
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(0) {
        eprintln!("the run finished before the signal: nothing to check");
        return;
    }
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let step = published_checkpoints_sound(&dir.join("run/checkpoints")).unwrap();
    let done = std::fs::read_to_string(&metrics).unwrap().lines().count();
    assert_eq!(
        step, done,
        "the final checkpoint is of the last finished iteration"
    );
    let resumed = rocm()
        .args(["train", "--resume", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        final_files(&dir.join("run"), iterations) == want,
        "resumed run differs"
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&reference).ok();
}
