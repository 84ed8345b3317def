//! `rocm experiment` on small grids of the embedded toy (docs/experiments.md), one thread per
//! run so that runs are bit-reproducible:
//!
//! - three shards, merged, give byte-identical `results.csv` and `results.md` to the unsharded
//!   grid (run two at a time); a merge with a slice missing names the missing runs;
//! - a finished run is never redone (its metrics file keeps its bytes and mtime) and an
//!   interrupted one resumes from its checkpoint to the same adapters and results;
//! - SIGTERM stops the running child at a checkpoint (exit 130) and the same command resumes it;
//! - a run that fails does not stop the others; the command exits 2 naming it;
//! - a bad grid or `--shard` is refused before anything runs, naming the file, run and key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-experiment-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A grid over `configs/toy.toml`, shrunk to seconds: 4 iterations of batch 16, K = 4,
/// checkpoints and evaluations every 2; `axes` appended.
fn write_grid(dir: &Path, axes: &str) -> PathBuf {
    let text = format!(
        "base = '{}'\noutput_dir = '{}'\n\
         set = {{ \"train.iterations\" = 4, \"train.batch_size\" = 16, \"train.num_steps\" = 4, \
         \"train.checkpoint_every\" = 2, \"train.eval_every\" = 2, \"train.eval_seeds\" = [0, 1] }}\n{axes}",
        root().join("configs/toy.toml").display(),
        dir.join("out").display()
    );
    let path = dir.join("grid.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const BETA_SEED: &str = "[[axes]]\nkey = \"train.beta\"\nvalues = [0.0, 0.3]\n\
                         [[axes]]\nkey = \"train.seed\"\nvalues = [0, 1]\n";

/// `rocm experiment ARGS…` with one thread per run.
fn experiment(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rocm"))
        .arg("experiment")
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[test]
fn three_shards_merged_equal_the_unsharded_grid() {
    let dir = scratch("shards");
    let grid = write_grid(&dir, BETA_SEED);
    let whole = dir.join("whole");
    let o = experiment(&[
        os("--config"),
        grid.as_os_str(),
        os("--out"),
        whole.as_os_str(),
        os("--jobs"),
        os("2"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("[4/4]"), "{}", stderr(&o));
    let csv = read(whole.join("results.csv"));
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("run,beta,seed,steps,reward,"), "{csv}");
    assert!(csv.contains("\nbeta-0.3_seed-1,0.3,1,4,"), "{csv}");
    let md = read(whole.join("results.md"));
    assert!(md.contains("| beta | n | reward |"), "{md}");
    assert!(md.contains("\n| 0.3 | 2 | "), "{md}");

    let mut shards = Vec::new();
    for i in 1..=3 {
        let out = dir.join(format!("shard{i}"));
        let shard = format!("{i}/3");
        let list = experiment(&[
            os("--config"),
            grid.as_os_str(),
            os("--shard"),
            os(&shard),
            os("--list"),
        ]);
        let listed = String::from_utf8_lossy(&list.stdout).into_owned();
        assert_eq!(
            listed.lines().count(),
            if i == 1 { 2 } else { 1 },
            "{listed}"
        );
        assert!(listed.starts_with(&format!("{}\t", i - 1)), "{listed}");
        let o = experiment(&[
            os("--config"),
            grid.as_os_str(),
            os("--shard"),
            os(&shard),
            os("--out"),
            out.as_os_str(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!out.join("results.csv").exists(), "a shard wrote results");
        shards.push(out);
    }
    let merged = dir.join("merged");
    let mut args = vec![os("--merge")];
    args.extend(shards.iter().map(|s| s.as_os_str()));
    args.extend([os("--out"), merged.as_os_str()]);
    let o = experiment(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(merged.join("results.csv")), csv);
    assert_eq!(read(merged.join("results.md")), md);

    // Two slices of three: the merge writes what there is and exits 2 naming the rest (run 2).
    let o = experiment(&[
        os("--merge"),
        shards[0].as_os_str(),
        shards[1].as_os_str(),
        os("--out"),
        dir.join("partial").as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 of 4 runs are not finished")
            && stderr(&o).contains("beta-0.3_seed-0"),
        "{}",
        stderr(&o)
    );
    assert!(read(dir.join("partial/results.md")).contains("Missing (1 runs not finished)"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `path`'s bytes and modification time.
fn snapshot(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

#[test]
fn finished_runs_are_skipped_and_an_interrupted_run_resumes() {
    let dir = scratch("resume");
    let grid = write_grid(&dir, "[[axes]]\nkey = \"train.seed\"\nvalues = [0, 1]\n");
    let run = |expect: &str| {
        let o = experiment(&[os("--config"), grid.as_os_str()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{}", stderr(&o));
        stderr(&o)
    };
    run("2 trained, 0 already complete");
    let out = dir.join("out");
    let results = read(out.join("results.csv"));
    let done = out.join("runs/seed-0");
    let before = snapshot(&done.join("metrics.jsonl"));

    // Put seed-1 back in the state a kill after iteration 3 leaves: the checkpoint of step 2
    // published, step 3's metrics written, no completion marker.
    let interrupted = out.join("runs/seed-1");
    let final_adapters =
        std::fs::read(interrupted.join("checkpoints/step-000004/adapters.bpk")).unwrap();
    std::fs::remove_file(interrupted.join("completed.json")).unwrap();
    std::fs::remove_dir_all(interrupted.join("checkpoints/step-000004")).unwrap();
    std::fs::write(interrupted.join("checkpoints/latest"), "step-000002").unwrap();
    let metrics = read(interrupted.join("metrics.jsonl"));
    let first3: Vec<&str> = metrics.lines().take(3).collect();
    std::fs::write(interrupted.join("metrics.jsonl"), first3.join("\n") + "\n").unwrap();
    let eval = read(interrupted.join("eval.jsonl"));
    std::fs::write(
        interrupted.join("eval.jsonl"),
        eval.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();

    let log = run("1 trained, 1 already complete");
    assert!(log.contains("[1/2] seed-0: already complete"), "{log}");
    assert!(
        log.contains("[2/2] seed-1: resuming from its checkpoint"),
        "{log}"
    );
    assert!(read(interrupted.join("train.log")).contains("at step 2"));
    assert_eq!(
        snapshot(&done.join("metrics.jsonl")),
        before,
        "a finished run was redone"
    );
    let resumed = std::fs::read(interrupted.join("checkpoints/step-000004/adapters.bpk")).unwrap();
    assert!(
        resumed == final_adapters,
        "the resumed run's adapters differ"
    );
    assert_eq!(read(out.join("results.csv")), results);

    // A third time nothing trains.
    run("0 trained, 2 already complete");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_stops_the_running_child_at_a_checkpoint_and_the_grid_resumes() {
    let dir = scratch("sigterm");
    let grid = write_grid(&dir, "[[axes]]\nkey = \"train.seed\"\nvalues = [0]\n");
    let text = read(&grid).replace("\"train.iterations\" = 4", "\"train.iterations\" = 300");
    std::fs::write(
        &grid,
        text.replace(
            "\"train.checkpoint_every\" = 2",
            "\"train.checkpoint_every\" = 50",
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rocm"))
        .args(["experiment", "--config"])
        .arg(&grid)
        .env("RAYON_NUM_THREADS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once the run has published its first checkpoint (it has 250 iterations to go).
    let latest = dir.join("out/runs/seed-0/checkpoints/latest");
    while !latest.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let o = child.wait_with_output().unwrap();
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{log}");
    assert!(log.contains("1 interrupted"), "{log}");
    let run = dir.join("out/runs/seed-0");
    assert!(!run.join("completed.json").exists());
    assert!(read(run.join("train.log")).contains("interrupted: checkpoint of step"));
    assert!(!dir.join("out/results.csv").exists());
    let o = experiment(&[os("--config"), grid.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("seed-0: resuming from its checkpoint"),
        "{}",
        stderr(&o)
    );
    assert!(read(dir.join("out/results.csv")).contains("\nseed-0,0,300,"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_failed_run_does_not_stop_the_grid() {
    let dir = scratch("failed");
    let grid = write_grid(&dir, "[[axes]]\nkey = \"train.seed\"\nvalues = [0, 1]\n");
    // seed-0 cannot write its checkpoints: a file stands where their folder goes.
    let broken = dir.join("out/runs/seed-0");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("checkpoints"), "not a folder").unwrap();
    let o = experiment(&[os("--config"), grid.as_os_str()]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(log.contains("[1/2] seed-0: FAILED"), "{log}");
    assert!(log.contains("[2/2] seed-1: done"), "{log}");
    assert!(
        log.lines()
            .last()
            .unwrap()
            .contains("1 runs failed: seed-0 (rocm train exited"),
        "{log}"
    );
    let csv = read(dir.join("out/results.csv"));
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(read(dir.join("out/results.md")).contains("Missing (1 runs not finished): `seed-0`"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_grids_and_shards_are_refused_before_anything_runs() {
    let dir = scratch("bad");
    let grid = write_grid(&dir, "[[axes]]\nkey = \"train.bet\"\nvalues = [0.0]\n");
    let o = experiment(&[os("--config"), grid.as_os_str()]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(
        log.contains("grid.toml (run bet-0.0)") && log.contains("bet"),
        "{log}"
    );
    assert!(!dir.join("out").exists(), "a run started");

    let grid = write_grid(&dir, BETA_SEED);
    for (shard, want) in [("4/3", "1..=3"), ("0/2", "1-based"), ("1/0", "at least 1")] {
        let o = experiment(&[os("--config"), grid.as_os_str(), os("--shard"), os(shard)]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{shard}: {}", stderr(&o));
    }
    let o = experiment(&[os("--merge"), dir.join("nowhere").as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nowhere"), "{}", stderr(&o));
    assert!(!dir.join("out").exists(), "a run started");
    std::fs::remove_dir_all(&dir).ok();
}

/// experiments/paper_mini.toml: 102 runs (34 quick), each a valid run configuration whose
/// model, reward and prompt files exist from the repository root; and a miniature of its quick
/// grid (one reward, four methods, 2 iterations, 2 evaluation images) runs through the
/// `rocm experiment` command and writes every report.
#[test]
fn the_paper_mini_grid_plans_valid_runs_and_its_reports_are_written() {
    use rocm::run::{PATH_KEYS, RunConfig};
    use rocm::trainer::experiment::Grid;
    let path = root().join("experiments/paper_mini.toml");
    let grid = Grid::load(&path).unwrap().with_path_keys(&PATH_KEYS);
    let plan = grid.plan(false).unwrap();
    assert_eq!(plan.runs.len(), 102);
    assert_eq!(grid.plan(true).unwrap().runs.len(), 34);
    for run in &plan.runs {
        let c = RunConfig::from_toml_str(&run.config_text(), &path)
            .unwrap_or_else(|e| panic!("{}: {e}", run.id));
        let rocm::run::ModelSource::Pretrained(model) = &c.model else {
            panic!("{}: not a pipeline", run.id)
        };
        assert!(
            root().join(model).join("model_index.json").is_file(),
            "{model}"
        );
        assert_eq!(c.held_out.len(), 4, "{}", run.id);
        let eval: Vec<String> = read(root().join("data/prompts/shapes_eval.txt"))
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(
            c.train.eval_prompts, eval,
            "{}: not shapes_eval.txt",
            run.id
        );
        assert!(
            c.train.eval_at_start && c.train.eval_every > 0,
            "{}",
            run.id
        );
        // Every method scores 8 images per iteration.
        let per_prompt = match c.train.algorithm {
            rocm::trainer::AlgorithmKind::Rocm => 1,
            _ => 2,
        };
        assert_eq!(c.train.batch_size * per_prompt, 8, "{}", run.id);
    }

    let dir = scratch("paper-mini");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "axes = { seed = [0] }",
        "axes = { seed = [0], reward = [\"pref\"], method = [\"none\", \"kl\", \"rlcm\", \"ddpo\"] }\n\
         output_dir = \"OUT\"",
    );
    let text = text
        .replace(
            "set = { \"train.iterations\" = 12, \"train.eval_every\" = 6, \"train.checkpoint_every\" = 6 }",
            "set = { \"train.iterations\" = 2, \"train.eval_every\" = 1, \"train.checkpoint_every\" = 1, \
             \"train.eval_seeds\" = [0], \"train.eval_prompts\" = [\"a red circle\", \"a blue square\"], \
             \"train.num_steps\" = 2 }",
        )
        .replace("OUT", &dir.join("out").display().to_string());
    assert!(
        text.contains("\"train.iterations\" = 2"),
        "the quick section moved"
    );
    let mini = dir.join("paper_mini.toml");
    std::fs::write(&mini, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rocm"))
        .current_dir(root())
        .args(["experiment", "--quick", "--config"])
        .arg(&mini)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("out");
    let md = read(out.join("results.md"));
    for section in [
        "## Table 1 analogue",
        "### reward = pref (column `pref` left out: the trained reward)",
        "| *base LCM (4 steps)* | 1 |",
        "## Fig. 4 analogue",
        "## Fig. 5 analogue",
        "## Fig. 6 analogue",
    ] {
        assert!(md.contains(section), "{section}:\n{md}");
    }
    for file in [
        "table1.csv",
        "fig4_beta_sweep.csv",
        "fig4_beta_sweep_pref.png",
        "fig4_beta_sweep_h.png",
        "fig5_reward_vs_time.csv",
        "fig5_reward_vs_time_vs_seconds.png",
        "fig5_reward_vs_time_vs_queries.png",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let curves = read(out.join("curves.csv"));
    assert!(
        curves.starts_with(
            "run,reward,method,seed,step,seconds,reward_queries,reward,aesthetic,clipscore,h,pref\n"
        ),
        "{curves}"
    );
    // 4 runs × evaluations at steps 0, 1, 2.
    assert_eq!(curves.lines().count(), 1 + 4 * 3, "{curves}");
    std::fs::remove_dir_all(&dir).ok();
}
