//! The policy-gradient baselines' iteration (RLCM, DDPO, DPOK, D3PO; docs/baselines.md): sample
//! without gradient (the LCM sampler or DDIM), score, turn rewards into advantages, then one
//! optimizer step whose gradient spans every trained timestep of every micro-batch.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use rand::RngExt;
use rocm_sampler::{
    Branch, DdimSampler, DdimSamplerOptions, Sampler, SamplerNoise, SamplerOptions, Trajectory,
    gaussian_log_prob, per_sample_mean,
};

use super::{IterationGradients, RocmTrainer, RolloutSampler, TrainableModel};
use crate::algorithm::{AlgorithmKind, DpokKl, LastStep};
use crate::baselines::{StepLoss, d3po_step_loss, dpok_step_loss, ppo_step_loss};
use crate::{Error, NonFiniteValue, finite};

/// One stored transition `x_k → x_{k+1}` of a micro-batch, from the no-grad rollout.
pub(crate) struct Transition<const D: usize> {
    /// `k`.
    pub k: usize,
    /// `t_k`.
    pub timestep: usize,
    /// `x_k`, `[B, …]`.
    pub x: Tensor<D>,
    /// `x_{k+1}`, `[B, …]`.
    pub x_next: Tensor<D>,
    /// LCM sampler: `√ā_{t_next}`, the policy mean is `scale · f(x_k, t_k)` (DDIM: unused, its
    /// mean is the scheduler's).
    pub scale: f32,
    /// `σ_k = √(1 − ā_{t_next})`.
    pub std: f32,
    /// The log-prob of `x_{k+1}` under the sampling policy, `[B]`.
    pub lp_old: Tensor<1>,
}

