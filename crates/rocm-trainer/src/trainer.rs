//! [`RocmTrainer`]: the paper's Algorithm 2 (docs/method.md §5).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::{RngExt, rngs::ChaCha8Rng};
use rocm_divergence::{BoxedDivergence, Reduction};
use rocm_sampler::{
    ConsistencyModel, DdimSampler, DdimSamplerOptions, GradientMode, Guidance, Sampler,
    SamplerNoise, SamplerOptions,
};

mod builder;
mod evaluation;
mod parallel;
mod policy_gradient;
mod resume;

pub use builder::{MissingPart, TrainerBuilder};
pub(crate) use policy_gradient::{PolicyGradientShard, Rollout};

use crate::objective::{RocmObjective, step_divergence};
use crate::{
    Error, GuidanceKind, IterationMetrics, LatentReward, MetricsWriter, NonFiniteValue,
    PromptEncoder, TrainConfig, finite, grads,
};

/// What a model needs to be trained by [`RocmTrainer`]: a [`ConsistencyModel`] that is also a
/// Burn [`Module`] (so its adapter parameters can be optimised). Every such type is one; the
/// name only bundles the bounds. Checkpoints additionally need [`rocm_lora::LoraContainer`].
pub trait TrainableModel<const D: usize>: ConsistencyModel<D> + Module {}

impl<const D: usize, M: ConsistencyModel<D> + Module> TrainableModel<D> for M {}

/// A boxed [`LatentReward`], as the trainer holds it.
pub type BoxedReward<const D: usize> = Box<dyn LatentReward<D>>;

/// A boxed [`PromptEncoder`] of a model's conditioning, as the trainer holds it.
pub type BoxedEncoder<C> = Box<dyn PromptEncoder<C>>;

/// The ROCM training loop: reward optimisation of a LoRA-adapted consistency model by
/// back-propagating through the whole `K`-step sampler, regularised by an f-divergence to the
/// frozen base (docs/method.md §3, §5).
///
/// One [`RocmTrainer::train_iteration`] is one optimizer update:
///
/// ```text
/// draw B·A (prompt, noise seed) pairs from the run's ChaCha8 RNG     (A = accumulation steps)
/// for each of the A micro-batches of B:
///     c = encode(prompts)                                               (frozen, no grad)
///     roll out x_0 → x_K with gradients (Sampler::gradients, plain or per-step checkpointed)
///     loss = −mean_b R(x_K) + β mean_b Σ_{k<K−1} D(π_θ(·|x_k) ‖ π_ref(·|x_k))
///     accumulate ∂loss/∂θ
/// average the A gradients; clip their global norm; AdamW step at the scheduled rate
/// ```
///
/// The reference policy is the model's `predict_base` (adapters off) on the policy's own state,
/// detached. The model must be a [`Module`] whose only trainable (`require_grad`) parameters
/// are its LoRA adapters ([`rocm_lora::apply_lora`] freezes the rest), living on an autodiff
/// `device`. Sample noise is drawn per sample on the host (`SamplerNoise::from_seed` with a
/// per-sample seed), so a batch of `B·A` equals `A` micro-batches of `B`, and a run is
/// deterministic on CPU.
///
/// Build one with [`RocmTrainer::builder`]: every part it needs is named there, and a missing
/// one is an error rather than a default.
pub struct RocmTrainer<const D: usize, M: TrainableModel<D>> {
    model: M,
    reward: BoxedReward<D>,
    divergence: BoxedDivergence,
    encoder: BoxedEncoder<M::Conditioning>,
    prompts: Vec<String>,
    unconditional: bool,
    /// The per-prompt reward statistics of RLCM (advantages) and DPOK (baseline).
    tracker: crate::PerPromptStatTracker,
    latent_shape: [usize; D],
    config: TrainConfig,
    sampler: RolloutSampler,
    optimizer: ModuleOptimizer,
    rng: ChaCha8Rng,
    step: usize,
    device: Device,
    /// Ranks 1 to N − 1 of a data-parallel run ([`RocmTrainer::with_replicas`]).
    replicas: Option<crate::parallel::Replicas>,
    /// Image rewards scored at evaluation only ([`RocmTrainer::with_held_out`]).
    held_out: Vec<Box<dyn rocm_rewards::RewardModel>>,
}

