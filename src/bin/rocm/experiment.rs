//! `rocm experiment`: a grid of training runs from one TOML file
//! ([`rocm::trainer::experiment`], docs/experiments.md): each run is `rocm train` in a child
//! process, in its own folder, N at a time; finished runs are skipped, interrupted ones resume;
//! `--shard i/N` runs one slice, `--merge` gathers the slices' results.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use rocm::run::{PATH_KEYS, RunConfig};
use rocm::trainer::experiment::report::Report;
use rocm::trainer::experiment::{
    Event, Grid, Launcher, Outcome, PlannedRun, Results, Shard, execute,
};

use crate::Failure;

/// The `experiment` subcommand's arguments.
pub fn command() -> Command {
    Command::new("experiment")
        .about("Run a grid of training runs (methods x rewards x beta x divergences x seeds) and tabulate their results")
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("GRID")
                .value_parser(clap::value_parser!(PathBuf))
                .required_unless_present("merge")
                .help("The grid file (TOML: base run configuration, [[axes]], [quick], [results]; docs/experiments.md)"),
        )
        .arg(
            Arg::new("quick")
                .long("quick")
                .action(ArgAction::SetTrue)
                .help("The grid's [quick] reduction (fewer values, fewer iterations) into <output_dir>/quick"),
        )
        .arg(
            Arg::new("jobs")
                .long("jobs")
                .short('j')
                .value_name("N")
                .default_value("1")
                .value_parser(clap::value_parser!(u16).range(1..))
                .help("Runs at a time (child processes; each gets RAYON_NUM_THREADS = cores / N unless set)"),
        )
        .arg(
            Arg::new("shard")
                .long("shard")
                .value_name("i/N")
                .value_parser(|s: &str| s.parse::<Shard>())
                .help("Run only slice i of N (1-based: 1/N … N/N; runs i-1, i-1+N, …); merge the slices' folders with --merge"),
        )
        .arg(
            Arg::new("merge")
                .long("merge")
                .value_name("DIR")
                .num_args(1..)
                .value_parser(clap::value_parser!(PathBuf))
                .conflicts_with_all(["config", "quick", "shard", "jobs", "list"])
                .help("Write the results of the grid output folders DIR… (the slices, copied together or shared) instead of running"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Output folder (default: the grid's output_dir, or <output_dir>/quick with --quick; with --merge, the first DIR)"),
        )
        .arg(
            Arg::new("list")
                .long("list")
                .action(ArgAction::SetTrue)
                .help("Print the (slice's) runs, index and id, and exit"),
        )
        .arg(
            Arg::new("device")
                .long("device")
                .default_value("flex")
                .help("Passed to each `rocm train`: flex (CPU), wgpu, cuda[:N], auto"),
        )
}

/// Runs `rocm experiment`.
pub fn experiment(m: &ArgMatches) -> Result<(), Failure> {
    let out = m.get_one::<PathBuf>("out").cloned();
    if let Some(dirs) = m.get_many::<PathBuf>("merge") {
        let dirs: Vec<PathBuf> = dirs.cloned().collect();
        return merge(&dirs, out);
    }
    let path = m.get_one::<PathBuf>("config").cloned().unwrap_or_default();
    let quick = m.get_flag("quick");
    let mut grid = Grid::load(&path)?.with_path_keys(&PATH_KEYS);
    if let Some(out) = out {
        if quick {
            grid.quick.output_dir = Some(out);
        } else {
            grid.output_dir = out;
        }
    }
    let plan = grid.plan(quick)?;
    // Every run's configuration is checked before any trains.
    for run in &plan.runs {
        let name = format!("{} (run {})", path.display(), run.id);
        RunConfig::from_toml_str(&run.config_text(), name)?;
    }
    let shard = m.get_one::<Shard>("shard").copied();
    let runs = shard.unwrap_or(Shard::ALL).select(&plan.runs);
    if m.get_flag("list") {
        for run in &runs {
            println!("{}\t{}", run.index, run.id);
        }
        return Ok(());
    }
    let jobs = usize::from(m.get_one::<u16>("jobs").copied().unwrap_or(1));
    let slice = shard.map(|s| format!(", shard {s}")).unwrap_or_default();
    eprintln!(
        "grid {}{}: {} of {} runs{slice}, {jobs} at a time, into {}",
        plan.name,
        if quick { " (quick)" } else { "" },
        runs.len(),
        plan.runs.len(),
        plan.output_dir.display()
    );
    let launcher = TrainProcess {
        exe: std::env::current_exe()?,
        device: m.get_one::<String>("device").cloned().unwrap_or_default(),
        threads: threads_per_run(jobs),
    };
    let stop = crate::train::stop_on_signals()?;
    let outcome = execute(&plan, &runs, jobs, &stop, &launcher, &report)?;
    eprintln!("{}", summary_line(&outcome));
    if stop.load(Ordering::Relaxed) || !outcome.interrupted.is_empty() {
        eprintln!(
            "interrupted: {} runs resume from their checkpoints when the same command runs again",
            outcome.interrupted.len()
        );
        std::process::exit(crate::train::INTERRUPTED);
    }
    match shard {
        Some(s) => eprintln!(
            "shard {s} done; once every slice is, `rocm experiment --merge DIR…` (their output \
             folders) writes the results"
        ),
        None => {
            let results = Results::collect(&plan, std::slice::from_ref(&plan.output_dir))?;
            results.write(&plan.output_dir)?;
            println!("{}", results_paths(&plan.output_dir, &plan.reports));
        }
    }
    if outcome.failed.is_empty() {
        return Ok(());
    }
    let failed: Vec<String> = outcome
        .failed
        .iter()
        .map(|(id, why)| format!("{id} ({why})"))
        .collect();
    Err(format!("{} runs failed: {}", failed.len(), failed.join("; ")).into())
}

/// `--merge`: the results of several output folders of one grid.
fn merge(dirs: &[PathBuf], out: Option<PathBuf>) -> Result<(), Failure> {
    let results = Results::merge(dirs)?;
    let out = out.unwrap_or_else(|| dirs[0].clone());
    results.write(&out)?;
    println!("{}", results_paths(&out, &results.plan.reports));
    let missing = results.missing();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} of {} runs are not finished in {}: {}",
        missing.len(),
        results.plan.runs.len(),
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        missing.join(", ")
    )
    .into())
}

