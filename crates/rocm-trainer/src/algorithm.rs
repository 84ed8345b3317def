//! Which algorithm a run trains with, and each baseline's own settings (docs/baselines.md).
//!
//! ```toml
//! [train]
//! algorithm = "rlcm"          # rocm (default), rlcm, ddpo, dpok, d3po
//! [train.rlcm]
//! clip_range = 1e-4
//! ```
//!
//! DDPO samples with DDIM (`sampler = "ddim"`, `[train.ddim]`), on an ε-prediction diffusion
//! UNet; DPOK and D3PO run on either sampler (their papers use DDIM; on an LCM they are the
//! paper's LCM ports).
//!
//! Every default is the reference implementation's (RLCM's `conf/`, DDPO's `config/base.py`,
//! DPOK's `train_online_pg.py`, D3PO's `config/base.py`), and says "ours" where a setting is a
//! choice of this port.

use serde::{Deserialize, Serialize};

/// The training algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    /// ROCM: the reward back-propagated through the whole sampler, plus β·divergence
    /// (default). `backprop_steps` truncates it (DRaFT-K; with β = 0, AlignProp on an LCM).
    #[default]
    Rocm,
    /// RLCM: PPO on the LCM's per-step Gaussian policy (`[train.rlcm]`).
    Rlcm,
    /// DDPO: the same PPO on a DDIM (η > 0) diffusion sampler (`[train.ddpo]`, `[train.ddim]`).
    Ddpo,
    /// DPOK: KL-regularised policy gradient with a per-prompt baseline (`[train.dpok]`).
    Dpok,
    /// D3PO: DPO on every step of trajectory pairs against the frozen base (`[train.d3po]`).
    D3po,
}

impl AlgorithmKind {
    /// Every algorithm, in the order help texts list them.
    pub const ALL: [Self; 5] = [Self::Rocm, Self::Rlcm, Self::Ddpo, Self::Dpok, Self::D3po];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rocm => "rocm",
            Self::Rlcm => "rlcm",
            Self::Ddpo => "ddpo",
            Self::Dpok => "dpok",
            Self::D3po => "d3po",
        }
    }

    /// Whether the algorithm samples without gradient and estimates a policy gradient from the
    /// rollouts (everything but ROCM).
    pub fn is_policy_gradient(self) -> bool {
        self != Self::Rocm
    }

    /// Whether the loss is PPO's clipped surrogate (RLCM, DDPO).
    pub fn is_ppo(self) -> bool {
        matches!(self, Self::Rlcm | Self::Ddpo)
    }

    /// The sampler the algorithm rolls out with when the configuration names none: DDIM for
    /// DDPO, the LCM sampler for the others.
    pub fn default_sampler(self) -> SamplerKind {
        match self {
            Self::Ddpo => SamplerKind::Ddim,
            _ => SamplerKind::Lcm,
        }
    }
}

/// The sampler of training rollouts and evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// The multistep consistency sampler (`LCMScheduler`) of a latent consistency model.
    #[default]
    Lcm,
    /// diffusers' `DDIMScheduler` on an ε-, v- or sample-prediction diffusion model, with
    /// `[train.ddim]`'s η (`rocm_sampler::DdimSampler`).
    Ddim,
}

impl SamplerKind {
    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lcm => "lcm",
            Self::Ddim => "ddim",
        }
    }
}

/// The DDIM sampler's settings (`[train.ddim]`; DDPO `config/base.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdimConfig {
    /// `η`: 1 (default, DDPO/DPOK/D3PO) makes every step a Gaussian policy; 0 is deterministic
    /// DDIM, which a policy-gradient method cannot train.
    pub eta: f32,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self { eta: 1.0 }
    }
}

impl DdimConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.eta.is_finite() && self.eta > 0.0 {
            Ok(())
        } else {
            Err((
                "ddim.eta",
                format!(
                    "must be finite and > 0 for training (η = 0 has no stochastic step), got {}",
                    self.eta
                ),
            ))
        }
    }
}

/// PPO on the DDIM policy: DDPO's settings (`[train.ddpo]`; ddpo-pytorch `config/base.py`,
/// BASELINES §2.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpoConfig {
    /// PPO's ratio clip ε (default 1e-4, for the mean-over-elements log-prob).
    pub clip_range: f64,
    /// Advantages are clamped to `±adv_clip_max` (default 5).
    pub adv_clip_max: f64,
    /// Images sampled per drawn prompt (default 2, ours: see [`RlcmConfig::samples_per_prompt`]).
    pub samples_per_prompt: usize,
    /// Rewards kept per prompt by the stat tracker (default 16).
    pub stat_buffer: usize,
    /// Rewards a prompt needs before its own statistics replace the batch's (default 16).
    pub stat_min_count: usize,
}

impl Default for DdpoConfig {
    fn default() -> Self {
        Self {
            clip_range: 1e-4,
            adv_clip_max: 5.0,
            samples_per_prompt: 2,
            stat_buffer: 16,
            stat_min_count: 16,
        }
    }
}

