//! The `rocm` command line.
//!
//! ```text
//! rocm train  --config configs/lcm_dreamshaper_pickscore.toml [--resume] [--device flex]
//!             [--devices cuda:0,cuda:1]
//!             [--reward-model DIR_OR_HUB_ID] [--reward-head FILE]
//! rocm sample --model DIR_OR_HUB_ID --prompt TEXT [--prompt TEXT …] [--lora FILE_OR_CHECKPOINT]
//!             [--steps 4] [--guidance 8.0] [--seed 0 | --noise FILE] [--out samples]
//!             [--out-tensor FILE] [--skip-text-encoder] [--device flex]
//! rocm eval   --config FILE [--lora FILE_OR_CHECKPOINT] [--device flex]
//!             [--reward-model DIR_OR_HUB_ID] [--reward-head FILE]
//! rocm export --model DIR_OR_HUB_ID --lora FILE_OR_CHECKPOINT --format peft|diffusers|kohya|merged
//!             --out PATH [--skip-text-encoder] [--device flex]
//! rocm review --db review.sqlite [--a RUN_OR_LORA --b RUN_OR_LORA [--model DIR_OR_HUB_ID]
//!             [--prompts FILE] [--seeds 0,1 | 0..8] [--steps K] [--guidance G]]
//!             [--bind 127.0.0.1:8080] [--skip-text-encoder] [--device flex]
//! rocm review --report --db review.sqlite [--csv votes.csv]
//! rocm experiment --config experiments/toy_grid.toml [--quick] [--jobs N] [--shard i/N]
//!             [--out DIR] [--list] [--device flex]
//! rocm experiment --merge DIR [DIR …] [--out DIR]
//! ```
//!
//! `train` builds the run configuration ([`RunConfig`](rocm::run::RunConfig)) and runs
//! [`RocmTrainer::run`](rocm::trainer::RocmTrainer::run) on it. `model` is either `toy` (the
//! quickstart's embedded 2-D point model, pretrained on the spot, with the x-coordinate as
//! reward) or a diffusers LCM pipeline (a local folder or a hub id in the local Hugging Face
//! cache): LoRA from `[train.lora]` goes on the UNet, the CLIP text encoder is frozen, and the
//! `[reward]` scores the VAE-decoded images (its model: `--reward-model`, else `reward.model`,
//! else the reward's usual hub id). Progress goes to stderr (a bar on a
//! terminal, one line per iteration otherwise); metrics to `<output_dir>/metrics.{jsonl,csv}`;
//! PNG plots of reward and divergence against iteration and wall-clock seconds to
//! `<output_dir>/*_vs_{iteration,seconds}.png` at every checkpoint and at the end;
//! checkpoints to `<output_dir>/checkpoints/step-NNNNNN/` (LoRA in the diffusers layout +
//! optimizer + RNG state). Every `eval_every` iterations and at the end, the rewards of
//! `eval_prompts × eval_seeds` go to `<output_dir>/eval.jsonl` (with the configuration's
//! `[[held_out]]` rewards on the same images; `eval_at_start` adds step 0) and, for pipelines,
//! their images to `<output_dir>/samples/step-NNNNNN.png` (a grid: one row per prompt, one
//! column per seed). `--resume` continues from the newest checkpoint exactly.
//!
//! `sample` generates one image per prompt with an LCM pipeline (a folder or cached hub id) in
//! `--steps` steps at guidance scale `--guidance`, noise drawn from `--seed`, and writes
//! `OUT/image-<i>.png` and `OUT/grid.png` (near-square), printing their paths on stdout.
//! `--noise FILE` takes the noise from a safetensors file instead (`latents` `[B,4,h,w]` = x_0,
//! `noise` `[K−1,B,4,h,w]` = the scheduler's z_k; [`rocm::tensor_files`]) and `--out-tensor FILE`
//! also writes the images as f32 `image` `[B,3,H,W]`: with diffusers' noise and the same LoRA
//! the result is diffusers' `LatentConsistencyModelPipeline` + `load_lora_weights` image.
//! `--lora` loads adapters onto the UNet: a `.safetensors` file in the diffusers or PEFT layout
//! (ours, or peft's/diffusers'), or a folder holding one (a checkpoint folder
//! `<output_dir>/checkpoints/step-NNNNNN`, a PEFT folder). Ranks come from the factors' shapes;
//! α from `adapter_config.json` beside the file, else the file's `lora_adapter_metadata`, else
//! per-module `.alpha` keys, else α = r (diffusers' default).
//!
//! `eval` builds the configuration's model and reward as `train` does and scores its
//! `train.eval_prompts × train.eval_seeds` (for the toy without prompts, one empty prompt) with the same
//! noise and sampler settings as training's evaluation: with the base model (adapters off) and,
//! given `--lora` or a checkpoint under `output_dir` (the newest), with the adapters. It prints
//! one JSON line:
//!
//! ```text
//! {"reward":"pickscore","n":4,"base_mean":…,"base":[…],"lora_mean":…,"lora":[…],"lora_path":"…"}
//! ```
//!
//! (`lora*` absent without adapters).
//!
//! `export` loads `--model`'s UNet (a pipeline folder, its `unet/` folder or a cached hub id)
//! with the adapters of `--lora` (any layout `sample` reads, kohya's included), and writes
//! them as `--format`: `peft` (a folder: `adapter_model.safetensors` + `adapter_config.json`,
//! for `PeftModel.from_pretrained`), `diffusers` (`pytorch_lora_weights.safetensors`, for
//! `load_lora_weights`), `kohya` (`lora_kohya.safetensors` with `lora_unet_*` keys and the real
//! `.alpha`, for ComfyUI, A1111 and kohya's scripts) or `merged` (a diffusers `unet/` folder,
//! `config.json` + `diffusion_pytorch_model.safetensors` in f32, the adapters fused in, for
//! `UNet2DConditionModel.from_pretrained`). `--out` is a folder, or for `diffusers`/`kohya` a
//! `.safetensors` file. It prints the path written.
//!
//! `review` runs a human-preference study of arm `--a` against arm `--b` on one pipeline: each
//! is `base`, a LoRA file or checkpoint folder, a run's output folder or its RUN.toml (the
//! newest checkpoint; a configuration also gives the default model, `eval_prompts`,
//! `eval_seeds`, `num_steps` and `guidance_scale`). It generates both arms' images of every
//! prompt × seed into the `--db` SQLite file (reusing those already there, by a content hash of
//! what produced them), prints the page's URL and serves it on `--bind` (127.0.0.1 only by
//! default): one pair at a time, sides drawn per rater and pair, three questions (visual
//! appeal, general preference, prompt alignment) answered with `1`/`2`/`0` or clicks, each
//! vote committed before the next pair; `/results` shows A's win rates with 95 % Wilson
//! intervals per criterion and rater. Without `--a`/`--b` it serves the study already in
//! `--db`; `--report` prints the results table ([`rocm_review::report::table`]) and, with
//! `--csv`, writes the raw votes.
//!
//! `experiment` runs a grid file (docs/experiments.md): a base run configuration and axes
//! whose values override its keys, expanded into named runs (`<output_dir>/runs/<id>/`, each
//! with its resolved `config.toml`), every one checked before any trains. Each run is `rocm
//! train` in a child process (its output in `<run>/train.log`), `--jobs` at a time; a run
//! already complete is skipped, an interrupted one resumes from its checkpoint, a failed one is
//! reported and the others go on (exit code 2 at the end, naming the failed runs). Without
//! `--shard` it writes `results.csv` (every run × every final metric), `results.md` (tables,
//! mean ± std over seeds) and `timings.csv`; `--shard i/N` (1-based) runs one of N disjoint
//! slices, and `--merge DIR…` writes the results of the slices' output folders. SIGINT or
//! SIGTERM stops the running children at a checkpoint and exits with code 130.
//!
//! Every error prints one line on stderr and exits with code 2.