fn results_paths(dir: &Path, reports: &[Report]) -> String {
    use rocm::trainer::experiment::{CURVES_CSV, RESULTS_CSV, RESULTS_MD, TIMINGS_CSV};
    let mut line = format!(
        "wrote {}, {}, {} and {}",
        dir.join(RESULTS_CSV).display(),
        dir.join(RESULTS_MD).display(),
        dir.join(TIMINGS_CSV).display(),
        dir.join(CURVES_CSV).display()
    );
    if !reports.is_empty() {
        let names: Vec<&str> = reports.iter().map(Report::name).collect();
        line.push_str(&format!(
            ", and the reports {} next to them",
            names.join(", ")
        ));
    }
    line
}

fn summary_line(o: &Outcome) -> String {
    format!(
        "{} trained, {} already complete, {} failed, {} interrupted",
        o.finished.len(),
        o.skipped.len(),
        o.failed.len(),
        o.interrupted.len()
    )
}

/// One progress line on stderr per event.
fn report(event: &Event) {
    match event {
        Event::Skipped {
            run,
            position,
            total,
        } => eprintln!("[{position}/{total}] {}: already complete", run.id),
        Event::Started {
            run,
            position,
            total,
            resume,
        } => eprintln!(
            "[{position}/{total}] {}: {}",
            run.id,
            if *resume {
                "resuming from its checkpoint"
            } else {
                "started"
            }
        ),
        Event::Finished {
            run,
            position,
            total,
            seconds,
            eta,
        } => eprintln!(
            "[{position}/{total}] {}: done in {}{}",
            run.id,
            duration(*seconds),
            eta.filter(|e| *e > 0.0)
                .map(|e| format!(", about {} left", duration(e)))
                .unwrap_or_default()
        ),
        Event::Failed {
            run,
            position,
            total,
            message,
        } => eprintln!("[{position}/{total}] {}: FAILED: {message}", run.id),
    }
}

/// `1 h 02 min`, `3 min 05 s`, `4.2 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s as u64) % 60)
    } else {
        format!(
            "{} h {:02} min",
            (s / 3600.0) as u64,
            ((s as u64) / 60) % 60
        )
    }
}

/// Threads for each of `jobs` children: `RAYON_NUM_THREADS` if set (they inherit it), else
/// the cores shared out.
fn threads_per_run(jobs: usize) -> Option<usize> {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (jobs > 1).then(|| (cores / jobs).max(1))
}

/// Runs each grid point as `rocm train --config <run>/config.toml [--resume]`, its output
/// appended to `<run>/train.log`, in its own process group (a Ctrl-C reaches this process,
/// which forwards one SIGTERM: the child stops at a checkpoint).
struct TrainProcess {
    exe: PathBuf,
    device: String,
    threads: Option<usize>,
}

impl TrainProcess {
    fn wait(
        &self,
        child: &mut std::process::Child,
        stop: &AtomicBool,
    ) -> std::io::Result<ExitStatus> {
        let mut forwarded = false;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if stop.load(Ordering::Relaxed) && !forwarded {
                forwarded = true;
                // std sends only SIGKILL; `kill` asks for the checkpointing stop.
                let sent = Process::new("kill")
                    .args(["-s", "TERM", &child.id().to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                if !sent {
                    child.kill()?;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Launcher for TrainProcess {
    fn launch(
        &self,
        _run: &PlannedRun,
        dir: &Path,
        resume: bool,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        let log_path = dir.join("train.log");
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))
        };
        let mut cmd = Process::new(&self.exe);
        cmd.arg("train")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .args(["--device", &self.device])
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?);
        if resume {
            cmd.arg("--resume");
        }
        if let Some(n) = self.threads {
            cmd.env("RAYON_NUM_THREADS", n.to_string());
        }
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", self.exe.display()))?;
        let status = self
            .wait(&mut child, stop)
            .map_err(|e| format!("waiting for rocm train: {e}"))?;
        if status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!(
            "rocm train exited with {status}: {last} (log: {})",
            log_path.display()
        ))
    }
}
