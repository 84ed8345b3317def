//! ROCM against the policy-gradient baselines on the embedded 2-D toy, on the same budget.
//!
//! ```text
//! cargo run --release --example baselines_toy [-- --iterations 40 --batch 16 --lr 1e-3 --out DIR]
//! ```
//!
//! Every algorithm starts from the same pretrained toy ([`toy::pretrained`]) with the same LoRA
//! (r = 4, α = 8), the same learning rate, batch and iterations (the paper's rule "same lr and
//! batch for all methods"), K = 4, and maximises a bounded reward, `−‖x − (3, 0)‖²` (a target
//! just off the data's right-hand mode; its best value is 0); the evaluation is the mean reward
//! of 256 fixed-seed samples after every iteration. ROCM runs unregularised (β = 0, the same as
//! the baselines, so that only the gradient estimator differs) and with KL at β = 0.1, DRaFT-1 is
//! ROCM back-propagating through the last step only, and the baselines use their reference
//! defaults (`rocm_trainer::algorithm`). DDPO samples the same base with DDIM (η = 1, K = 4:
//! every step a Gaussian policy; the toy's ε-predictor is a diffusion model too), the others
//! with the LCM sampler.
//!
//! Writes `results.md` and `results.csv` (final reward, seconds, reward queries, and ROCM's
//! wall-clock to reach RLCM's final reward as a ratio of RLCM's), `curves.csv` and
//! `reward_vs_seconds.png`, in `target/baselines_toy/` (or `--out`).

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use clap::{Arg, Command, value_parser};
use rocm::lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm::sampler::Branch;
use rocm::trainer::algorithm::{AlgorithmKind, SamplerKind};
use rocm::trainer::toy::{self, ToyPointModel};
use rocm::trainer::{GuidanceKind, LatentReward, RocmTrainer, TrainConfig, plot};

/// The bounded toy reward: `−‖x − (3, 0)‖²`.
struct Target;

impl LatentReward<2> for Target {
    fn name(&self) -> &str {
        "target"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        let [b, _] = latent.dims();
        let target = Tensor::<2>::from_floats([[3.0, 0.0]], &latent.device());
        -(latent - target).square().sum_dim(1).reshape([b])
    }
}

/// One run of the comparison.
struct Method {
    name: &'static str,
    algorithm: AlgorithmKind,
    sampler: SamplerKind,
    beta: f64,
    backprop_steps: usize,
}

const METHODS: [Method; 7] = [
    Method {
        name: "ROCM (beta 0)",
        algorithm: AlgorithmKind::Rocm,
        sampler: SamplerKind::Lcm,
        beta: 0.0,
        backprop_steps: 0,
    },
    Method {
        name: "ROCM (KL, beta 0.1)",
        algorithm: AlgorithmKind::Rocm,
        sampler: SamplerKind::Lcm,
        beta: 0.1,
        backprop_steps: 0,
    },
    Method {
        name: "DRaFT-1 (beta 0)",
        algorithm: AlgorithmKind::Rocm,
        sampler: SamplerKind::Lcm,
        beta: 0.0,
        backprop_steps: 1,
    },
    Method {
        name: "RLCM",
        algorithm: AlgorithmKind::Rlcm,
        sampler: SamplerKind::Lcm,
        beta: 0.0,
        backprop_steps: 0,
    },
    Method {
        name: "DDPO (DDIM)",
        algorithm: AlgorithmKind::Ddpo,
        sampler: SamplerKind::Ddim,
        beta: 0.0,
        backprop_steps: 0,
    },
    Method {
        name: "DPOK",
        algorithm: AlgorithmKind::Dpok,
        sampler: SamplerKind::Lcm,
        beta: 0.0,
        backprop_steps: 0,
    },
    Method {
        name: "D3PO",
        algorithm: AlgorithmKind::D3po,
        sampler: SamplerKind::Lcm,
        beta: 0.0,
        backprop_steps: 0,
    },
];

/// `(cumulative seconds, cumulative reward queries, evaluation reward)` after each iteration;
/// the first point is the base model.
type Curve = Vec<(f64, usize, f64)>;