#![allow(clippy::print_stdout)] // a binary owns the terminal

mod eval;
mod experiment;
mod export;
mod progress;
mod review;
mod sample;
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

/// `--reward-model`'s help: every reward with a model and its default, from `RewardKind::ALL`.
fn reward_model_help() -> String {
    let defaults: Vec<String> = rocm::reward::RewardKind::ALL
        .into_iter()
        .filter_map(|k| k.default_model().map(|m| format!("{k} {m}")))
        .collect();
    format!(
        "The reward's model, a folder or hub id, overriding the configuration's `reward.model` \
         (default: {}; rewards: {})",
        defaults.join(", "),
        rocm::reward::RewardKind::names()
    )
}

fn reward_args(command: Command) -> Command {
    command
        .arg(
            Arg::new("reward-model")
                .long("reward-model")
                .value_name("DIR")
                .help(reward_model_help()),
        )
        .arg(
            Arg::new("reward-head")
                .long("reward-head")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("The aesthetic reward's head (.pth or .safetensors), overriding `reward.head` (default: the embedded LAION head)"),
        )
}

fn config_arg() -> Arg {
    Arg::new("config")
        .long("config")
        .required(true)
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help("TOML run configuration: model, [reward], [prompts], [train] (rocm::run::RunConfig)")
}

