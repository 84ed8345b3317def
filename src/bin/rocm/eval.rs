//! `rocm eval`: the configuration's evaluation prompts × seeds, scored with the base model and
//! with LoRA adapters, as one JSON line.

use std::path::{Path, PathBuf};

use rocm::run::{Adapters, ModelSource, Run};
use rocm::sampler::Branch;
use rocm::trainer::{RocmTrainer, TrainableModel, checkpoint};
use serde_json::json;

use crate::Failure;
use crate::train::{TrainArgs, check_lora};

/// What `rocm eval` was asked to do.
pub struct EvalArgs {
    /// The configuration, device and reward model, as for `rocm train` (`resume` unused).
    pub train: TrainArgs,
    /// The adapters: a `.safetensors` file or a checkpoint folder (default: the newest
    /// checkpoint under the configuration's `output_dir`, if any).
    pub lora: Option<PathBuf>,
}

/// Runs `rocm eval` and prints its JSON line.
pub fn eval(args: &EvalArgs) -> Result<(), Failure> {
    let path = &args.train.config;
    let mut config = args.train.run_config()?;
    let train = &mut config.train;
    if config.model == ModelSource::Toy && train.eval_prompts.is_empty() {
        train.eval_prompts = vec![String::new()]; // the toy is unconditional
    }
    if train.eval_prompts.is_empty() || train.eval_seeds.is_empty() {
        return Err(format!(
            "{}: nothing to evaluate: set `train.eval_prompts` and `train.eval_seeds`",
            path.display()
        )
        .into());
    }
    let lora = match &args.lora {
        Some(lora) => {
            check_lora(lora)?;
            Some(lora.clone())
        }
        None => checkpoint::latest_checkpoint(&train.output_dir.join("checkpoints"))?,
    };
    let built = args.train.build(&config, Adapters::Load(lora.as_deref()))?;
    let result = match &built.run {
        Run::Toy(trainer) => scores(trainer, lora.as_deref())?,
        Run::Pipeline(trainer) => scores(trainer, lora.as_deref())?,
    };
    println!("{result}");
    Ok(())
}

/// The JSON line: the base rewards (adapters off) and, with `lora`, the adapted ones.
fn scores<const D: usize, M: TrainableModel<D>>(
    trainer: &RocmTrainer<D, M>,
    lora: Option<&Path>,
) -> Result<String, Failure> {
    let (prompts, seeds) = trainer.evaluation_pairs();
    let reward = trainer.reward_name();
    eprintln!("evaluating the base model on {} samples", prompts.len());
    let base = trainer.evaluate(Branch::Base, &prompts, &seeds)?;
    let mut fields = vec![
        ("reward", json!(reward)),
        ("n", json!(base.len())),
        ("base_mean", json!(mean(&base))),
        ("base", json!(base)),
    ];
    if let Some(lora) = lora {
        eprintln!("evaluating with the adapters of {}", lora.display());
        let tuned = trainer.evaluate(Branch::Policy, &prompts, &seeds)?;
        fields.extend([
            ("lora_mean", json!(mean(&tuned))),
            ("lora", json!(tuned)),
            ("lora_path", json!(lora.display().to_string())),
        ]);
    }
    Ok(object_line(&fields))
}

/// A JSON object on one line with its fields in the given order (`serde_json`'s own map sorts
/// them).
fn object_line(fields: &[(&str, serde_json::Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", json!(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn mean(values: &[f32]) -> f64 {
    values.iter().map(|v| f64::from(*v)).sum::<f64>() / values.len().max(1) as f64
}