impl DdpoConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        positive("ddpo.clip_range", self.clip_range)?;
        positive("ddpo.adv_clip_max", self.adv_clip_max)?;
        if self.samples_per_prompt == 0 || self.stat_buffer == 0 {
            return Err((
                "ddpo.samples_per_prompt",
                "samples_per_prompt and stat_buffer must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What RLCM does with the sampler's last, deterministic step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastStep {
    /// As RLCM's code: the last step is also a Gaussian transition, `x_K ~ N(√ā_{t_{K−1}}
    /// f_θ(x_{K−1}), (1 − ā_{t_{K−1}}) I)` (its scheduler falls back to `t_next = t`), and is
    /// trained like the others; the reward still scores `f_θ(x_{K−1})`, so that transition's
    /// term has zero mean and only adds variance (default: reproduces the RLCM row).
    #[default]
    RlcmFaithful,
    /// Train the `K − 1` real transitions only (lower variance; ours).
    Skip,
}

/// PPO on the LCM policy: RLCM's settings (`[train.rlcm]`; RLCM `conf/`, BASELINES §1.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlcmConfig {
    /// PPO's ratio clip ε (default 1e-4, for the mean-over-elements log-prob).
    pub clip_range: f64,
    /// Advantages are clamped to `±adv_clip_max` (default 10).
    pub adv_clip_max: f64,
    /// Images sampled per drawn prompt (default 2, ours: with one, the per-prompt statistics
    /// have no spread and every advantage is 0).
    pub samples_per_prompt: usize,
    /// Rewards kept per prompt by the stat tracker (default 32).
    pub stat_buffer: usize,
    /// Rewards a prompt needs before its own statistics replace the batch's (default 16).
    pub stat_min_count: usize,
    /// The last step's handling (default `rlcm_faithful`).
    pub last_step: LastStep,
}

impl Default for RlcmConfig {
    fn default() -> Self {
        Self {
            clip_range: 1e-4,
            adv_clip_max: 10.0,
            samples_per_prompt: 2,
            stat_buffer: 32,
            stat_min_count: 16,
            last_step: LastStep::RlcmFaithful,
        }
    }
}

/// DPOK's KL term between the fine-tuned and the frozen base policy at each stored state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpokKl {
    /// The official code's `mean_N (ε_θ − ε_ref)²` of the network outputs (default).
    #[default]
    EpsSq,
    /// The exact per-step Gaussian KL, `mean_N (μ_θ − μ_ref)² / (2σ²)` (ROCM's KL term).
    Exact,
}

/// DPOK's settings (`[train.dpok]`; google-research `dpok/train_online_pg.py`, BASELINES §3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpokConfig {
    /// The policy term's weight `α` in `−α · adv · ρ` (default 100, the code's `reward_weight`).
    pub reward_weight: f64,
    /// The KL term's weight (default 0.01, `kl_weight`).
    pub kl_weight: f64,
    /// The KL form (default `eps_sq`).
    pub kl: DpokKl,
    /// The ratio is clamped to `[1 − c, 1 + c]` (default 1e-4, `ratio_clip`).
    pub ratio_clip: f64,
    /// Images sampled per drawn prompt (default 2, ours).
    pub samples_per_prompt: usize,
    /// Rewards kept per prompt for the running-mean baseline `adv = r − mean_p` (default 32;
    /// ours, in place of the official learned value network V(x_t, c, t)).
    pub baseline_buffer: usize,
}

impl Default for DpokConfig {
    fn default() -> Self {
        Self {
            reward_weight: 100.0,
            kl_weight: 0.01,
            kl: DpokKl::EpsSq,
            ratio_clip: 1e-4,
            samples_per_prompt: 2,
            baseline_buffer: 32,
        }
    }
}

/// D3PO's settings (`[train.d3po]`; D3PO `config/base.py`, BASELINES §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct D3poConfig {
    /// DPO's β (default 0.1).
    pub beta: f64,
    /// The ratio to the reference is clamped to `[1 − eps, 1 + eps]` (default 0.1).
    pub eps: f64,
}

impl Default for D3poConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            eps: 0.1,
        }
    }
}

/// Checks a value is finite and positive, naming the field.
pub(crate) fn positive(field: &'static str, v: f64) -> Result<(), (&'static str, String)> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err((field, format!("must be finite and > 0, got {v}")))
    }
}

impl RlcmConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        positive("rlcm.clip_range", self.clip_range)?;
        positive("rlcm.adv_clip_max", self.adv_clip_max)?;
        if self.samples_per_prompt == 0 || self.stat_buffer == 0 {
            return Err((
                "rlcm.samples_per_prompt",
                "samples_per_prompt and stat_buffer must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl DpokConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        positive("dpok.ratio_clip", self.ratio_clip)?;
        if !(self.reward_weight.is_finite() && self.kl_weight.is_finite() && self.kl_weight >= 0.0)
        {
            return Err((
                "dpok.kl_weight",
                format!(
                    "reward_weight must be finite and kl_weight finite and ≥ 0, got {} and {}",
                    self.reward_weight, self.kl_weight
                ),
            ));
        }
        if self.samples_per_prompt == 0 || self.baseline_buffer == 0 {
            return Err((
                "dpok.samples_per_prompt",
                "samples_per_prompt and baseline_buffer must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl D3poConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        positive("d3po.beta", self.beta)?;
        if !(self.eps.is_finite() && self.eps > 0.0 && self.eps < 1.0) {
            return Err(("d3po.eps", format!("must be in (0, 1), got {}", self.eps)));
        }
        Ok(())
    }
}