fn lora_arg() -> Arg {
    Arg::new("lora")
        .long("lora")
        .value_name("FILE_OR_DIR")
        .value_parser(clap::value_parser!(PathBuf))
        .help("LoRA adapters: a .safetensors (diffusers, PEFT or kohya layout) or a checkpoint folder")
}

fn skip_text_encoder_arg() -> Arg {
    Arg::new("skip-text-encoder")
        .long("skip-text-encoder")
        .action(ArgAction::SetTrue)
        .help("Load only the UNet part of a LoRA that also adapts the text encoder (refused otherwise)")
}

fn export_command() -> Command {
    Command::new("export")
        .about("Write a LoRA checkpoint or file as PEFT, diffusers or kohya adapters, or fused into the UNet")
        .arg(
            Arg::new("model")
                .long("model")
                .required(true)
                .value_name("DIR_OR_HUB_ID")
                .help("The LCM pipeline folder (or its unet/ folder, or a cached hub id) the LoRA belongs to"),
        )
        .arg(lora_arg().required(true))
        .arg(
            Arg::new("format")
                .long("format")
                .required(true)
                .value_name("FORMAT")
                .value_parser(|s: &str| s.parse::<export::Format>())
                .help(format!(
                    "{}: PEFT folder, diffusers file, kohya file (ComfyUI, A1111), or a diffusers unet/ folder with the LoRA fused in",
                    export::Format::names()
                )),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .required(true)
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Output folder (or a .safetensors file for diffusers and kohya)"),
        )
        .arg(skip_text_encoder_arg())
        .arg(device_arg())
}

