//! Evaluation of a [`RocmTrainer`]: fixed prompts × seeds, sampled without a graph and scored,
//! appended to `eval.jsonl` with a grid of the images.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_rewards::RewardModel;
use rocm_sampler::{Base, Branch};

use super::{RocmTrainer, RolloutSampler, SAMPLES_DIR, TrainableModel};
use crate::Error;

impl<const D: usize, M: TrainableModel<D>> RocmTrainer<D, M> {
    /// The evaluation pairs of the configuration: every `config.eval_prompts` × `config.eval_seeds`
    /// (prompt-major: all seeds of the first prompt first), as parallel lists.
    pub fn evaluation_pairs(&self) -> (Vec<String>, Vec<u64>) {
        let c = &self.config;
        c.eval_prompts
            .iter()
            .flat_map(|p| c.eval_seeds.iter().map(move |s| (p.clone(), *s)))
            .unzip()
    }

    /// Adds image rewards that only evaluation scores: each evaluation also scores its images
    /// with every one of them and records them under `"held_out"` in `eval.jsonl` by
    /// [`RewardModel::name`] (the paper's protocol: the trained reward and the others, on the
    /// same images). They are never differentiated and do not change training. They need a
    /// reward with images ([`crate::LatentReward::reward_with_images`], e.g. a [`crate::DecodedReward`]);
    /// without images they are not scored.
    ///
    /// One of them may be the trained reward itself (scored again, so that every run of a grid
    /// has the same columns). Errors with [`Error::InvalidField`] when two share a name.
    pub fn with_held_out(mut self, rewards: Vec<Box<dyn RewardModel>>) -> Result<Self, Error> {
        let mut names: Vec<&str> = Vec::new();
        for r in &rewards {
            if names.contains(&r.name()) {
                return Err(Error::InvalidField {
                    field: "held_out",
                    message: format!("two evaluation rewards are named `{}`", r.name()),
                });
            }
            names.push(r.name());
        }
        self.held_out = rewards;
        Ok(self)
    }

    /// The names of the held-out rewards ([`RocmTrainer::with_held_out`]), in order.
    pub fn held_out_names(&self) -> Vec<&str> {
        self.held_out.iter().map(|r| r.name()).collect()
    }

