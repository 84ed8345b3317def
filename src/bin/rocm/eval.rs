//! `rocm eval`: the configuration's evaluation prompts × seeds, scored with the base model and
//! with LoRA adapters, as one JSON line.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm::divergence::FDivergence;
use rocm::lora::{LoraContainer, with_adapters_disabled};
use rocm::sampler::ConsistencyModel;
use rocm::trainer::toy::ProxyX;
use rocm::trainer::{LatentReward, PromptEncoder, RocmTrainer, TrainConfig, checkpoint};
use serde_json::json;

use crate::Failure;
use crate::train::{Adapters, TrainArgs, check_lora, pipeline_trainer, toy_trainer};

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
    let mut config = TrainConfig::load(path)?;
    let toy = config.pretrained_model == "toy";
    if toy && config.eval_prompts.is_empty() {
        config.eval_prompts = vec![String::new()]; // the toy is unconditional
    }
    if config.eval_prompts.is_empty() || config.eval_seeds.is_empty() {
        return Err(format!(
            "{}: nothing to evaluate: set `eval_prompts` and `eval_seeds`",
            path.display()
        )
        .into());
    }
    let lora = match &args.lora {
        Some(lora) => {
            check_lora(lora)?;
            Some(lora.clone())
        }
        None => checkpoint::latest_checkpoint(&config.output_dir.join("checkpoints"))?,
    };
    let adapters = Adapters::Load(lora.as_deref());
    let result = if toy {
        let (trainer, _) = toy_trainer(config, &args.train, adapters)?;
        scores(&trainer, LatentReward::<2>::name(&ProxyX), lora.as_deref())?
    } else {
        let prompts = config.eval_prompts.clone();
        let name = config.reward.clone();
        let (trainer, _) = pipeline_trainer(config, prompts, &args.train, adapters)?;
        scores(&trainer, &name, lora.as_deref())?
    };
    println!("{result}");
    Ok(())
}

/// The JSON line: the base rewards (adapters off) and, with `lora`, the adapted ones.
fn scores<const D: usize, M, R, F, P>(
    trainer: &RocmTrainer<D, M, R, F, P>,
    reward: &str,
    lora: Option<&Path>,
) -> Result<String, Failure>
where
    M: ConsistencyModel<D> + Module + LoraContainer,
    R: LatentReward<D>,
    F: FDivergence,
    P: PromptEncoder<<M as ConsistencyModel<D>>::Conditioning>,
{
    let (prompts, seeds) = trainer.evaluation_pairs();
    eprintln!("evaluating the base model on {} samples", prompts.len());
    let base = with_adapters_disabled(|| trainer.evaluate(&prompts, &seeds))?;
    let mut fields = vec![
        ("reward", json!(reward)),
        ("n", json!(base.len())),
        ("base_mean", json!(mean(&base))),
        ("base", json!(base)),
    ];
    if let Some(lora) = lora {
        eprintln!("evaluating with the adapters of {}", lora.display());
        let tuned = trainer.evaluate(&prompts, &seeds)?;
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
