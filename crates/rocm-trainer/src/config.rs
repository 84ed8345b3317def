//! [`TrainConfig`]: every setting of the training loop, typed, read from TOML.
//!
//! Only what the trainer itself reads lives here; which model, reward and prompts a run uses is
//! the run configuration's (the `rocm` crate's `RunConfig`), and reaches the trainer as typed
//! parts through [`crate::TrainerBuilder`]. Unknown fields and values are rejected with their
//! name and the list of valid ones (serde's `deny_unknown_fields` and enums), so a typo never
//! silently falls back to a default. Every default is the paper's setting (docs/method.md §5) where
//! the paper gives one, and says "ours" where it does not.

use std::path::{Path, PathBuf};

use rocm_divergence::{DivergenceConfig, Reduction};
use rocm_lora::{InitLoraWeights, LoraConfig, TargetModules};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::algorithm::{
    AlgorithmKind, D3poConfig, DdimConfig, DdpoConfig, DpokConfig, RlcmConfig, SamplerKind,
};
use crate::schedule::LrSchedule;

/// How the divergence of a step is reduced over the latent's elements (docs/method.md §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReductionKind {
    /// Average over the elements (default; keeps β independent of the resolution).
    #[default]
    Mean,
    /// Sum over the elements.
    Sum,
}

impl From<ReductionKind> for Reduction {
    fn from(r: ReductionKind) -> Self {
        match r {
            ReductionKind::Mean => Reduction::Mean,
            ReductionKind::Sum => Reduction::Sum,
        }
    }
}

/// How the replicas of a data-parallel run combine their gradients (docs/scaling.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientSync {
    /// Host copies summed on the main device (default; every backend).
    #[default]
    Host,
    /// Burn's collective all-reduce: NCCL, CUDA devices only (a `--features cuda` build).
    Nccl,
}

impl GradientSync {
    /// Whether this is the default, [`GradientSync::Host`].
    pub fn is_host(&self) -> bool {
        *self == Self::Host
    }
}

/// Which guidance the sampler applies (docs/method.md §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuidanceKind {
    /// LCM's distilled guidance embedding, `w = guidance_scale − 1` (default).
    #[default]
    Embedded,
    /// No guidance (unconditional or guidance-free models such as the toy).
    None,
    /// Classifier-free guidance with two model calls per step and the empty prompt as the
    /// unconditional branch, `ε = ε_u + g (ε_c − ε_u)` (diffusion UNets; `sampler = "ddim"`).
    ClassifierFree,
}

/// A guidance kind's configuration name.
fn guidance_name(kind: GuidanceKind) -> &'static str {
    match kind {
        GuidanceKind::Embedded => "embedded",
        GuidanceKind::None => "none",
        GuidanceKind::ClassifierFree => "classifier_free",
    }
}

/// The LoRA adapters (PEFT's names). Default: the paper's r = 16, α = 32, gaussian init on
/// `to_q`, `to_k`, `to_v`, `to_out.0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    /// Rank `r` (default 16).
    pub r: usize,
    /// `α`; the adapter output is scaled by `α / r` (default 32).
    pub alpha: f64,
    /// Module names (or path suffixes) that get adapters (default `to_q, to_k, to_v, to_out.0`).
    pub target_modules: Vec<String>,
    /// `"gaussian"` (`A ~ N(0, 1/r)`, `B = 0`; default), `"default"` (PEFT's Kaiming A) or
    /// `"random"` (`B ≠ 0`: the adapter is not a no-op at start; for tests).
    pub init: InitLoraWeights,
    /// Dropout on the adapter input (default 0); above 0 it needs `gradient_checkpointing = false`.
    pub dropout: f64,
    /// Seed of the factors' host RNG (default 0).
    pub seed: u64,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            r: 16,
            alpha: 32.0,
            target_modules: ["to_q", "to_k", "to_v", "to_out.0"]
                .map(String::from)
                .to_vec(),
            init: InitLoraWeights::Gaussian,
            dropout: 0.0,
            seed: 0,
        }
    }
}

impl LoraSection {
    /// The [`LoraConfig`] to pass to [`rocm_lora::apply_lora`].
    pub fn to_lora_config(&self) -> LoraConfig {
        LoraConfig::new(
            self.r,
            self.alpha,
            TargetModules::names(&self.target_modules),
        )
        .with_init_lora_weights(self.init)
        .with_lora_dropout(self.dropout)
        .with_seed(self.seed)
    }
}