    /// Evaluates the configuration's prompts × seeds ([`RocmTrainer::evaluation_pairs`]):
    /// appends `{"step", "reward_mean", "rewards", "held_out"}` to `<out>/eval.jsonl`, where
    /// `held_out` maps each held-out reward's name ([`RocmTrainer::with_held_out`]) to
    /// `{"mean", "values"}` on the same images, and, for rewards with
    /// images ([`crate::LatentReward::reward_with_images`]), writes their grid (rows = prompts,
    /// columns = seeds) to `<out>/samples/step-NNNNNN.png` ([`RocmTrainer::samples_path`]).
    /// Nothing without evaluation prompts or seeds. With replicas the pairs are sharded over the
    /// ranks and gathered in order.
    pub fn write_eval(&mut self, out: &Path) -> Result<(), Error> {
        use std::io::Write;
        if self.config.eval_prompts.is_empty() || self.config.eval_seeds.is_empty() {
            return Ok(());
        }
        let (prompts, seeds) = self.evaluation_pairs();
        let (rewards, images) = self.evaluate_sharded(&prompts, &seeds)?;
        let c = &self.config;
        let mean = rewards.iter().map(|r| f64::from(*r)).sum::<f64>() / rewards.len() as f64;
        let mut held_out = serde_json::Map::new();
        if let Some(images) = &images {
            for reward in &self.held_out {
                let values = reward
                    .reward(images.clone().detach(), &prompts)
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap_or_default();
                let m = values.iter().map(|v| f64::from(*v)).sum::<f64>() / values.len() as f64;
                log::info!("step {}: held-out {} {m:.4}", self.step, reward.name());
                held_out.insert(
                    reward.name().to_string(),
                    serde_json::json!({"mean": m, "values": values}),
                );
            }
        }
        let line = serde_json::json!({
            "step": self.step,
            "reward_mean": mean,
            "rewards": rewards,
            "held_out": held_out,
        });
        let path = out.join("eval.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(crate::error::io(&path))?;
        writeln!(file, "{line}").map_err(crate::error::io(&path))?;
        if let Some(images) = images {
            let grid = Self::samples_path(out, self.step);
            let seeds: Vec<String> = c.eval_seeds.iter().map(u64::to_string).collect();
            let header = format!(
                "step {}: rows = prompts, columns = seeds {}; {} reward, mean {mean:.4}",
                self.step,
                seeds.join(", "),
                self.reward_name()
            );
            let caption = crate::images::numbered_caption(header, "row", &c.eval_prompts);
            crate::images::write_grid(&grid, images, c.eval_seeds.len(), &caption)?;
        }
        log::info!("step {}: evaluation reward {mean:.4}", self.step);
        Ok(())
    }

    /// `<out>/samples/step-NNNNNN.png`: the evaluation grid of `step`.
    pub fn samples_path(out: &Path, step: usize) -> PathBuf {
        out.join(SAMPLES_DIR).join(format!("step-{step:06}.png"))
    }

    /// The reward of each final latent for the given prompts and noise seeds (one sample per
    /// pair), sampled without a graph with the configuration's sampler, steps and guidance, by the
    /// fine-tuned model ([`Branch::Policy`]) or its frozen base ([`Branch::Base`]: the model
    /// wrapped in [`Base`], whose every call switches the adapters off where it runs, also with
    /// `concurrent` sampling). Returns `[reward_i]` in order.
    pub fn evaluate(
        &self,
        branch: Branch,
        prompts: &[String],
        seeds: &[u64],
    ) -> Result<Vec<f32>, Error> {
        Ok(self.evaluate_with_images(branch, prompts, seeds)?.0)
    }

    /// [`RocmTrainer::evaluate`] of an unconditional model (built with
    /// [`crate::TrainerBuilder::unconditional`]): one sample per noise seed.
    ///
    /// Errors with [`Error::InvalidField`] on a model trained with prompts.
    pub fn evaluate_unconditional(&self, branch: Branch, seeds: &[u64]) -> Result<Vec<f32>, Error> {
        if !self.unconditional {
            return Err(Error::InvalidField {
                field: "prompts",
                message: "the model is conditioned on prompts: use `evaluate`".into(),
            });
        }
        let prompts = vec![String::new(); seeds.len()];
        self.evaluate(branch, &prompts, seeds)
    }

    /// The final latents `[prompts.len(), …]` of one sample per (prompt, seed) pair, sampled
    /// without a graph with the configuration's sampler, steps and guidance by the policy or its
    /// frozen base: what [`RocmTrainer::evaluate`] scores.
    pub fn sample_final_latents(
        &self,
        branch: Branch,
        prompts: &[String],
        seeds: &[u64],
    ) -> Result<Tensor<D>, Error> {
        let conditioning = self.encoder.encode(prompts);
        let noise = self.batch_noise(seeds).inner();
        // Without a graph: the inner-backend copy of the model, as `Sampler::sample_no_grad`.
        let model = self.model.valid();
        let trajectory = match &self.sampler {
            RolloutSampler::Lcm(sampler) => {
                let options = self.sampler_options().with_base(false);
                match branch {
                    Branch::Policy => sampler.sample(&model, &conditioning, noise, &options),
                    Branch::Base => sampler.sample(&Base(&model), &conditioning, noise, &options),
                }
            }
            RolloutSampler::Ddim(sampler) => {
                let options = self.ddim_options(prompts.len());
                match branch {
                    Branch::Policy => sampler.sample(&model, &conditioning, noise, &options),
                    Branch::Base => sampler.sample(&Base(&model), &conditioning, noise, &options),
                }
            }
        }
        .map_err(|source| Error::Sampler {
            step: self.step,
            source,
        })?;
        Ok(Tensor::<D>::from_data(
            trajectory.final_latent.into_data(),
            &self.device,
        ))
    }

    /// [`RocmTrainer::evaluate`], with the scored images when the reward has them
    /// ([`crate::LatentReward::reward_with_images`]): `[prompts.len(), 3, H, W]` in `[0, 1]`.
    pub fn evaluate_with_images(
        &self,
        branch: Branch,
        prompts: &[String],
        seeds: &[u64],
    ) -> Result<(Vec<f32>, Option<Tensor<4>>), Error> {
        let latent = self.sample_final_latents(branch, prompts, seeds)?;
        let (r, images) = self.reward.reward_with_images(latent, prompts);
        let rewards = r
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        Ok((rewards, images))
    }
}
