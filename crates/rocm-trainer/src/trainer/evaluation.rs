//! Evaluation of a [`RocmTrainer`]: fixed prompts × seeds, sampled without a graph and scored,
//! appended to `eval.jsonl` with a grid of the images.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_divergence::FDivergence;
use rocm_lora::LoraContainer;
use rocm_sampler::ConsistencyModel;

use super::{RocmTrainer, SAMPLES_DIR};
use crate::{Error, LatentReward, PromptEncoder};

impl<const D: usize, M, R, F, P> RocmTrainer<D, M, R, F, P>
where
    M: ConsistencyModel<D> + Module + LoraContainer,
    R: LatentReward<D>,
    F: FDivergence,
    P: PromptEncoder<M::Conditioning>,
{
    /// The evaluation pairs of the configuration: every `config.eval_prompts` × `config.eval_seeds`
    /// (prompt-major: all seeds of the first prompt first), as parallel lists.
    pub fn evaluation_pairs(&self) -> (Vec<String>, Vec<u64>) {
        let c = &self.config;
        c.eval_prompts
            .iter()
            .flat_map(|p| c.eval_seeds.iter().map(move |s| (p.clone(), *s)))
            .unzip()
    }

    /// Evaluates the configuration's prompts × seeds ([`RocmTrainer::evaluation_pairs`]):
    /// appends `{"step", "reward_mean", "rewards"}` to `<out>/eval.jsonl` and, for rewards with
    /// images ([`LatentReward::reward_with_images`]), writes their grid (rows = prompts,
    /// columns = seeds) to `<out>/samples/step-NNNNNN.png` ([`RocmTrainer::samples_path`]).
    /// Nothing without evaluation prompts or seeds.
    pub fn write_eval(&self, out: &Path) -> Result<(), Error> {
        use std::io::Write;
        let c = &self.config;
        if c.eval_prompts.is_empty() || c.eval_seeds.is_empty() {
            return Ok(());
        }
        let (prompts, seeds) = self.evaluation_pairs();
        let (rewards, images) = self.evaluate_with_images(&prompts, &seeds)?;
        let mean = rewards.iter().map(|r| f64::from(*r)).sum::<f64>() / rewards.len() as f64;
        let line = serde_json::json!({"step": self.step, "reward_mean": mean, "rewards": rewards});
        let path = out.join("eval.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(crate::error::io(&path))?;
        writeln!(file, "{line}").map_err(crate::error::io(&path))?;
        if let Some(images) = images {
            let grid = Self::samples_path(out, self.step);
            crate::images::write_grid(&grid, images, c.eval_seeds.len())?;
        }
        log::info!("step {}: evaluation reward {mean:.4}", self.step);
        Ok(())
    }

    /// `<out>/samples/step-NNNNNN.png`: the evaluation grid of `step`.
    pub fn samples_path(out: &Path, step: usize) -> PathBuf {
        out.join(SAMPLES_DIR).join(format!("step-{step:06}.png"))
    }

    /// The reward of each final latent for the given prompts and noise seeds (one sample per
    /// pair), sampled without a graph, with the configuration's steps and guidance and the
    /// adapters as they are (call it inside [`rocm_lora::with_adapters_disabled`] for the base).
    /// Returns `[reward_i]` in order.
    pub fn evaluate(&self, prompts: &[String], seeds: &[u64]) -> Result<Vec<f32>, Error> {
        Ok(self.evaluate_with_images(prompts, seeds)?.0)
    }

    /// [`RocmTrainer::evaluate`], with the scored images when the reward has them
    /// ([`LatentReward::reward_with_images`]): `[prompts.len(), 3, H, W]` in `[0, 1]`.
    pub fn evaluate_with_images(
        &self,
        prompts: &[String],
        seeds: &[u64],
    ) -> Result<(Vec<f32>, Option<Tensor<4>>), Error> {
        let conditioning = self.encoder.encode(prompts);
        let trajectory = self
            .sampler
            .sample_no_grad(
                &self.model,
                &conditioning,
                self.batch_noise(seeds),
                &self.sampler_options().with_base(false),
            )
            .map_err(|source| Error::Sampler {
                step: self.step,
                source,
            })?;
        let latent = Tensor::<D>::from_data(trajectory.final_latent.into_data(), &self.device);
        let (r, images) = self.reward.reward_with_images(latent, prompts);
        let rewards = r
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        Ok((rewards, images))
    }
}