fn sample_command() -> Command {
    Command::new("sample")
        .about("Generate images with an LCM pipeline, optionally with LoRA adapters")
        .arg(
            Arg::new("model")
                .long("model")
                .required(true)
                .value_name("DIR_OR_HUB_ID")
                .help("A diffusers LCM pipeline folder or a hub id in the local cache"),
        )
        .arg(
            Arg::new("prompt")
                .long("prompt")
                .required(true)
                .action(ArgAction::Append)
                .value_name("TEXT")
                .help("A prompt (repeatable: one image each)"),
        )
        .arg(lora_arg())
        .arg(
            Arg::new("steps")
                .long("steps")
                .value_name("K")
                .default_value("4")
                .value_parser(clap::value_parser!(usize))
                .help("Sampler steps K"),
        )
        .arg(
            Arg::new("guidance")
                .long("guidance")
                .value_name("G")
                .default_value("8.0")
                .value_parser(clap::value_parser!(f32))
                .help("Guidance scale g (w = g - 1, embedded)"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_name("S")
                .default_value("0")
                .value_parser(clap::value_parser!(u64))
                .help("Noise seed"),
        )
        .arg(
            Arg::new("noise")
                .long("noise")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("safetensors with `latents` [B,4,h,w] and `noise` [K-1,B,4,h,w] (f32), instead of --seed's (diffusers' noise, for exact comparisons)"),
        )
        .arg(
            Arg::new("out-tensor")
                .long("out-tensor")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also write the images as safetensors `image` [B,3,H,W] f32 in [0, 1]"),
        )
        .arg(skip_text_encoder_arg())
        .arg(
            Arg::new("out")
                .long("out")
                .default_value("samples")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Output folder: image-<i>.png and grid.png"),
        )
        .arg(device_arg())
}

fn cli() -> Command {
    Command::new("rocm")
        .about("ROCM: reward optimisation of consistency models")
        .subcommand_required(true)
        .subcommand(reward_args(
            Command::new("train")
                .about("Fine-tune LoRA adapters with ROCM from a TOML configuration")
                .arg(config_arg())
                .arg(
                    Arg::new("resume")
                        .long("resume")
                        .action(ArgAction::SetTrue)
                        .help("Continue from <output_dir>/checkpoints/latest"),
                )
                .arg(device_arg())
                .arg(
                    Arg::new("devices")
                        .long("devices")
                        .value_name("DEVICE,DEVICE,...")
                        .value_delimiter(',')
                        .conflicts_with("device")
                        .help("Data-parallel: one replica per device, e.g. cuda:0,cuda:1 or flex,flex (overrides train.devices; docs/scaling.md)"),
                ),
        ))
        .subcommand(sample_command())
        .subcommand(export_command())
        .subcommand(review::command())
        .subcommand(experiment::command())
        .subcommand(reward_args(
            Command::new("eval")
                .about("Score the configuration's evaluation prompts x seeds, base vs LoRA")
                .arg(config_arg())
                .arg(lora_arg())
                .arg(device_arg()),
        ))
}

fn path(m: &ArgMatches, id: &str) -> Option<PathBuf> {
    m.get_one::<PathBuf>(id).cloned()
}

fn train_args(m: &ArgMatches, resume: bool) -> train::TrainArgs {
    train::TrainArgs {
        config: path(m, "config").unwrap_or_default(),
        resume,
        device: string(m, "device").unwrap_or_default(),
        devices: m
            .try_get_many::<String>("devices")
            .ok()
            .flatten()
            .map(|d| d.cloned().collect())
            .unwrap_or_default(),
        reward_model: string(m, "reward-model"),
        reward_head: path(m, "reward-head"),
    }
}

fn string(m: &ArgMatches, id: &str) -> Option<String> {
    m.get_one::<String>(id).cloned()
}

fn run(matches: &ArgMatches) -> Result<(), Failure> {
    match matches.subcommand() {
        Some(("train", m)) => train::train(&train_args(m, m.get_flag("resume"))),
        Some(("sample", m)) => sample::sample(&sample::SampleArgs {
            model: string(m, "model").unwrap_or_default(),
            prompts: m
                .get_many::<String>("prompt")
                .map(|p| p.cloned().collect())
                .unwrap_or_default(),
            lora: path(m, "lora"),
            steps: m.get_one::<usize>("steps").copied().unwrap_or(4),
            guidance: m.get_one::<f32>("guidance").copied().unwrap_or(8.0),
            seed: m.get_one::<u64>("seed").copied().unwrap_or(0),
            noise: path(m, "noise"),
            out_tensor: path(m, "out-tensor"),
            skip_text_encoder: m.get_flag("skip-text-encoder"),
            out: path(m, "out").unwrap_or_default(),
            device: string(m, "device").unwrap_or_default(),
        }),
        Some(("export", m)) => export::export(&export::ExportArgs {
            model: string(m, "model").unwrap_or_default(),
            lora: path(m, "lora").unwrap_or_default(),
            format: m
                .get_one::<export::Format>("format")
                .copied()
                .unwrap_or(export::Format::Kohya),
            out: path(m, "out").unwrap_or_default(),
            skip_text_encoder: m.get_flag("skip-text-encoder"),
            device: string(m, "device").unwrap_or_default(),
        }),
        Some(("eval", m)) => eval::eval(&eval::EvalArgs {
            train: train_args(m, false),
            lora: path(m, "lora"),
        }),
        Some(("review", m)) => review::review(m),
        Some(("experiment", m)) => experiment::experiment(m),
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
            // One line, also for messages that span several (a hub error's download hint).
            let text = e.to_string();
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            eprintln!("error: {}", lines.join(" "));
            ExitCode::from(2)
        }
    }
}