/// The averaged gradients of one iteration, before clipping, and what the rollouts measured.
#[derive(Debug)]
pub struct IterationGradients {
    /// `∂loss/∂θ` of every adapter parameter, averaged over the micro-batches.
    pub grads: GradientsParams,
    /// The loss, averaged over the micro-batches.
    pub loss: f64,
    /// `mean_b R(x_K)` over the whole batch.
    pub reward_mean: f64,
    /// The population standard deviation of the batch's rewards.
    pub reward_std: f64,
    /// `mean_b D_k` of every non-final step, without β (empty for RLCM, which never evaluates
    /// the base).
    pub divergence_per_step: Vec<f64>,
    /// `½ mean (lp − lp_old)²` over the trained transitions (policy-gradient baselines; 0 for
    /// ROCM).
    pub approx_kl: f64,
    /// The fraction of trained transitions whose ratio left the clip window (baselines).
    pub clipfrac: f64,
    /// Reward-model evaluations this iteration.
    pub reward_queries: usize,
    /// Images (final latents) sampled this iteration.
    pub images_sampled: usize,
}

/// The sampler of a trainer's rollouts and evaluations ([`TrainConfig::sampler_kind`]).
#[derive(Clone, Debug)]
pub enum RolloutSampler {
    /// The multistep consistency sampler of an LCM.
    Lcm(Sampler),
    /// DDIM on a diffusion model (DDPO; DPOK and D3PO as their papers ran them).
    Ddim(DdimSampler),
}

/// The folder of the evaluation grids under the output directory.
pub const SAMPLES_DIR: &str = "samples";

/// The AdamW of a configuration (PyTorch's ε and weight decay by default, see [`TrainConfig`]).
pub fn adamw(config: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(config.adam_beta1)
        .with_beta_2(config.adam_beta2)
        .with_epsilon(config.adam_epsilon)
        .with_weight_decay(config.weight_decay)
        .init()
}

impl<const D: usize, M: TrainableModel<D>> RocmTrainer<D, M> {
    /// A builder for a trainer with `config` (see [`TrainerBuilder`]).
    pub fn builder(config: TrainConfig) -> TrainerBuilder<D, M> {
        TrainerBuilder::new(config)
    }

    /// The model being trained.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The name of the divergence being trained with (the configured one, or the custom one
    /// the builder was given).
    pub fn divergence_name(&self) -> &str {
        self.divergence.name()
    }

    /// The name of the reward being maximised.
    pub fn reward_name(&self) -> &str {
        self.reward.name()
    }

    /// The sampler (scheduler) of training and evaluation rollouts.
    pub fn sampler(&self) -> &RolloutSampler {
        &self.sampler
    }

    /// The LCM sampler, or an error naming the configured sampler (ROCM's own path).
    fn lcm_sampler(&self) -> Result<&Sampler, Error> {
        match &self.sampler {
            RolloutSampler::Lcm(s) => Ok(s),
            RolloutSampler::Ddim(_) => Err(Error::InvalidField {
                field: "sampler",
                message: format!(
                    "`{}` back-propagates through the consistency sampler; this run samples \
                     with `ddim`",
                    self.config.algorithm.name()
                ),
            }),
        }
    }

    /// The guidance of a batch of `n` samples: the configured kind, with the empty prompt's
    /// conditioning as classifier-free guidance's unconditional branch.
    pub fn guidance(&self, n: usize) -> Guidance<M::Conditioning> {
        let scale = self.config.guidance_scale;
        match self.config.guidance {
            GuidanceKind::Embedded => Guidance::embedded(scale),
            GuidanceKind::None => Guidance::None,
            GuidanceKind::ClassifierFree => Guidance::ClassifierFree {
                scale,
                unconditional: self.encoder.encode(&vec![String::new(); n]),
            },
        }
    }

    /// The DDIM options of a batch of `n` samples (`[train.ddim]`, the configured guidance).
    pub fn ddim_options(&self, n: usize) -> DdimSamplerOptions<M::Conditioning> {
        DdimSamplerOptions::new(self.config.num_steps)
            .with_eta(self.config.ddim.eta)
            .with_guidance(self.guidance(n))
            .with_concurrent(self.config.concurrent)
    }

    /// The noise draws per sample: `x` plus one per stochastic step (`K − 1` for the LCM
    /// sampler, `K` for DDIM).
    fn noise_draws(&self) -> usize {
        let k = self.config.num_steps;
        match self.sampler {
            RolloutSampler::Lcm(_) => k,
            RolloutSampler::Ddim(_) => k + 1,
        }
    }