fn mean_reward(t: &RocmTrainer<2, ToyPointModel>) -> Result<f64, Box<dyn std::error::Error>> {
    let seeds: Vec<u64> = (1_000_000..1_000_256).collect();
    let r = t.evaluate_unconditional(Branch::Policy, &seeds)?;
    Ok(r.iter().map(|v| f64::from(*v)).sum::<f64>() / r.len() as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let matches = Command::new("baselines_toy")
        .about("ROCM against RLCM, DDPO, DPOK, D3PO and DRaFT-1 on the 2-D toy, same budget")
        .arg(
            Arg::new("iterations")
                .long("iterations")
                .default_value("40")
                .value_parser(value_parser!(usize)),
        )
        .arg(
            Arg::new("batch")
                .long("batch")
                .default_value("16")
                .value_parser(value_parser!(usize))
                .help("Prompts per iteration (baselines sample 2 images each)"),
        )
        .arg(
            Arg::new("lr")
                .long("lr")
                .default_value("1e-3")
                .value_parser(value_parser!(f64)),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .default_value("target/baselines_toy"),
        )
        .get_matches();
    let iterations = matches
        .get_one::<usize>("iterations")
        .copied()
        .unwrap_or(40);
    let batch = matches.get_one::<usize>("batch").copied().unwrap_or(16);
    let lr = matches.get_one::<f64>("lr").copied().unwrap_or(1e-3);
    let out = PathBuf::from(
        matches
            .get_one::<String>("out")
            .cloned()
            .unwrap_or_default(),
    );
    std::fs::create_dir_all(&out)?;
    let device = Device::flex().autodiff();
    let base = toy::pretrained(&device);

    let mut curves: Vec<(&str, Curve)> = Vec::new();
    for method in &METHODS {
        let mut model = base.clone();
        let lora = LoraConfig::new(4, 8.0, TargetModules::names(&model.all_layers()))
            .with_init_lora_weights(InitLoraWeights::Gaussian)
            .with_seed(2);
        apply_lora(&mut model, &lora)?;
        let config = TrainConfig {
            algorithm: method.algorithm,
            sampler: Some(method.sampler),
            beta: method.beta,
            backprop_steps: method.backprop_steps,
            num_steps: 4,
            guidance: GuidanceKind::None,
            batch_size: batch,
            learning_rate: lr,
            gradient_checkpointing: false,
            concurrent: false,
            iterations,
            seed: 3,
            ..TrainConfig::default()
        };
        let mut trainer = RocmTrainer::builder(config)
            .model(model)
            .reward(Target)
            .unconditional()
            .scheduler(toy::scheduler())
            .ddim_scheduler(toy::ddim_scheduler())
            .latent_shape([1, 2])
            .device(device.clone())
            .build()?;
        let mut curve = vec![(0.0, 0, mean_reward(&trainer)?)];
        let (mut seconds, mut queries) = (0.0, 0);
        for _ in 0..iterations {
            let start = Instant::now();
            let m = trainer.train_iteration()?;
            seconds += start.elapsed().as_secs_f64();
            queries += m.reward_queries;
            curve.push((seconds, queries, mean_reward(&trainer)?));
        }
        let last = curve.last().copied().unwrap_or_default();
        eprintln!(
            "{:<20} reward {:+.3} -> {:+.3} in {:.2} s, {} reward queries",
            method.name, curve[0].2, last.2, last.0, last.1
        );
        curves.push((method.name, curve));
    }

    // Time for unregularised ROCM to reach RLCM's final reward, as a ratio of RLCM's time.
    let final_of = |name: &str| {
        curves
            .iter()
            .find(|(n, _)| n.starts_with(name))
            .and_then(|(_, c)| c.last().copied())
    };
    let rlcm = final_of("RLCM");
    let rocm_curve = curves
        .iter()
        .find(|(n, _)| n.starts_with("ROCM (beta 0)"))
        .map(|(_, c)| c.clone());
    let ratio = match (rlcm, rocm_curve) {
        (Some((rlcm_s, _, rlcm_proxy)), Some(c)) => c
            .iter()
            .find(|p| p.2 >= rlcm_proxy)
            .map(|p| p.0 / rlcm_s.max(1e-9)),
        _ => None,
    };

    let mut md = format!(
        "# Baselines on the 2-D toy\n\n{iterations} iterations, {batch} prompts per iteration, \
         K = 4, LoRA r4/α8, lr {lr}; reward −‖x − (3, 0)‖² (best 0); evaluation: mean reward of \
         256 fixed-seed samples.\n\n\
         | method | reward before | reward after | seconds | reward queries |\n|---|---|---|---|---|\n"
    );
    let mut csv = String::from("method,reward_before,reward_after,seconds,reward_queries\n");
    let mut curves_csv = String::from("method,iteration,seconds,reward_queries,reward\n");
    for (name, c) in &curves {
        let (first, last) = (c[0], c.last().copied().unwrap_or_default());
        md.push_str(&format!(
            "| {name} | {:+.3} | {:+.3} | {:.2} | {} |\n",
            first.2, last.2, last.0, last.1
        ));
        csv.push_str(&format!(
            "{name},{},{},{},{}\n",
            first.2, last.2, last.0, last.1
        ));
        for (i, p) in c.iter().enumerate() {
            curves_csv.push_str(&format!("{name},{i},{},{},{}\n", p.0, p.1, p.2));
        }
    }
    match ratio {
        Some(r) => md.push_str(&format!(
            "\nROCM (β = 0) reached RLCM's final reward in {r:.3}× RLCM's wall-clock.\n"
        )),
        None => {
            md.push_str("\nROCM (β = 0) did not reach RLCM's final reward within the budget.\n")
        }
    }
    let series: Vec<plot::Series> = curves
        .iter()
        .map(|(name, c)| plot::Series::new(*name, c.iter().map(|p| (p.0, p.2)).collect()))
        .collect();
    let chart = plot::Chart::new(
        "Evaluation reward against training time, same budget",
        "wall-clock training time (s)",
        "mean reward of 256 samples (symlog scale)",
    );
    plot::curves(&out.join("reward_vs_seconds.png"), &chart.symlog(), &series)?;
    md.push_str(
        "\n`reward_vs_seconds.png`: evaluation reward against training seconds (symlog y axis), \
         one curve per method, named in the legend.\n",
    );
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(out.join("results.csv"), csv)?;
    std::fs::write(out.join("curves.csv"), curves_csv)?;
    println!("{md}");
    println!(
        "wrote {0}/results.md, {0}/results.csv, {0}/curves.csv, {0}/reward_vs_seconds.png",
        out.display()
    );
    Ok(())
}
