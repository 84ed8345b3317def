//! Trains the shapes world's models from scratch, reproducibly, and writes the shipped folders.
//!
//! ```text
//! cargo run --release -p rocm-shapes --example build_world -- --stage vae|clip|pref|aesthetic|teacher|distill|all \
//!     [--out crates/rocm-shapes/assets/world] [--work target/shapes-world] [--seed 0] [--scale 1] [--resume]
//! ```
//!
//! Each stage shows a progress bar, checkpoints every 100 steps under `--work`, and with
//! `--resume` continues from its checkpoint (without it, the stage starts over). At the end a
//! summary table (steps, minutes, final loss, held-out quality, weight bytes) is printed and
//! `<out>/report.json` updated; each folder gets its README. Any error prints one line on stderr
//! and exits with code 2.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::path::PathBuf;
use std::process::ExitCode;

use burn::prelude::*;
use clap::{Arg, ArgAction, Command};
use indicatif::{ProgressBar, ProgressStyle};
use rocm_shapes::build::{BuildPlan, STAGES, Stage, StageSummary};

/// mimalloc instead of glibc's allocator: a training step frees and re-allocates the same large
/// buffers hundreds of times, and glibc hands those back to the kernel and faults them in again
/// zeroed (page faults were a fifth of an aesthetic step; the stage ran 1.65× faster with it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cli() -> Command {
    Command::new("build_world")
        .about("Train the shapes world's VAE, CLIP, preference model, aesthetic head, diffusion teacher and LCM")
        .arg(
            Arg::new("stage")
                .long("stage")
                .default_value("all")
                .help("vae, clip, pref, aesthetic, teacher, distill or all"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Shipped folders (default: the crate's assets/world)"),
        )
        .arg(
            Arg::new("work")
                .long("work")
                .default_value("target/shapes-world")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Checkpoints"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .default_value("0")
                .value_parser(clap::value_parser!(u64)),
        )
        .arg(
            Arg::new("scale")
                .long("scale")
                .default_value("1")
                .value_parser(clap::value_parser!(f64))
                .help("Multiplies every stage's steps and evaluation sizes (smoke runs: 0.01)"),
        )
        .arg(
            Arg::new("resume")
                .long("resume")
                .action(ArgAction::SetTrue)
                .help("Continue each stage from its checkpoint"),
        )
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let m = cli().try_get_matches().map_err(|e| {
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            print!("{e}");
            std::process::exit(0);
        }
        e.to_string()
            .lines()
            .next()
            .unwrap_or("bad arguments")
            .trim_start_matches("error: ")
            .to_string()
    })?;
    let stage = m
        .get_one::<String>("stage")
        .map(String::as_str)
        .unwrap_or("all");
    let stages: Vec<Stage> = if stage == "all" {
        STAGES.to_vec()
    } else {
        vec![Stage::parse(stage).map_err(|e| e.to_string())?]
    };
    let out = m
        .get_one::<PathBuf>("out")
        .cloned()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/world"));
    let plan = BuildPlan {
        out: out.clone(),
        work: m.get_one::<PathBuf>("work").cloned().unwrap_or_default(),
        seed: m.get_one::<u64>("seed").copied().unwrap_or(0),
        scale: m.get_one::<f64>("scale").copied().unwrap_or(1.0),
    };
    if !(plan.scale > 0.0 && plan.scale <= 10.0) {
        return Err(format!("invalid --scale {}: expected (0, 10]", plan.scale));
    }
    rocm_shapes::build::check_writable(&out).map_err(|e| e.to_string())?;
    rocm_shapes::build::check_writable(&plan.work).map_err(|e| e.to_string())?;
    let device = Device::flex();
    let mut summaries = Vec::new();
    for stage in stages {
        let ckpt = plan.work.join(stage.name()).join("checkpoint");
        if !m.get_flag("resume") && ckpt.exists() {
            std::fs::remove_dir_all(&ckpt).map_err(|e| format!("{}: {e}", ckpt.display()))?;
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(&format!(
            "{:<9} {{elapsed_precise}} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {{msg}} (eta {{eta}})",
            stage.name()
        ))
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let summary = plan
            .run(stage, &device, &mut |r| {
                bar.set_length(r.total as u64);
                bar.set_position(r.step as u64);
                bar.set_message(format!("loss {:.4}", r.loss));
                if bar.is_hidden() && (r.step % 50 == 0 || r.step == r.total) {
                    eprintln!(
                        "{} step {}/{} loss {:.4}",
                        stage.name(),
                        r.step,
                        r.total,
                        r.loss
                    );
                }
            })
            .map_err(|e| format!("stage {}: {e}", stage.name()))?;
        bar.finish();
        rocm_shapes::build::write_readme(&plan, &summary).map_err(|e| e.to_string())?;
        rocm_shapes::build::record(&plan, &summary).map_err(|e| e.to_string())?;
        summaries.push(summary);
    }
    print_table(&summaries);
    Ok(())
}

fn print_table(summaries: &[StageSummary]) {
    println!();
    println!("| stage | steps | minutes | final loss | held-out quality | weights (bytes) |");
    println!("|---|---|---|---|---|---|");
    for s in summaries {
        let metrics: Vec<String> = s
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        println!(
            "| {} | {} | {:.1} | {:.4} | {} | {} |",
            s.stage.name(),
            s.steps,
            s.seconds / 60.0,
            s.final_loss,
            metrics.join(", "),
            s.weight_bytes
        );
    }
    let minutes: f64 = summaries.iter().map(|s| s.seconds).sum::<f64>() / 60.0;
    let bytes: u64 = summaries.iter().map(|s| s.weight_bytes).sum();
    println!("| total | | {minutes:.1} | | | {bytes} |");
}