    /// The training prompts (one empty prompt for an unconditional model).
    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// Whether the model is trained without prompts.
    pub fn is_unconditional(&self) -> bool {
        self.unconditional
    }

    /// `<output_dir>/checkpoints`.
    pub fn checkpoints_dir(&self) -> std::path::PathBuf {
        self.config.output_dir.join("checkpoints")
    }

    /// Iterations completed.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The sampler options of training rollouts (base recorded for the divergence).
    pub fn sampler_options(&self) -> SamplerOptions<M::Conditioning> {
        let guidance = match self.config.guidance {
            GuidanceKind::Embedded => Guidance::embedded(self.config.guidance_scale),
            GuidanceKind::None | GuidanceKind::ClassifierFree => Guidance::None,
        };
        let grad_steps = (self.config.backprop_steps > 0).then_some(self.config.backprop_steps);
        SamplerOptions::new(self.config.num_steps)
            .with_guidance(guidance)
            .with_base(true)
            .with_concurrent(self.config.concurrent)
            .with_grad_steps(grad_steps)
    }

    /// The noise of a batch: sample `i` is `SamplerNoise::from_seed(latent_shape, n, seeds[i])`
    /// with `n = K` draws for the LCM sampler and `K + 1` for DDIM.
    pub fn batch_noise(&self, seeds: &[u64]) -> SamplerNoise<D> {
        let pairs: Vec<(u64, u64)> = seeds.iter().map(|&s| (s, s)).collect();
        self.paired_noise(&pairs)
    }

    /// The noise of a batch whose sample `i` takes its initial latent from the stream of
    /// `seeds[i].0` and its re-noising draws from that of `seeds[i].1` (D3PO's pairs share the
    /// first); equal seeds give [`RocmTrainer::batch_noise`]'s sample.
    fn paired_noise(&self, seeds: &[(u64, u64)]) -> SamplerNoise<D> {
        let n = self.noise_draws();
        let draw = |seed| SamplerNoise::from_seed(self.latent_shape, n, seed, &self.device);
        let parts: Vec<SamplerNoise<D>> = seeds
            .iter()
            .map(|&(initial, steps)| {
                let a = draw(initial);
                if initial == steps {
                    return a;
                }
                SamplerNoise::new(a.initial, draw(steps).steps)
            })
            .collect();
        let initial = Tensor::cat(parts.iter().map(|p| p.initial.clone()).collect(), 0);
        let steps = (0..n.saturating_sub(1))
            .map(|j| Tensor::cat(parts.iter().map(|p| p.steps[j].clone()).collect(), 0))
            .collect();
        SamplerNoise::new(initial, steps)
    }

    /// The averaged gradients of the next iteration's loss (before clipping), drawing its
    /// prompts and noise from the run's RNG but not updating the model: the first half of
    /// [`RocmTrainer::train_iteration`]. With replicas ([`RocmTrainer::with_replicas`]) each
    /// rank computes its shard of the batch (docs/scaling.md).
    ///
    /// Errors when the sampler refuses the options, a weight, latent, reward or the loss is not
    /// finite ([`Error::NonFinite`] names the earliest culprit), or a replica fails.
    pub fn iteration_gradients(&mut self) -> Result<IterationGradients, Error> {
        if self.replicas.is_some() {
            return self.parallel_iteration_gradients();
        }
        if self.config.algorithm.is_policy_gradient() {
            return self.policy_gradient_iteration();
        }
        let step = self.step + 1;
        let (b, micro) = (
            self.config.batch_size,
            self.config.gradient_accumulation_steps,
        );
        let draws = self.draw_rocm(b * micro);
        let micro_batches: Vec<Vec<(String, u64)>> = draws.chunks(b).map(<[_]>::to_vec).collect();
        let scale = (micro > 1).then(|| 1.0 / micro as f64);
        let shard = self.rocm_shard(step, &micro_batches, scale)?;
        rocm_summary(step, shard, micro, b * micro)
    }

    /// `count` (prompt, noise seed) pairs of ROCM's batch from the run's RNG, in order.
    pub(crate) fn draw_rocm(&mut self, count: usize) -> Vec<(String, u64)> {
        (0..count)
            .map(|_| {
                let i = self.rng.random_range(0..self.prompts.len());
                (self.prompts[i].clone(), self.rng.random::<u64>())
            })
            .collect()
    }

