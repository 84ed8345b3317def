//! The `rocm` command line.
//!
//! ```text
//! rocm train --config configs/lcm_dreamshaper_pickscore.toml [--resume] [--device flex]
//!            [--reward-model DIR_OR_HUB_ID] [--reward-head FILE]
//! ```
//!
//! `train` runs [`RocmTrainer::run`](rocm::trainer::RocmTrainer::run) on the configuration.
//! `pretrained_model` is either `toy` (the quickstart's embedded 2-D point model, pretrained on
//! the spot, with the x-coordinate as reward) or a diffusers LCM pipeline (a local folder or a hub
//! id in the local Hugging Face cache): LoRA from `[lora]` goes on the UNet, the CLIP text
//! encoder is frozen, and the configured `reward` scores the VAE-decoded images (its model:
//! `--reward-model`, default the reward's usual hub id). Progress goes to stderr (a bar on a
//! terminal, one line per iteration otherwise); metrics to `<output_dir>/metrics.{jsonl,csv}`
//! (and `eval.jsonl`); PNG plots of reward and divergence against iteration and wall-clock
//! seconds to `<output_dir>/*_vs_{iteration,seconds}.png` at every checkpoint and at the end;
//! checkpoints to `<output_dir>/checkpoints/step-NNNNNN/` (LoRA in the diffusers layout +
//! optimizer + RNG state). `--resume` continues from the newest checkpoint exactly.
//!
//! Every error prints one line on stderr and exits with code 2.

#![allow(clippy::print_stdout)] // a binary owns the terminal

mod progress;

mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};

/// Any error, reported as one line.
type Failure = Box<dyn std::error::Error>;

fn device_arg() -> Arg {
    Arg::new("device")
        .long("device")
        .default_value("flex")
        .help("flex (CPU), wgpu, cuda[:N], auto")
}

fn reward_args(command: Command) -> Command {
    command
        .arg(
            Arg::new("reward-model")
                .long("reward-model")
                .value_name("DIR")
                .help(
                    "The reward's model: a folder or hub id (default: pickscore \
                     yuvalkirstain/PickScore_v1, clipscore/aesthetic openai/clip-vit-large-patch14, \
                     hpsv2 xswu/HPSv2)",
                ),
        )
        .arg(
            Arg::new("reward-head")
                .long("reward-head")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("The aesthetic reward's head (.pth or .safetensors)"),
        )
}

fn cli() -> Command {
    Command::new("rocm")
        .about("ROCM: reward optimisation of consistency models")
        .subcommand_required(true)
        .subcommand(reward_args(
            Command::new("train")
                .about("Fine-tune LoRA adapters with ROCM from a TOML configuration")
                .arg(
                    Arg::new("config")
                        .long("config")
                        .required(true)
                        .value_name("FILE")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("TOML configuration (fields: rocm_trainer::TrainConfig)"),
                )
                .arg(
                    Arg::new("resume")
                        .long("resume")
                        .action(ArgAction::SetTrue)
                        .help("Continue from <output_dir>/checkpoints/latest"),
                )
                .arg(device_arg()),
        ))
}

fn string(m: &ArgMatches, id: &str) -> Option<String> {
    m.get_one::<String>(id).cloned()
}

fn run(matches: &ArgMatches) -> Result<(), Failure> {
    match matches.subcommand() {
        Some(("train", m)) => train::train(&train::TrainArgs {
            config: m.get_one::<PathBuf>("config").cloned().unwrap_or_default(),
            resume: m.get_flag("resume"),
            device: string(m, "device").unwrap_or_default(),
            reward_model: string(m, "reward-model"),
            reward_head: m.get_one::<PathBuf>("reward-head").cloned(),
        }),
        _ => Err("unknown subcommand".into()),
    }
}

fn main() -> ExitCode {
    let matches = match cli().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            e.print().ok();
            return ExitCode::from(code);
        }
    };
    match run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