/// The sampler of one micro-batch's policy with its options.
pub(crate) enum PolicyOptions<'a, C> {
    /// The LCM sampler's.
    Lcm(&'a Sampler, SamplerOptions<C>),
    /// DDIM's (η, classifier-free guidance with the micro-batch's empty-prompt branch).
    Ddim(&'a DdimSampler, DdimSamplerOptions<C>),
}

/// One micro-batch's rollout.
pub(crate) struct Rollout<const D: usize> {
    /// One prompt per sample.
    pub prompts: Vec<String>,
    /// The trained transitions.
    pub transitions: Vec<Transition<D>>,
    /// The reward of each sample's output.
    pub rewards: Vec<f32>,
}

/// One rank's share of a policy-gradient iteration's gradient and its sums.
#[derive(Debug)]
pub(crate) struct PolicyGradientShard {
    /// The rank's gradients (its share of the iteration's sum).
    pub grads: GradientsParams,
    /// `Σ weight · loss` over its transitions.
    pub loss_sum: f64,
    /// `Σ approx_kl` over its transitions.
    pub kl_sum: f64,
    /// `Σ clipfrac` over its transitions.
    pub clip_sum: f64,
    /// The per-step divergence, summed over its micro-batches (each a mean over the batch).
    pub div_sums: Vec<f64>,
}

/// A stream of seeds for the extra draw of RLCM's last transition, distinct from the sampler's.
const LAST_STEP_STREAM: u64 = 0x5eed_1a57_0000_0001;

impl<const D: usize, M: TrainableModel<D>> RocmTrainer<D, M> {
    /// Images per drawn prompt: 2 for D3PO's pairs, the configured count for RLCM and DPOK.
    pub(crate) fn samples_per_prompt(&self) -> usize {
        match self.config.algorithm {
            AlgorithmKind::Rlcm => self.config.rlcm.samples_per_prompt,
            AlgorithmKind::Ddpo => self.config.ddpo.samples_per_prompt,
            AlgorithmKind::Dpok => self.config.dpok.samples_per_prompt,
            AlgorithmKind::D3po => 2,
            AlgorithmKind::Rocm => 1,
        }
    }

    /// Samples one micro-batch without gradient and records its trained transitions.
    fn rollout(
        &self,
        step: usize,
        prompts: Vec<String>,
        seeds: &[(u64, u64)],
    ) -> Result<Rollout<D>, Error> {
        let conditioning = self.encoder.encode(&prompts);
        let noise = self.paired_noise(seeds);
        let sampled = match self.policy_options(prompts.len()) {
            PolicyOptions::Lcm(s, o) => s.sample_no_grad(&self.model, &conditioning, noise, &o),
            PolicyOptions::Ddim(s, o) => s.sample_no_grad(&self.model, &conditioning, noise, &o),
        };
        let trajectory: Trajectory<D> =
            sampled.map_err(|source| Error::Sampler { step, source })?;
        let steps = &trajectory.steps;
        let mut transitions = Vec::with_capacity(steps.len());
        for (k, s) in steps.iter().enumerate() {
            let Some(policy) = &s.policy else { continue };
            // DDIM's last step is a transition too: its `x_{k+1}` is the output.
            let x_next = steps
                .get(k + 1)
                .map_or(&trajectory.final_latent, |n| &n.latent)
                .clone();
            transitions.push(Transition {
                k,
                timestep: s.timestep,
                lp_old: gaussian_log_prob(x_next.clone(), policy.mean.clone(), policy.std),
                x: s.latent.clone(),
                x_next,
                scale: policy.alpha_cumprod_next.sqrt(),
                std: policy.std,
            });
        }
        let faithful = self.config.algorithm == AlgorithmKind::Rlcm
            && self.config.rlcm.last_step == LastStep::RlcmFaithful;
        if faithful && let Some(last) = steps.last() {
            // RLCM's scheduler re-noises the last output at its own timestep (`t_next = t`).
            let (scale, std) = self
                .lcm_sampler()?
                .scheduler
                .transition_scales(last.timestep);
            let z: Vec<Tensor<D>> = seeds
                .iter()
                .map(|&(_, s)| {
                    SamplerNoise::from_seed(
                        self.latent_shape,
                        1,
                        s ^ LAST_STEP_STREAM,
                        &self.device,
                    )
                    .initial
                })
                .collect();
            let z = Tensor::cat(z, 0).inner();
            let mean = last.denoised.clone() * scale;
            let x_next = mean.clone() + z * std;
            transitions.push(Transition {
                k: last.index,
                timestep: last.timestep,
                lp_old: gaussian_log_prob(x_next.clone(), mean, std),
                x: last.latent.clone(),
                x_next,
                scale,
                std,
            });
        }
        let latent =
            Tensor::<D>::from_data(trajectory.final_latent.clone().into_data(), &self.device);
        let rewards = host(self.reward.reward(latent, &prompts));
        let wide: Vec<f64> = rewards.iter().map(|&r| f64::from(r)).collect();
        if !finite::step_is_finite(&trajectory, &wide, 0.0) {
            let (what, value) = finite::culprit(&self.model, &trajectory, &wide, None);
            return Err(Error::NonFinite { step, what, value });
        }
        Ok(Rollout {
            prompts,
            transitions,
            rewards,
        })
    }

    /// The options of a micro-batch of `n` samples, without the base record: the rollout's and
    /// the recomputed transitions' (the same guidance, so that the ratio is 1 before an update).
    fn policy_options(&self, n: usize) -> PolicyOptions<'_, M::Conditioning> {
        match &self.sampler {
            RolloutSampler::Lcm(s) => {
                PolicyOptions::Lcm(s, self.sampler_options().with_base(false))
            }
            RolloutSampler::Ddim(s) => PolicyOptions::Ddim(s, self.ddim_options(n)),
        }
    }

    /// One network's policy at a stored state, with a graph on the policy branch: the raw
    /// (guided) output — ε̂ for DDIM — and the mean of `x_{k+1}`.
    fn transition_mean(
        &self,
        options: &PolicyOptions<'_, M::Conditioning>,
        tr: &Transition<D>,
        x: Tensor<D>,
        conditioning: &M::Conditioning,
        branch: Branch,
    ) -> (Tensor<D>, Tensor<D>) {
        match options {
            PolicyOptions::Ddim(s, o) => {
                let out = s.step_state(&self.model, conditioning, o, tr.timestep, x, branch);
                (out.pred_epsilon, out.mean)
            }
            PolicyOptions::Lcm(s, o) => {
                let prediction =
                    o.guidance
                        .predict(&self.model, x.clone(), tr.timestep, conditioning, branch);
                let raw = prediction.output.clone();
                (
                    raw,
                    s.scheduler.denoise(prediction, tr.timestep, x) * tr.scale,
                )
            }
        }
    }

    /// The averaged gradients of a policy-gradient iteration (RLCM, DDPO, DPOK, D3PO).
    pub(crate) fn policy_gradient_iteration(&mut self) -> Result<IterationGradients, Error> {
        let step = self.step + 1;
        let (b, micro) = (
            self.config.batch_size,
            self.config.gradient_accumulation_steps,
        );
        let draws = self.draw_policy_gradient(micro, b);
        let rollouts = self.rollouts(step, &draws)?;
        let all_prompts: Vec<String> = rollouts.iter().flat_map(|r| r.prompts.clone()).collect();
        let all_rewards: Vec<f32> = rollouts.iter().flat_map(|r| r.rewards.clone()).collect();
        let advantages = self.advantages(&all_prompts, &all_rewards);
        let trained: usize = rollouts.iter().map(|r| r.transitions.len()).sum();
        let weight = 1.0 / trained.max(1) as f64;
        let shard = self.policy_gradient_shard(&rollouts, &advantages, weight)?;
        self.policy_gradient_summary(step, shard, &all_rewards, trained, micro)
    }

    /// The prompts and seeds of `micro` micro-batches of `prompts_per_micro` prompts from the
    /// run's RNG: per prompt its samples ([`RocmTrainer::samples_per_prompt`]), D3PO's pair
    /// sharing its initial latent.
    pub(crate) fn draw_policy_gradient(
        &mut self,
        micro: usize,
        prompts_per_micro: usize,
    ) -> Vec<Vec<(String, (u64, u64))>> {
        let per_prompt = self.samples_per_prompt();
        let d3po = self.config.algorithm == AlgorithmKind::D3po;
        let mut draws = Vec::with_capacity(micro);
        for _ in 0..micro {
            let mut chunk = Vec::with_capacity(prompts_per_micro * per_prompt);
            for _ in 0..prompts_per_micro {
                let prompt = self.prompts[self.rng.random_range(0..self.prompts.len())].clone();
                let shared: u64 = self.rng.random();
                for _ in 0..per_prompt {
                    let own: u64 = self.rng.random();
                    let seeds = if d3po { (shared, own) } else { (own, own) };
                    chunk.push((prompt.clone(), seeds));
                }
            }
            draws.push(chunk);
        }
        draws
    }

    /// The no-grad rollouts of micro-batches of (prompt, seeds), in order.
    pub(crate) fn rollouts(
        &self,
        step: usize,
        draws: &[Vec<(String, (u64, u64))>],
    ) -> Result<Vec<Rollout<D>>, Error> {
        draws
            .iter()
            .map(|chunk| {
                let prompts = chunk.iter().map(|(p, _)| p.clone()).collect();
                let seeds: Vec<(u64, u64)> = chunk.iter().map(|(_, s)| *s).collect();
                self.rollout(step, prompts, &seeds)
            })
            .collect()
    }

    /// The gradient of `rollouts`' transitions, each loss weighted by `weight` (one over the
    /// iteration's trained transitions), given the rollouts' advantages in order.
    pub(crate) fn policy_gradient_shard(
        &self,
        rollouts: &[Rollout<D>],
        advantages: &[f32],
        weight: f64,
    ) -> Result<PolicyGradientShard, Error> {
        let mut acc = GradientsAccumulator::<M>::new();
        let (mut loss_sum, mut kl_sum, mut clip_sum) = (0.0, 0.0, 0.0);
        let mut div_sums = vec![0.0f64; self.config.num_steps];
        let mut offset = 0;
        for rollout in rollouts {
            let n = rollout.rewards.len();
            let adv = &advantages[offset..offset + n];
            offset += n;
            let conditioning = self.encoder.encode(&rollout.prompts);
            let options = self.policy_options(rollout.prompts.len());
            for tr in &rollout.transitions {
                let (out, divergence) = self.step_loss(&options, tr, &conditioning, adv)?;
                if let Some(d) = divergence {
                    div_sums[tr.k] += d;
                }
                let loss = out.loss * weight;
                loss_sum += f64::from(loss.clone().into_scalar::<f32>());
                kl_sum += out.approx_kl;
                clip_sum += out.clipfrac;
                let grads = GradientsParams::from_grads(loss.backward(), &self.model);
                acc.accumulate(&self.model, grads);
            }
        }
        Ok(PolicyGradientShard {
            grads: acc.grads(),
            loss_sum,
            kl_sum,
            clip_sum,
            div_sums,
        })
    }

    /// The iteration's [`IterationGradients`] from the (summed) shards, the batch's rewards,
    /// its trained transitions and its `micro_batches` (equal-sized) micro-batches.
    pub(crate) fn policy_gradient_summary(
        &self,
        step: usize,
        shard: PolicyGradientShard,
        all_rewards: &[f32],
        trained: usize,
        micro_batches: usize,
    ) -> Result<IterationGradients, Error> {
        let PolicyGradientShard {
            grads,
            loss_sum,
            kl_sum,
            clip_sum,
            div_sums,
        } = shard;
        if !loss_sum.is_finite() {
            return Err(Error::NonFinite {
                step,
                what: NonFiniteValue::Loss,
                value: loss_sum,
            });
        }
        let n = all_rewards.len().max(1) as f64;
        let reward_mean = all_rewards.iter().map(|r| f64::from(*r)).sum::<f64>() / n;
        let var = all_rewards
            .iter()
            .map(|r| (f64::from(*r) - reward_mean).powi(2))
            .sum::<f64>()
            / n;
        // At η > 0 every DDIM step is a policy (the last one when `set_alpha_to_one = false`, as
        // SD's; otherwise its entry stays 0); the LCM sampler's last step is deterministic.
        let steps_with_policy = match self.sampler {
            RolloutSampler::Ddim(_) => self.config.num_steps,
            RolloutSampler::Lcm(_) => self.config.num_steps.saturating_sub(1),
        };
        let divergence_per_step = if self.config.algorithm.is_ppo() {
            Vec::new()
        } else {
            div_sums[..steps_with_policy]
                .iter()
                .map(|d| d / micro_batches as f64)
                .collect()
        };
        Ok(IterationGradients {
            grads,
            loss: loss_sum,
            reward_mean,
            reward_std: var.sqrt(),
            divergence_per_step,
            approx_kl: kl_sum / trained.max(1) as f64,
            clipfrac: clip_sum / trained.max(1) as f64,
            reward_queries: all_rewards.len(),
            images_sampled: all_rewards.len(),
        })
    }

    /// Advantages of the whole batch: RLCM's per-prompt z-scores, DPOK's reward minus the
    /// per-prompt running mean, D3PO's pair preferences (`+1`, `−1`, `0` per pair, repeated
    /// for both members: only the first of each pair is read).
    pub(crate) fn advantages(&mut self, prompts: &[String], rewards: &[f32]) -> Vec<f32> {
        match self.config.algorithm {
            AlgorithmKind::Rlcm | AlgorithmKind::Ddpo => self.tracker.update(prompts, rewards),
            AlgorithmKind::Dpok => {
                self.tracker.record(prompts, rewards);
                prompts
                    .iter()
                    .zip(rewards)
                    .map(|(p, r)| {
                        let m = self.tracker.mean(p).unwrap_or(f64::from(*r));
                        (f64::from(*r) - m) as f32
                    })
                    .collect()
            }
            AlgorithmKind::D3po => rewards
                .chunks(2)
                .flat_map(|pair| {
                    let h = match pair {
                        [a, b] if a > b => 1.0,
                        [a, b] if a < b => -1.0,
                        _ => 0.0,
                    };
                    [h, h]
                })
                .collect(),
            AlgorithmKind::Rocm => vec![0.0; rewards.len()],
        }
    }

    /// The loss of one stored transition, with the step's divergence to the base where the
    /// algorithm computes the base (DPOK's KL term, D3PO's reference).
    fn step_loss(
        &self,
        options: &PolicyOptions<'_, M::Conditioning>,
        tr: &Transition<D>,
        conditioning: &M::Conditioning,
        adv: &[f32],
    ) -> Result<(StepLoss, Option<f64>), Error> {
        let device = &self.device;
        let x = Tensor::<D>::from_data(tr.x.clone().into_data(), device);
        let x_next = Tensor::<D>::from_data(tr.x_next.clone().into_data(), device);
        let lp_old = Tensor::<1>::from_data(tr.lp_old.clone().into_data(), device);
        let (raw, mean) =
            self.transition_mean(options, tr, x.clone(), conditioning, Branch::Policy);
        let lp = gaussian_log_prob(x_next.clone(), mean.clone(), tr.std);
        let adv_t = Tensor::<1>::from_data(TensorData::new(adv.to_vec(), [adv.len()]), device);
        let base = || {
            let (raw, mean) =
                self.transition_mean(options, tr, x.clone().detach(), conditioning, Branch::Base);
            (raw.detach(), mean.detach())
        };
        // `mean_N (μ − μ_ref)² / (2σ²)`: the per-element KL of the step, for the metrics.
        let exact_kl = |mean_ref: Tensor<D>| {
            per_sample_mean((mean.clone() - mean_ref).square()) / (2.0 * f64::from(tr.std).powi(2))
        };
        let c = &self.config;
        Ok(match c.algorithm {
            AlgorithmKind::Rlcm | AlgorithmKind::Rocm => (
                ppo_step_loss(lp, lp_old, adv_t, c.rlcm.clip_range, c.rlcm.adv_clip_max),
                None,
            ),
            AlgorithmKind::Ddpo => (
                ppo_step_loss(lp, lp_old, adv_t, c.ddpo.clip_range, c.ddpo.adv_clip_max),
                None,
            ),
            AlgorithmKind::Dpok => {
                let (raw_ref, mean_ref) = base();
                let exact = exact_kl(mean_ref);
                let kl = match c.dpok.kl {
                    DpokKl::EpsSq => per_sample_mean((raw - raw_ref).square()),
                    DpokKl::Exact => exact.clone(),
                };
                let d = host_mean(exact);
                let out = dpok_step_loss(
                    lp,
                    lp_old,
                    adv_t,
                    kl,
                    c.dpok.reward_weight,
                    c.dpok.kl_weight,
                    c.dpok.ratio_clip,
                );
                (out, Some(d))
            }
            AlgorithmKind::D3po => {
                let (_, mean_ref) = base();
                let d = host_mean(exact_kl(mean_ref.clone()));
                let lp_ref = gaussian_log_prob(x_next, mean_ref, tr.std);
                let pairs: Vec<f32> = adv.iter().step_by(2).copied().collect();
                let preference =
                    Tensor::<1>::from_data(TensorData::new(pairs.clone(), [pairs.len()]), device);
                let out = d3po_step_loss(lp, lp_ref, lp_old, preference, c.d3po.beta, c.d3po.eps);
                (out, Some(d))
            }
        })
    }
}

/// A `[B]` tensor on the host.
fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// The mean of a `[B]` tensor on the host.
fn host_mean(t: Tensor<1>) -> f64 {
    let v = host(t.detach());
    v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len().max(1) as f64
}