    /// ROCM's gradients over `micro_batches` (each a list of (prompt, noise seed)), summed and
    /// multiplied by `scale` when given, with the loss, rewards and divergences they measured.
    pub(crate) fn rocm_shard(
        &self,
        step: usize,
        micro_batches: &[Vec<(String, u64)>],
        scale: Option<f64>,
    ) -> Result<RocmShard, Error> {
        let options = self.sampler_options();
        let reduction = Reduction::from(self.config.reduction);
        let mode = if self.config.gradient_checkpointing {
            GradientMode::Checkpointed
        } else {
            GradientMode::Plain
        };
        let mut acc = GradientsAccumulator::<M>::new();
        let (mut rewards, mut loss_sum) = (Vec::new(), 0.0f64);
        let mut div_sums = vec![0.0f64; self.config.num_steps.saturating_sub(1)];
        for chunk in micro_batches {
            let prompts: Vec<String> = chunk.iter().map(|(p, _)| p.clone()).collect();
            let seeds: Vec<u64> = chunk.iter().map(|(_, s)| *s).collect();
            let conditioning = self.encoder.encode(&prompts);
            let objective = RocmObjective {
                reward: self.reward.as_ref(),
                divergence: self.divergence.as_ref(),
                beta: self.config.beta,
                reduction,
                prompts: &prompts,
            };
            let out = self
                .lcm_sampler()?
                .gradients(
                    &self.model,
                    &conditioning,
                    self.batch_noise(&seeds),
                    &options,
                    &objective,
                    mode,
                )
                .map_err(|source| Error::Sampler { step, source })?;
            let chunk_loss = f64::from(out.loss.into_scalar::<f32>());
            let chunk_rewards: Vec<f64> = host_values(out.final_term)
                .into_iter()
                .map(|r| -r)
                .collect();
            if !finite::step_is_finite(&out.trajectory, &chunk_rewards, chunk_loss) {
                let (what, value) = finite::culprit(
                    &self.model,
                    &out.trajectory,
                    &chunk_rewards,
                    Some(chunk_loss),
                );
                return Err(Error::NonFinite { step, what, value });
            }
            loss_sum += chunk_loss;
            rewards.extend(chunk_rewards);
            for s in &out.trajectory.steps {
                let d = s
                    .policy
                    .as_ref()
                    .and_then(|p| step_divergence(self.divergence.as_ref(), p, reduction));
                if let Some(d) = d {
                    div_sums[s.index] += host_sum(d);
                }
            }
            acc.accumulate(&self.model, out.grads);
        }
        let mut grads = acc.grads();
        if let Some(factor) = scale {
            grads::scale_gradients(&self.model, &mut grads, factor);
        }
        Ok(RocmShard {
            grads,
            loss_sum,
            rewards,
            div_sums,
        })
    }

    /// Runs one iteration (one optimizer update) and returns its metrics.
    ///
    /// Errors (before touching the model or optimizer) when the sampler refuses the options or
    /// the loss or gradient norm is not finite.
    pub fn train_iteration(&mut self) -> Result<IterationMetrics, Error> {
        let start = Instant::now();
        let step = self.step + 1;
        let IterationGradients {
            mut grads,
            loss,
            reward_mean,
            reward_std,
            divergence_per_step,
            approx_kl,
            clipfrac,
            reward_queries,
            images_sampled,
        } = self.iteration_gradients()?;
        let grad_norm = grads::clip_global_norm(&self.model, &mut grads, self.config.max_grad_norm);
        if !grad_norm.is_finite() {
            return Err(Error::NonFinite {
                step,
                what: NonFiniteValue::GradNorm,
                value: grad_norm,
            });
        }
        let c = &self.config;
        let lr = c.lr_schedule.lr(
            c.learning_rate,
            self.step,
            c.iterations,
            c.warmup_steps,
            c.min_lr_ratio,
        );
        self.model = self.optimizer.step(lr, self.model.clone(), grads);
        self.step = step;
        let metrics = IterationMetrics {
            step,
            reward_mean,
            divergence_mean: divergence_per_step.iter().sum(),
            divergence_per_step,
            loss,
            grad_norm,
            lr,
            seconds: start.elapsed().as_secs_f64(),
            reward_std,
            approx_kl,
            clipfrac,
            reward_queries,
            images_sampled,
        };
        log::debug!("{metrics:?}");
        Ok(metrics)
    }
}