/// Every setting of the ROCM training loop (docs/method.md §3, §5; the paper's Algorithm 2).
///
/// ```toml
/// iterations = 1000
/// beta = 0.1
/// divergence = "kl"                      # or { kind = "js", nodes = 32 }
/// [lora]
/// r = 16
/// init = "gaussian"
/// ```
///
/// In a run configuration file these are the `[train]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The algorithm (default `rocm`; the baselines `rlcm`, `ddpo`, `dpok`, `d3po` read their
    /// own table below).
    pub algorithm: AlgorithmKind,
    /// The rollout sampler, `lcm` or `ddim` (default: the algorithm's,
    /// [`AlgorithmKind::default_sampler`]; read it with [`TrainConfig::sampler_kind`]). ROCM and
    /// RLCM need `lcm`, DDPO `ddim`.
    pub sampler: Option<SamplerKind>,
    /// The DDIM sampler's settings (`[train.ddim]`, read when the sampler is `ddim`).
    pub ddim: DdimConfig,
    /// DDPO's settings (`[train.ddpo]`).
    pub ddpo: DdpoConfig,
    /// ROCM only: back-propagate through the model calls of the last this many sampler steps
    /// (DRaFT-K; with β = 0, AlignProp's truncated backprop on an LCM); 0 for all of them
    /// (default 0, the paper's ROCM).
    pub backprop_steps: usize,
    /// RLCM's settings (`[train.rlcm]`).
    pub rlcm: RlcmConfig,
    /// DPOK's settings (`[train.dpok]`).
    pub dpok: DpokConfig,
    /// D3PO's settings (`[train.d3po]`).
    pub d3po: D3poConfig,
    /// `K`, sampler steps per rollout (default 8).
    pub num_steps: usize,
    /// Guidance scale `g` (default 7.5).
    pub guidance_scale: f32,
    /// Guidance kind (default `embedded`; a diffusion UNet sampled with DDIM takes
    /// `classifier_free`).
    pub guidance: GuidanceKind,
    /// The LoRA adapters.
    pub lora: LoraSection,
    /// Regularisation strength β; 0 is the paper's "No-Regularization" (default 0.1, ours:
    /// the paper balances β so that β·D is about a tenth of the reward).
    pub beta: f64,
    /// The divergence that regularises every non-final step: `kl` (default), `reverse_kl`,
    /// `js`, `hellinger_sq`, `fisher`, `chi2`, `tv`, with settings where it has them
    /// (`{ kind = "js", nodes = 32 }`). The trainer builds this one, unless it is given a
    /// custom divergence ([`crate::TrainerBuilder::custom_divergence`]), whose name is then
    /// recorded in [`TrainConfig::custom_divergence`].
    pub divergence: DivergenceConfig,
    /// The name of the custom divergence the run trained with instead of
    /// [`TrainConfig::divergence`] (set by the builder; default none). A configuration that
    /// names one can only be built with that divergence supplied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_divergence: Option<String>,
    /// Reduction of the per-element divergence over the latent (default `mean`).
    pub reduction: ReductionKind,
    /// Recompute each sampler step in the backward pass to bound memory by one model call's
    /// graph, two with `concurrent` (default true).
    pub gradient_checkpointing: bool,
    /// Run independent model calls on a second thread (default true): the frozen reference
    /// `f_ref` alongside the policy and, with `gradient_checkpointing`, each step's
    /// recomputation alongside the previous step's backward. The same numbers; on CPU those
    /// calls' cost hides behind the others' (docs/performance.md), at the price of a second
    /// model call's graph in memory with `gradient_checkpointing`. For UNet-sized models; tiny
    /// ones (the 2-D toy: 1.5 → 2.6 ms per iteration) lose more to the hand-off than they gain.
    /// Measured on the CPU backend only; set it to false on a GPU whose memory is tight.
    pub concurrent: bool,
    /// Prompts per micro-batch `B` (default 1, the paper's per-GPU batch).
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged before each update (default 1).
    pub gradient_accumulation_steps: usize,
    /// Data parallelism: the devices of the replicas, one each (`["cuda:0", "cuda:1"]`,
    /// `["flex", "flex"]`; `rocm train --devices` overrides it). Each samples `batch_size`
    /// prompts per micro-batch, so an update sees `batch_size × gradient_accumulation_steps ×
    /// devices` (docs/scaling.md). Default empty: the one `--device`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// How the replicas combine their gradients: `host` (default) or `nccl` (CUDA only).
    #[serde(skip_serializing_if = "GradientSync::is_host")]
    pub gradient_sync: GradientSync,
    /// Global gradient-norm clip over all adapter gradients; 0 disables (default 1.0, ours).
    pub max_grad_norm: f64,
    /// AdamW learning rate (default 6e-5).
    pub learning_rate: f64,
    /// Learning-rate schedule (default constant).
    pub lr_schedule: LrSchedule,
    /// Warm-up iterations of `linear_warmup` and `cosine` (default 0).
    pub warmup_steps: usize,
    /// Final learning rate of `cosine` as a fraction of `learning_rate` (default 0).
    pub min_lr_ratio: f64,
    /// AdamW β₁ (default 0.9).
    pub adam_beta1: f32,
    /// AdamW β₂ (default 0.999).
    pub adam_beta2: f32,
    /// AdamW ε (default 1e-8, PyTorch's; Burn's own default is 1e-5).
    pub adam_epsilon: f32,
    /// AdamW decoupled weight decay (default 1e-2, PyTorch's; Burn's own default is 1e-4).
    pub weight_decay: f32,
    /// Training iterations (optimizer updates; default 1000, ours).
    pub iterations: usize,
    /// Seed of the host RNG that draws prompts and noise (default 0).
    pub seed: u64,
    /// Write a checkpoint every this many iterations; 0 disables (default 100).
    pub checkpoint_every: usize,
    /// Evaluation prompts (default none).
    pub eval_prompts: Vec<String>,
    /// Evaluation noise seeds, one per image (default `[0, 1, 2, 3]`).
    pub eval_seeds: Vec<u64>,
    /// Evaluate every this many iterations and at the end; 0 disables (default 100). Each
    /// evaluation appends to `<output_dir>/eval.jsonl` and, for image models, writes a grid to
    /// `<output_dir>/samples/step-NNNNNN.png` (rows = prompts, columns = seeds).
    pub eval_every: usize,
    /// Also evaluate once before the first iteration (step 0: the base model, default false),
    /// when evaluation is on (`eval_every > 0`). A run resumed from a checkpoint does not repeat
    /// it.
    pub eval_at_start: bool,
    /// Where metrics and checkpoints go (default `runs/rocm`).
    pub output_dir: PathBuf,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            algorithm: AlgorithmKind::Rocm,
            sampler: None,
            ddim: DdimConfig::default(),
            ddpo: DdpoConfig::default(),
            backprop_steps: 0,
            rlcm: RlcmConfig::default(),
            dpok: DpokConfig::default(),
            d3po: D3poConfig::default(),
            num_steps: 8,
            guidance_scale: 7.5,
            guidance: GuidanceKind::Embedded,
            lora: LoraSection::default(),
            beta: 0.1,
            divergence: DivergenceConfig::Kl,
            custom_divergence: None,
            reduction: ReductionKind::Mean,
            gradient_checkpointing: true,
            concurrent: true,
            batch_size: 1,
            gradient_accumulation_steps: 1,
            devices: Vec::new(),
            gradient_sync: GradientSync::Host,
            max_grad_norm: 1.0,
            learning_rate: 6e-5,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            weight_decay: 1e-2,
            iterations: 1000,
            seed: 0,
            checkpoint_every: 100,
            eval_prompts: Vec::new(),
            eval_seeds: vec![0, 1, 2, 3],
            eval_every: 100,
            eval_at_start: false,
            output_dir: PathBuf::from("runs/rocm"),
        }
    }
}

