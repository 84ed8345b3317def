//! Checkpoints are durable, not only atomic (docs/reliability.md): `rocm train` is traced with
//! `strace -f`, and before the rename that publishes `step-000001` every file in
//! `.step-000001.tmp` and the directory itself were fsynced, the `checkpoints` directory was
//! fsynced after it and before `latest` was replaced, and `latest` was fsynced before its rename and its directory after;
//! `rocm export`'s files likewise (temporary sibling fsynced, renamed, folder fsynced).
//! (A kill -9 cannot show a missing fsync, a power loss can; the trace shows it.)
//! Skipped, saying so, where `strace` is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A traced event: a path fsynced, or renamed.
#[derive(Debug, PartialEq)]
enum Event {
    Synced(String),
    Renamed { from: String, to: String },
}

/// The quoted strings of a syscall line, in order.
fn quoted(line: &str) -> Vec<String> {
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// fsyncs (resolved to paths through the preceding `openat`s) and renames, in trace order.
fn events(trace: &str) -> Vec<Event> {
    let mut fds: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        // `PID syscall(args) = ret`
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest)
            .trim_start();
        let ret = line
            .rsplit_once("= ")
            .map(|(_, r)| r.split(' ').next().unwrap_or(""));
        let ok = ret.is_some_and(|r| !r.starts_with('-'));
        if !ok {
            continue;
        }
        if call.starts_with("openat(") {
            if let (Some(path), Some(fd)) = (quoted(call).into_iter().next(), ret) {
                fds.insert(fd.to_string(), path);
            }
        } else if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            let fd = call.split(['(', ')']).nth(1).unwrap_or("");
            if let Some(path) = fds.get(fd) {
                out.push(Event::Synced(path.clone()));
            }
        } else if call.starts_with("rename") {
            let q = quoted(call);
            if q.len() == 2 {
                out.push(Event::Renamed {
                    from: q[0].clone(),
                    to: q[1].clone(),
                });
            }
        }
    }
    out
}

fn position(events: &[Event], pred: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

#[test]
fn checkpoint_files_and_directories_are_fsynced_around_the_publishing_rename() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rocm-durability-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("run");
    let config = dir.join("toy.toml");
    let text = std::fs::read_to_string(root().join("configs/toy.toml"))
        .unwrap()
        .replace("batch_size = 128", "batch_size = 8")
        .replace("iterations = 40", "iterations = 1")
        .replace("eval_every = 10", "eval_every = 0")
        .replace(
            "output_dir = \"target/runs/toy\"",
            &format!("output_dir = '{}'", out.display()),
        );
    std::fs::write(&config, text).unwrap();
    let log = dir.join("strace.log");
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_rocm"))
        .args(["train", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let events = events(&std::fs::read_to_string(&log).unwrap());

    let checkpoints = out.join("checkpoints");
    let c = |p: &Path| p.display().to_string();
    let tmp = checkpoints.join(".step-000001.tmp");
    let publish = position(&events, |e| {
        matches!(e, Event::Renamed { from, to } if *from == c(&tmp) && *to == c(&checkpoints.join("step-000001")))
    })
    .expect("no rename publishing step-000001");
    let synced_before =
        |path: &Path| position(&events[..publish], |e| *e == Event::Synced(c(path))).is_some();
    for file in [
        "adapters.bpk",
        "optimizer.bpk",
        "pytorch_lora_weights.safetensors",
        "state.json",
    ] {
        assert!(
            synced_before(&tmp.join(file)),
            "{file} not fsynced before the rename"
        );
    }
    assert!(
        synced_before(&tmp),
        "the temporary directory not fsynced before the rename"
    );
    let latest_tmp = checkpoints.join(".latest.tmp");
    let latest = position(&events, |e| {
        matches!(e, Event::Renamed { from, to } if *from == c(&latest_tmp) && *to == c(&checkpoints.join("latest")))
    })
    .expect("no rename publishing latest");
    // Between the two renames: otherwise `latest` could reach the disk before the folder it names.
    assert!(
        publish < latest && events[publish..latest].contains(&Event::Synced(c(&checkpoints))),
        "checkpoints/ not fsynced between publishing step-000001 and replacing latest"
    );
    assert!(
        events[..latest].contains(&Event::Synced(c(&latest_tmp))),
        ".latest.tmp not fsynced before its rename"
    );
    assert!(
        events[latest..].contains(&Event::Synced(c(&checkpoints))),
        "checkpoints/ not fsynced after latest's rename"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `rocm export` publishes each file the same way: written to a temporary sibling, fsynced,
/// renamed over the name, the folder fsynced after (an interrupted export leaves the previous
/// file or none).
#[test]
fn exported_files_are_fsynced_before_their_rename_and_the_folder_after() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rocm-durability-export-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let out = dir.join("out");
    let log = dir.join("strace.log");
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_rocm"))
        .arg("export")
        .arg("--model")
        .arg(root().join("crates/rocm-models/tests/fixtures/pipeline-a"))
        .arg("--lora")
        .arg(root().join("tests/fixtures/lora/trained"))
        .args(["--format", "peft", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let events = events(&std::fs::read_to_string(&log).unwrap());
    let c = |p: &Path| p.display().to_string();
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        let target = c(&out.join(file));
        let publish = position(
            &events,
            |e| matches!(e, Event::Renamed { to, .. } if *to == target),
        )
        .unwrap_or_else(|| panic!("{file} was not renamed into place"));
        let Event::Renamed { from, .. } = &events[publish] else {
            unreachable!()
        };
        assert!(from.contains(".tmp-"), "{file} renamed from {from}");
        assert!(
            events[..publish].contains(&Event::Synced(from.clone())),
            "{from} not fsynced before its rename"
        );
        assert!(
            events[publish..].contains(&Event::Synced(c(&out))),
            "the folder not fsynced after {file}'s rename"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_trace_parser_reads_strace_lines() {
    let trace = "12 openat(AT_FDCWD, \"/a/x\", O_RDONLY|O_CLOEXEC) = 5\n\
                 12 fsync(5)                   = 0\n\
                 13 renameat2(AT_FDCWD, \"/a/x\", AT_FDCWD, \"/a/y\", 0) = 0\n\
                 12 openat(AT_FDCWD, \"/a/z\", O_RDONLY) = -1 ENOENT (No such file)\n\
                 12 fsync(5) = 0\n";
    assert_eq!(
        events(trace),
        vec![
            Event::Synced("/a/x".into()),
            Event::Renamed {
                from: "/a/x".into(),
                to: "/a/y".into()
            },
            Event::Synced("/a/x".into()),
        ]
    );
}
