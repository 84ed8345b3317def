//! The `rocm` command line.
//!
//! ```text
//! rocm train --config configs/toy.toml [--resume] [--device flex]
//! ```
//!
//! `train` runs [`RocmTrainer::run`] on the configuration: metrics go to
//! `<output_dir>/metrics.{jsonl,csv}` (and `eval.jsonl`), checkpoints to
//! `<output_dir>/checkpoints/step-NNNNNN/` (LoRA in the diffusers layout + optimizer + RNG state);
//! `--resume` continues from the newest checkpoint exactly. For now the model must be the
//! embedded toy (`pretrained_model = "toy"`: the quickstart's 2-D point model, pretrained on the
//! spot, with the x-coordinate as reward); diffusers pipelines and the `sample` / `eval`
//! subcommands arrive with the models and rewards.

#![allow(clippy::print_stdout)] // a binary owns the terminal

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};
use rocm::lora::apply_lora;
use rocm::sampler::LcmScheduler;
use rocm::trainer::toy::{Mixture, ProxyX, ToyPointModelConfig, pretrain_denoiser};
use rocm::trainer::{RocmTrainer, TrainConfig, Unconditional, checkpoint};

type Failure = Box<dyn std::error::Error>;

fn cli() -> Command {
    Command::new("rocm")
        .about("ROCM: reward optimisation of consistency models")
        .subcommand_required(true)
        .subcommand(
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
                .arg(
                    Arg::new("device")
                        .long("device")
                        .default_value("flex")
                        .help("flex (CPU), wgpu, cuda[:N]"),
                ),
        )
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let result = match matches.subcommand() {
        Some(("train", m)) => {
            let config = m.get_one::<PathBuf>("config").cloned().unwrap_or_default();
            let device = m.get_one::<String>("device").cloned().unwrap_or_default();
            train(&config, m.get_flag("resume"), &device)
        }
        _ => Err("unknown subcommand".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn train(path: &Path, resume: bool, device: &str) -> Result<(), Failure> {
    let config = TrainConfig::load(path)?;
    if config.pretrained_model != "toy" {
        return Err(format!(
            "{}: pretrained_model `{}`: only the embedded `toy` model can be trained from the \
             command line so far",
            path.display(),
            config.pretrained_model
        )
        .into());
    }
    let (device, backend) = rocm::select_device(device)?;
    let device = device.autodiff();
    let untrained = ToyPointModelConfig::new().init_seeded(0, &device);
    let data = Mixture::ring(8, 2.0, 0.25);
    let mut model = pretrain_denoiser(
        untrained,
        &data,
        &LcmScheduler::default(),
        600,
        512,
        1,
        &device,
    );
    apply_lora(&mut model, &config.lora.to_lora_config())?;
    let divergence = config.divergence()?;
    let prompts = vec![String::new()];
    let mut trainer = RocmTrainer::new(
        model,
        ProxyX,
        divergence,
        Unconditional,
        prompts,
        [1, 2],
        config,
        device,
    )?;
    if resume {
        let root = trainer.checkpoints_dir();
        match checkpoint::latest_checkpoint(&root)? {
            Some(dir) => {
                trainer.resume(&dir)?;
                println!("resumed from {} at step {}", dir.display(), trainer.step());
            }
            None => println!("no checkpoint under {}: starting at step 0", root.display()),
        }
    }
    let total = trainer.config().iterations;
    println!("training on {backend}: {total} iterations");
    trainer.run(|m| {
        println!(
            "step {:>5}/{total}  reward {:+.4}  divergence {:.4}  loss {:+.4}  grad norm {:.3}  \
             lr {:.2e}  {:.3} s",
            m.step, m.reward_mean, m.divergence_mean, m.loss, m.grad_norm, m.lr, m.seconds
        );
    })?;
    let out = &trainer.config().output_dir;
    println!(
        "wrote {0}/metrics.jsonl, {0}/metrics.csv and checkpoints under {1}",
        out.display(),
        trainer.checkpoints_dir().display()
    );
    Ok(())
}