/// The largest `batch_size` a configuration may ask for (the rollout noise is allocated from it).
pub const MAX_BATCH_SIZE: usize = 65_536;
/// The largest `num_steps` (LCM schedules offer at most `original_inference_steps`, 50).
pub const MAX_NUM_STEPS: usize = 10_000;
/// The largest LoRA rank `lora.r`.
pub const MAX_LORA_RANK: usize = 4096;

impl TrainConfig {
    /// Parses a TOML document; `path` only names the source in errors.
    pub fn from_toml_str(text: &str, path: impl AsRef<Path>) -> Result<Self, Error> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: path.as_ref().to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
        Self::from_toml_str(&text, path)
    }

    /// The paper's shared settings for `algorithm` — its rule for the baselines is "the same
    /// batch size and lr" as ROCM (§4, App. 6): lr 6e-5, batch 1 without accumulation, CFG
    /// scale 7.5, LoRA r16/α32 on `to_q`/`to_k`/`to_v`/`to_out.0`; the consistency-model methods
    /// (ROCM, RLCM) with 8 LCM steps and embedded guidance, the diffusion baselines (DDPO, DPOK,
    /// D3PO, on `Lykon/dreamshaper-7`) with 20 DDIM steps, η = 1 and classifier-free guidance.
    /// Every other field is [`TrainConfig::default`]; the shipped `configs/lcm_dreamshaper_*.toml`
    /// and `configs/dreamshaper7_*.toml` agree with it (a test checks).
    pub fn paper(algorithm: AlgorithmKind) -> Self {
        let diffusion = !matches!(algorithm, AlgorithmKind::Rocm | AlgorithmKind::Rlcm);
        let (num_steps, sampler, guidance) = if diffusion {
            (20, SamplerKind::Ddim, GuidanceKind::ClassifierFree)
        } else {
            (8, SamplerKind::Lcm, GuidanceKind::Embedded)
        };
        Self {
            algorithm,
            sampler: Some(sampler),
            num_steps,
            guidance,
            guidance_scale: 7.5,
            learning_rate: 6e-5,
            batch_size: 1,
            gradient_accumulation_steps: 1,
            ddim: DdimConfig { eta: 1.0 },
            lora: LoraSection {
                r: 16,
                alpha: 32.0,
                ..LoraSection::default()
            },
            ..Self::default()
        }
    }

    /// The rollout sampler: the configured one, or the algorithm's default.
    pub fn sampler_kind(&self) -> SamplerKind {
        self.sampler
            .unwrap_or_else(|| self.algorithm.default_sampler())
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialise: {e}"))
    }

    /// Upper bounds on the sizes and the optimiser's numbers, checked before anything is
    /// allocated from them (docs/reliability.md).
    fn check_sizes(&self) -> Result<(), (&'static str, String)> {
        let at_most = |field, value: usize, max: usize| {
            if value <= max {
                Ok(())
            } else {
                Err((field, format!("must be at most {max}, got {value}")))
            }
        };
        at_most("batch_size", self.batch_size, MAX_BATCH_SIZE)?;
        at_most("num_steps", self.num_steps, MAX_NUM_STEPS)?;
        at_most("lora.r", self.lora.r, MAX_LORA_RANK)?;
        let in_unit = |field, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err((field, format!("must be in [0, 1), got {v}")))
            }
        };
        in_unit("adam_beta1", self.adam_beta1)?;
        in_unit("adam_beta2", self.adam_beta2)?;
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            let message = format!("must be finite and > 0, got {}", self.adam_epsilon);
            return Err(("adam_epsilon", message));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            let message = format!("must be finite and ≥ 0, got {}", self.weight_decay);
            return Err(("weight_decay", message));
        }
        Ok(())
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, message: String| Err(Error::InvalidField { field, message });
        if self.num_steps == 0 {
            return bad("num_steps", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if let Err((field, message)) = self.check_sizes() {
            return bad(field, message);
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps", "must be at least 1".into());
        }
        if self.devices.len() > crate::parallel::MAX_DEVICES {
            return bad(
                "devices",
                format!(
                    "{} devices: at most {}",
                    self.devices.len(),
                    crate::parallel::MAX_DEVICES
                ),
            );
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return bad("beta", format!("must be finite and ≥ 0, got {}", self.beta));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return bad(
                "learning_rate",
                format!("must be ≥ 0, got {}", self.learning_rate),
            );
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad(
                "max_grad_norm",
                format!("must be ≥ 0, got {}", self.max_grad_norm),
            );
        }
        if let Err(message) = self.divergence.validate() {
            return bad("divergence", message);
        }
        if self.backprop_steps > self.num_steps {
            return bad(
                "backprop_steps",
                format!(
                    "{} exceeds num_steps = {} (0 back-propagates through all steps)",
                    self.backprop_steps, self.num_steps
                ),
            );
        }
        if self.backprop_steps > 0 && self.algorithm != AlgorithmKind::Rocm {
            return bad(
                "backprop_steps",
                format!(
                    "truncated backprop is a ROCM option, not `{}`'s",
                    self.algorithm.name()
                ),
            );
        }
        let sampler = self.sampler_kind();
        let allowed = match self.algorithm {
            AlgorithmKind::Rocm | AlgorithmKind::Rlcm => sampler == SamplerKind::Lcm,
            AlgorithmKind::Ddpo => sampler == SamplerKind::Ddim,
            AlgorithmKind::Dpok | AlgorithmKind::D3po => true,
        };
        if !allowed {
            return bad(
                "sampler",
                format!(
                    "`{}` does not train with the `{}` sampler (rocm and rlcm need `lcm`; ddpo \
                     needs `ddim`: on an LCM it is rlcm)",
                    self.algorithm.name(),
                    sampler.name()
                ),
            );
        }
        if sampler == SamplerKind::Ddim
            && let Err((field, message)) = self.ddim.validate()
        {
            return bad(field, message);
        }
        if (self.guidance == GuidanceKind::ClassifierFree) != (sampler == SamplerKind::Ddim)
            && self.guidance != GuidanceKind::None
        {
            return bad(
                "guidance",
                format!(
                    "`{}` guidance with the `{}` sampler: the LCM sampler takes `embedded` (LCM's \
                     distilled guidance), DDIM takes `classifier_free`; `none` fits both",
                    guidance_name(self.guidance),
                    sampler.name()
                ),
            );
        }
        let checked = match self.algorithm {
            AlgorithmKind::Rocm => Ok(()),
            AlgorithmKind::Rlcm => self.rlcm.validate(),
            AlgorithmKind::Ddpo => self.ddpo.validate(),
            AlgorithmKind::Dpok => self.dpok.validate(),
            AlgorithmKind::D3po => self.d3po.validate(),
        };
        if let Err((field, message)) = checked {
            return bad(field, message);
        }
        let per_prompt = match self.algorithm {
            AlgorithmKind::Rlcm => Some(("rlcm.samples_per_prompt", self.rlcm.samples_per_prompt)),
            AlgorithmKind::Ddpo => Some(("ddpo.samples_per_prompt", self.ddpo.samples_per_prompt)),
            AlgorithmKind::Dpok => Some(("dpok.samples_per_prompt", self.dpok.samples_per_prompt)),
            _ => None,
        };
        if let Some((field, n)) = per_prompt
            && n > MAX_BATCH_SIZE
        {
            return bad(field, format!("must be at most {MAX_BATCH_SIZE}, got {n}"));
        }
        if let Some((field, n)) = per_prompt
            && n.saturating_mul(self.batch_size)
                .saturating_mul(self.gradient_accumulation_steps)
                < 2
        {
            return bad(
                field,
                "one sample per iteration: its advantage is always 0 (the reward minus the \
                 mean of a batch of one), so nothing would be learned; sample at least 2 images \
                 per prompt or per iteration"
                    .into(),
            );
        }
        if self.lora.r == 0 {
            return bad("lora.r", "must be at least 1".into());
        }
        if !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            return bad(
                "lora.alpha",
                format!("must be finite and > 0, got {}", self.lora.alpha),
            );
        }
        if !self.guidance_scale.is_finite() {
            return bad(
                "guidance_scale",
                format!("must be finite, got {}", self.guidance_scale),
            );
        }
        if !(self.min_lr_ratio.is_finite() && (0.0..=1.0).contains(&self.min_lr_ratio)) {
            return bad(
                "min_lr_ratio",
                format!("must be in [0, 1], got {}", self.min_lr_ratio),
            );
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            return bad(
                "lora.dropout",
                format!("must be in [0, 1), got {}", self.lora.dropout),
            );
        }
        if self.lora.dropout > 0.0 && self.gradient_checkpointing {
            // The backward pass re-runs each step's forward; Burn's dropout would draw new masks
            // there, so the gradient would belong to a different forward than the one scored.
            return bad(
                "lora.dropout",
                format!(
                    "{} needs gradient_checkpointing = false: the recomputed forward would draw \
                     new dropout masks",
                    self.lora.dropout
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let c = TrainConfig::from_toml_str("", "<string>").unwrap();
        assert_eq!(c, TrainConfig::default());
        assert_eq!(
            (c.num_steps, c.guidance_scale, c.learning_rate),
            (8, 7.5, 6e-5)
        );
        assert_eq!((c.lora.r, c.lora.alpha), (16, 32.0));
        assert_eq!(c.lora.to_lora_config(), LoraConfig::paper());
    }

    #[test]
    fn round_trips_through_toml() {
        let c = TrainConfig {
            beta: 0.5,
            divergence: DivergenceConfig::Js { nodes: 32 },
            lr_schedule: LrSchedule::Cosine,
            ..TrainConfig::default()
        };
        assert_eq!(TrainConfig::from_toml_str(&c.to_toml(), "x").unwrap(), c);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = TrainConfig::from_toml_str("lerning_rate = 1e-4\n", "run.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("lerning_rate") && msg.contains("run.toml"),
            "{msg}"
        );
        let err = TrainConfig::from_toml_str("[lora]\nrank = 4\n", "run.toml").unwrap_err();
        assert!(err.to_string().contains("rank"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = TrainConfig::from_toml_str("divergence = \"kll\"\n", "x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("divergence") && msg.contains("`kll`"), "{msg}");
        assert!(msg.contains("kl, reverse_kl, js, hellinger_sq"), "{msg}");
        let err = TrainConfig::from_toml_str("[lora]\ninit = \"gauss\"\n", "x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("gauss") && msg.contains("gaussian"), "{msg}");
        let err = TrainConfig::from_toml_str("batch_size = 0\n", "x").unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
        let err = TrainConfig::from_toml_str("[lora]\ndropout = 1.5\n", "x").unwrap_err();
        assert!(err.to_string().contains("lora.dropout"), "{err}");
    }

    #[test]
    fn dropout_needs_checkpointing_off() {
        let err = TrainConfig::from_toml_str("[lora]\ndropout = 0.1\n", "x").unwrap_err();
        assert!(err.to_string().contains("gradient_checkpointing"), "{err}");
        let ok = "gradient_checkpointing = false\n[lora]\ndropout = 0.1\n";
        assert_eq!(
            TrainConfig::from_toml_str(ok, "x").unwrap().lora.dropout,
            0.1
        );
    }

    #[test]
    fn divergences_parse_with_their_settings() {
        let c = TrainConfig::from_toml_str("divergence = \"hellinger_sq\"\n", "x").unwrap();
        assert_eq!(c.divergence, DivergenceConfig::HellingerSq);
        let c = TrainConfig::from_toml_str("divergence = { kind = \"js\", nodes = 16 }\n", "x")
            .unwrap();
        assert_eq!(c.divergence, DivergenceConfig::Js { nodes: 16 });
        let c = TrainConfig::from_toml_str("divergence = { kind = \"tv\" }\n", "x").unwrap();
        assert_eq!(
            c.divergence.nodes(),
            Some(rocm_divergence::DEFAULT_QUADRATURE_NODES)
        );
        for (text, needle) in [
            (
                "divergence = { kind = \"kl\", nodes = 16 }\n",
                "takes no `nodes`",
            ),
            ("divergence = { kind = \"js\", node = 16 }\n", "node"),
            ("divergence = { kind = \"js\", nodes = 1 }\n", "2..=1024"),
            ("divergence = { nodes = 8 }\n", "kind"),
        ] {
            let msg = TrainConfig::from_toml_str(text, "run.toml")
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(needle) && msg.contains("run.toml"),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn every_field_round_trips_with_non_default_values() {
        let c = TrainConfig {
            algorithm: AlgorithmKind::Dpok,
            sampler: Some(SamplerKind::Ddim),
            ddim: DdimConfig { eta: 0.5 },
            ddpo: DdpoConfig {
                adv_clip_max: 2.0,
                ..DdpoConfig::default()
            },
            backprop_steps: 0,
            rlcm: RlcmConfig {
                clip_range: 0.2,
                last_step: crate::algorithm::LastStep::Skip,
                ..RlcmConfig::default()
            },
            dpok: DpokConfig {
                kl: crate::algorithm::DpokKl::Exact,
                ..DpokConfig::default()
            },
            d3po: D3poConfig {
                beta: 0.5,
                eps: 0.2,
            },
            num_steps: 4,
            guidance_scale: 3.0,
            guidance: GuidanceKind::None,
            lora: LoraSection {
                r: 4,
                alpha: 8.0,
                target_modules: vec!["linear_in".into()],
                init: InitLoraWeights::Default,
                dropout: 0.1,
                seed: 3,
            },
            beta: 0.0,
            divergence: DivergenceConfig::Tv { nodes: 8 },
            custom_divergence: Some("mine".into()),
            reduction: ReductionKind::Sum,
            gradient_checkpointing: false,
            concurrent: false,
            batch_size: 3,
            gradient_accumulation_steps: 2,
            devices: vec!["cuda:0".into(), "cuda:1".into()],
            gradient_sync: GradientSync::Nccl,
            max_grad_norm: 0.0,
            learning_rate: 1e-3,
            lr_schedule: LrSchedule::LinearWarmup,
            warmup_steps: 5,
            min_lr_ratio: 0.5,
            adam_beta1: 0.8,
            adam_beta2: 0.99,
            adam_epsilon: 1e-6,
            weight_decay: 0.0,
            iterations: 7,
            seed: 9,
            checkpoint_every: 2,
            eval_prompts: vec!["a".into()],
            eval_seeds: vec![5],
            eval_every: 3,
            eval_at_start: true,
            output_dir: PathBuf::from("out"),
        };
        assert_eq!(TrainConfig::from_toml_str(&c.to_toml(), "x").unwrap(), c);
    }

    #[test]
    fn baselines_parse_and_a_batch_of_one_is_refused() {
        let text = "algorithm = \"rlcm\"\n[rlcm]\nclip_range = 0.001\nlast_step = \"skip\"\n";
        let c = TrainConfig::from_toml_str(text, "x").unwrap();
        assert_eq!(c.algorithm, AlgorithmKind::Rlcm);
        assert_eq!(c.rlcm.last_step, crate::algorithm::LastStep::Skip);
        let one = "algorithm = \"rlcm\"\n[rlcm]\nsamples_per_prompt = 1\n";
        let msg = TrainConfig::from_toml_str(one, "x")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("rlcm.samples_per_prompt") && msg.contains("always 0"),
            "{msg}"
        );
        let two = "algorithm = \"rlcm\"\nbatch_size = 2\n[rlcm]\nsamples_per_prompt = 1\n";
        assert!(TrainConfig::from_toml_str(two, "x").is_ok());
        let msg = TrainConfig::from_toml_str("algorithm = \"ppo\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rlcm") && msg.contains("d3po"), "{msg}");
        let msg = TrainConfig::from_toml_str("num_steps = 4\nbackprop_steps = 5\n", "x")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("backprop_steps"), "{msg}");
    }

    #[test]
    fn the_papers_preset_is_valid_for_every_algorithm() {
        for algorithm in AlgorithmKind::ALL {
            let p = TrainConfig::paper(algorithm);
            p.validate().unwrap();
            assert_eq!((p.learning_rate, p.batch_size), (6e-5, 1));
            let diffusion = p.sampler_kind() == SamplerKind::Ddim;
            assert_eq!(p.num_steps, if diffusion { 20 } else { 8 }, "{algorithm:?}");
        }
    }

    #[test]
    fn each_algorithm_gets_a_sampler_it_can_train_with() {
        let parse = |text: &str| TrainConfig::from_toml_str(text, "run.toml");
        let ddpo = parse("algorithm = \"ddpo\"\nguidance = \"classifier_free\"\n").unwrap();
        assert_eq!(ddpo.sampler_kind(), SamplerKind::Ddim);
        assert_eq!(ddpo.ddim.eta, 1.0);
        assert_eq!(ddpo.ddpo.adv_clip_max, 5.0);
        assert_eq!(parse("").unwrap().sampler_kind(), SamplerKind::Lcm);
        let d3po = "algorithm = \"d3po\"\nsampler = \"ddim\"\nguidance = \"none\"\n";
        assert_eq!(parse(d3po).unwrap().sampler_kind(), SamplerKind::Ddim);
        for (text, needle) in [
            (
                "algorithm = \"ddpo\"\nsampler = \"lcm\"\n",
                "on an LCM it is rlcm",
            ),
            ("algorithm = \"rlcm\"\nsampler = \"ddim\"\n", "need `lcm`"),
            ("sampler = \"ddim\"\n", "need `lcm`"),
            ("algorithm = \"ddpo\"\n", "takes `classifier_free`"),
            ("guidance = \"classifier_free\"\n", "takes `embedded`"),
            (
                "algorithm = \"ddpo\"\nguidance = \"none\"\n[ddim]\neta = 0.0\n",
                "ddim.eta",
            ),
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text}: {msg}");
        }
    }
}