impl<const D: usize, M: TrainableModel<D> + rocm_lora::LoraContainer> RocmTrainer<D, M> {
    /// Trains until `config.iterations`, appending metrics to `<output_dir>/metrics.{jsonl,csv}`,
    /// evaluating every `config.eval_every` iterations (and at the end; see
    /// [`RocmTrainer::write_eval`]), checkpointing every `config.checkpoint_every` iterations
    /// (and at the end) under `<output_dir>/checkpoints`, and calling `on_iteration` after each
    /// iteration. A non-finite weight, latent, reward or loss stops the run with
    /// [`Error::NonFinite`] naming it; the last checkpoint stays. Evaluation draws nothing from
    /// the run's RNG, so it does not change training.
    pub fn run(
        &mut self,
        on_iteration: impl FnMut(&IterationMetrics),
    ) -> Result<Vec<IterationMetrics>, Error> {
        self.run_until(&AtomicBool::new(false), on_iteration)
    }

    /// [`RocmTrainer::run`] that also stops, after the iteration in progress and a checkpoint
    /// of it, once `stop` is set (a SIGINT/SIGTERM handler's flag); `--resume` continues from
    /// that checkpoint.
    pub fn run_until(
        &mut self,
        stop: &AtomicBool,
        mut on_iteration: impl FnMut(&IterationMetrics),
    ) -> Result<Vec<IterationMetrics>, Error> {
        let out = self.config.output_dir.clone();
        let mut writer = MetricsWriter::open(&out)?;
        let every = self.config.checkpoint_every;
        let mut all = Vec::new();
        if self.step == 0 && self.config.eval_every > 0 && self.config.eval_at_start {
            self.write_eval(&out)?;
        }
        while self.step < self.config.iterations {
            let m = self.train_iteration()?;
            writer.write(&m)?;
            on_iteration(&m);
            let eval_every = self.config.eval_every;
            let last = self.step == self.config.iterations;
            if eval_every > 0 && (self.step.is_multiple_of(eval_every) || last) {
                self.write_eval(&out)?;
            }
            let stopping = stop.load(Ordering::Relaxed);
            if (every > 0 && self.step.is_multiple_of(every))
                || self.step == self.config.iterations
                || stopping
            {
                self.save_checkpoint(&self.checkpoints_dir())?;
            }
            all.push(m);
            if stopping {
                break;
            }
        }
        Ok(all)
    }
}

/// The values of a `[B]` tensor, on the host in f64.
fn host_values(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
        .iter()
        .map(|v| f64::from(*v))
        .collect()
}

/// The sum of a `[B]` tensor, on the host in f64.
fn host_sum(t: Tensor<1>) -> f64 {
    host_values(t).iter().sum()
}

/// One rank's share of a ROCM iteration: its gradients (already scaled to its share of the
/// average), and what its rollouts measured.
#[derive(Debug)]
pub(crate) struct RocmShard {
    /// The rank's gradients.
    pub grads: GradientsParams,
    /// The sum of its micro-batches' losses (each a mean over the micro-batch).
    pub loss_sum: f64,
    /// The reward of each of its samples, in order.
    pub rewards: Vec<f64>,
    /// `Σ_b D_k` of every non-final step, summed over its micro-batches.
    pub div_sums: Vec<f64>,
}

/// A ROCM iteration's [`IterationGradients`] from the (summed) shards: `micro_batches` losses
/// of equal-sized micro-batches, `samples` samples in all.
pub(crate) fn rocm_summary(
    step: usize,
    shard: RocmShard,
    micro_batches: usize,
    samples: usize,
) -> Result<IterationGradients, Error> {
    let RocmShard {
        grads,
        loss_sum,
        rewards,
        div_sums,
    } = shard;
    let n = samples as f64;
    let loss = loss_sum / micro_batches as f64;
    let reward_mean = rewards.iter().sum::<f64>() / n;
    let reward_std = (rewards
        .iter()
        .map(|r| (r - reward_mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            step,
            what: NonFiniteValue::Loss,
            value: loss,
        });
    }
    Ok(IterationGradients {
        grads,
        loss,
        reward_mean,
        reward_std,
        divergence_per_step: div_sums.iter().map(|d| d / n).collect(),
        approx_kl: 0.0,
        clipfrac: 0.0,
        reward_queries: samples,
        images_sampled: samples,
    })
}
