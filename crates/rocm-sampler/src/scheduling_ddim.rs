//! The DDIM scheduler (Song et al. 2021), exact to diffusers' `DDIMScheduler`
//! (`schedulers/scheduling_ddim.py`): timesteps, one step with variance `η`, and the per-step
//! Gaussian log-density of the policy-gradient baselines (docs/method.md §6: DDPO, DPOK, D3PO
//! run PPO / PG / DPO on a DDIM `η = 1` sampler).
//!
//! ```text
//! t_prev = t − N / K                                  (N = num_train_timesteps, K steps, integer division)
//! ā_prev = ā_{t_prev}, or final_alpha_cumprod when t_prev < 0 (1 if set_alpha_to_one, else ā_0)
//! x̂_0    = (x_t − √(1 − ā_t) ε) / √ā_t                (ε-prediction; v and sample below), then clip/threshold
//! σ_t²   = η² · (1 − ā_prev)/(1 − ā_t) · (1 − ā_t/ā_prev)
//! μ      = √ā_prev x̂_0 + √(1 − ā_prev − σ_t²) ε
//! x_prev = μ + σ_t z,   z ~ N(0, I)
//! ```

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{BetaSchedule, Error, NoiseSchedule, Parameterization, Prediction, gaussian_log_prob};

/// How the `K` inference timesteps are spread over `0..N` (diffusers' `timestep_spacing`; Table 2
/// of Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimestepSpacing {
    /// `t_k = (K − 1 − k) · ⌊N/K⌋ + steps_offset` (`"leading"`, the default). SD 1.x
    /// (`steps_offset = 1`), K = 20: `[951, 901, …, 51, 1]`.
    #[default]
    #[serde(rename = "leading")]
    Leading,
    /// `t = round(arange(N, 0, −N/K)) − 1` in numpy's f64 arithmetic (`"trailing"`), K = 20:
    /// `[999, 949, …, 49]`. `steps_offset` is not used.
    #[serde(rename = "trailing")]
    Trailing,
    /// `t = round(linspace(0, N − 1, K))` reversed (`"linspace"`), K = 20: `[999, 946, …, 53, 0]`.
    /// `steps_offset` is not used.
    #[serde(rename = "linspace")]
    Linspace,
}

/// diffusers' `DDIMScheduler` `scheduler_config.json`, field for field, with diffusers' defaults
/// (which are **not** Stable Diffusion's: see [`DdimSchedulerConfig::sd15`]).
///
/// Unknown keys (`_class_name`, `_diffusers_version`, and the keys of other schedulers such as
/// PNDM's `skip_prk_steps`) are ignored, so the `scheduler/scheduler_config.json` of any
/// Stable Diffusion pipeline folder reads as diffusers' `DDIMScheduler.from_config` does.
/// Values are checked by [`DdimSchedulerConfig::validate`]; the errors name the file and key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdimSchedulerConfig {
    /// `N`, the number of training timesteps (1000).
    pub num_train_timesteps: usize,
    /// First beta (0.0001).
    pub beta_start: f64,
    /// Last beta (0.02).
    pub beta_end: f64,
    /// Beta spacing (`linear`).
    pub beta_schedule: BetaSchedule,
    /// Explicit betas that replace the three fields above (`null`).
    pub trained_betas: Option<Vec<f64>>,
    /// Clamp `x̂_0` to `±clip_sample_range` (`true`; SD configs set `false`).
    pub clip_sample: bool,
    /// `ā_prev` of the last step, whose `t_prev < 0`: `true` → 1, `false` → `ā_0` (`true`;
    /// SD 1.x sets `false`).
    pub set_alpha_to_one: bool,
    /// Added to the `"leading"` timesteps (0; SD 1.x sets 1).
    pub steps_offset: usize,
    /// What the network predicts (`epsilon`).
    pub prediction_type: Parameterization,
    /// Dynamic thresholding of `x̂_0` (Imagen; `false`), replacing `clip_sample` when set.
    pub thresholding: bool,
    /// The quantile of `|x̂_0|` that thresholding clamps to (0.995).
    pub dynamic_thresholding_ratio: f64,
    /// The clamp bound of `clip_sample` (1.0).
    pub clip_sample_range: f64,
    /// The largest threshold of dynamic thresholding (1.0).
    pub sample_max_value: f64,
    /// How the inference timesteps are spread (`leading`).
    pub timestep_spacing: TimestepSpacing,
    /// Rescale the betas to zero terminal SNR (`false`).
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: Parameterization::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
        }
    }
}

impl DdimSchedulerConfig {
    /// Stable Diffusion 1.x's `scheduler_config.json` read as a `DDIMScheduler` (what
    /// `DDIMScheduler.from_pretrained("…/stable-diffusion-v1-5", subfolder="scheduler")` gives,
    /// and what DDPO samples with): `scaled_linear` betas in `[0.00085, 0.012]`,
    /// `clip_sample = false`, `set_alpha_to_one = false`, `steps_offset = 1`, `leading`.
    pub fn sd15() -> Self {
        Self {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            clip_sample: false,
            set_alpha_to_one: false,
            steps_offset: 1,
            ..Self::default()
        }
    }

    /// Parses a `scheduler_config.json` held in a string, and validates it.
    pub fn from_json_str(json: &str) -> Result<Self, Error> {
        Self::parse(json, "<string>")
    }

    /// Reads and validates a diffusers `scheduler_config.json`, e.g. the
    /// `scheduler/scheduler_config.json` of a `StableDiffusionPipeline` folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&json, &path.display().to_string())
    }

    fn parse(json: &str, origin: &str) -> Result<Self, Error> {
        let config: Self = serde_json::from_str(json).map_err(|source| Error::Json {
            origin: origin.into(),
            source,
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks every value a [`DdimScheduler`] relies on; `origin` (a file name) goes into the
    /// error, with the key.
    pub fn validate(&self, origin: &str) -> Result<(), Error> {
        let bad = |key: &'static str, reason: String| Error::BadConfig {
            origin: origin.into(),
            key,
            reason,
        };
        let n = self.num_train_timesteps;
        if n < 2 {
            return Err(bad(
                "num_train_timesteps",
                format!("= {n}, need at least 2"),
            ));
        }
        if self.trained_betas.is_none() && self.beta_schedule != BetaSchedule::SquaredcosCapV2 {
            for (key, b) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                if !(b > 0.0 && b < 1.0) {
                    return Err(bad(key, format!("= {b} is not in (0, 1)")));
                }
            }
        }
        if let Some(betas) = &self.trained_betas
            && betas.len() != n
        {
            return Err(bad(
                "trained_betas",
                format!("has {} values for num_train_timesteps = {n}", betas.len()),
            ));
        }
        if self.steps_offset >= n {
            return Err(bad(
                "steps_offset",
                format!(
                    "= {} is not below num_train_timesteps = {n}",
                    self.steps_offset
                ),
            ));
        }
        if self.clip_sample && !(self.clip_sample_range > 0.0 && self.clip_sample_range.is_finite())
        {
            return Err(bad(
                "clip_sample_range",
                format!("= {} must be positive", self.clip_sample_range),
            ));
        }
        if self.thresholding {
            let r = self.dynamic_thresholding_ratio;
            if !(r > 0.0 && r <= 1.0) {
                return Err(bad(
                    "dynamic_thresholding_ratio",
                    format!("= {r} is not in (0, 1]"),
                ));
            }
            let m = self.sample_max_value;
            if !(m >= 1.0 && m.is_finite()) {
                return Err(bad(
                    "sample_max_value",
                    format!("= {m} must be at least 1 (the threshold is clamped to [1, max])"),
                ));
            }
        }
        Ok(())
    }
}

/// The output of [`DdimScheduler::step`].
///
/// # Shapes
/// Every tensor has the latent's shape `[B, …]`.
#[derive(Clone, Debug)]
pub struct DdimStepOutput<const D: usize> {
    /// `x_prev = μ + σ_t z` (diffusers' `prev_sample`; `μ` when no noise was given or `σ_t = 0`).
    pub prev_sample: Tensor<D>,
    /// `μ = √ā_prev x̂_0 + √(1 − ā_prev − σ_t²) ε̂`, the mean of the transition (DDPO's
    /// `prev_sample_mean`).
    pub mean: Tensor<D>,
    /// `σ_t = η √((1 − ā_prev)/(1 − ā_t) · (1 − ā_t/ā_prev))`, the transition's standard
    /// deviation, the same for every element.
    pub std: f32,
    /// `x̂_0`, clipped or thresholded as configured (diffusers' `pred_original_sample`).
    pub pred_original: Tensor<D>,
    /// `ε̂`: the model output for ε-prediction, else derived from `x̂_0` (before clipping).
    pub pred_epsilon: Tensor<D>,
}

/// diffusers' `DDIMScheduler`: its noise schedule, timesteps and `step`.
///
/// Scalars (`ā`, `σ_t`, the coefficients) are computed in `f32` from the `f32` `ā_t`, as torch
/// does; `ā_t` itself comes from [`NoiseSchedule`] (f64, rounded once).
///
/// ```
/// use rocm_sampler::DdimScheduler;
///
/// let s = DdimScheduler::sd15();
/// let ts = s.timesteps(20)?;
/// assert_eq!((ts[0], ts[1], ts[19]), (951, 901, 1));
/// assert_eq!(s.prev_timestep(951, 20), Some(901));
/// assert_eq!(s.prev_timestep(1, 20), None); // ā_prev = ā_0 (set_alpha_to_one = false)
/// assert_eq!(s.std(901, None, 0.0), 0.0); // η = 0: deterministic DDIM
/// # Ok::<(), rocm_sampler::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct DdimScheduler {
    config: DdimSchedulerConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
}

impl DdimScheduler {
    /// Builds the scheduler and its noise schedule from a config (validated, `origin`
    /// `<config>` in the errors).
    pub fn new(config: DdimSchedulerConfig) -> Result<Self, Error> {
        config.validate("<config>")?;
        let n = config.num_train_timesteps;
        let mut schedule = match &config.trained_betas {
            Some(betas) => NoiseSchedule::from_betas(betas.clone())?,
            None => {
                NoiseSchedule::new(config.beta_schedule, config.beta_start, config.beta_end, n)?
            }
        };
        if config.rescale_betas_zero_snr {
            schedule = schedule.rescale_zero_terminal_snr();
        }
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        Ok(Self {
            config,
            schedule,
            final_alpha_cumprod,
        })
    }

    /// Stable Diffusion 1.x's DDIM scheduler ([`DdimSchedulerConfig::sd15`]).
    pub fn sd15() -> Self {
        Self::new(DdimSchedulerConfig::sd15()).expect("the SD 1.5 config is valid")
    }

    /// Reads a `scheduler_config.json` ([`DdimSchedulerConfig::from_file`]) and builds the
    /// scheduler.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::new(DdimSchedulerConfig::from_file(path)?)
    }

    /// The config it was built from.
    pub fn config(&self) -> &DdimSchedulerConfig {
        &self.config
    }

    /// The noise schedule `ā_t`.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// `N`, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.config.num_train_timesteps
    }

    /// `ā` after the last step (`t_prev < 0`): 1 when `set_alpha_to_one`, else `ā_0`.
    pub fn final_alpha_cumprod(&self) -> f32 {
        self.final_alpha_cumprod
    }

    /// `ā_t`.
    ///
    /// # Panics
    /// If `t ≥ num_train_timesteps`.
    pub fn alpha_cumprod(&self, t: usize) -> f32 {
        self.schedule.alpha_cumprod(t).unwrap_or_else(|| {
            panic!(
                "timestep {t} ≥ num_train_timesteps = {}",
                self.schedule.num_train_timesteps()
            )
        })
    }

    /// `ā_prev`: `ā_{t_prev}`, or [`DdimScheduler::final_alpha_cumprod`] for `None` (`t_prev < 0`).
    pub fn alpha_cumprod_prev(&self, prev_timestep: Option<usize>) -> f32 {
        prev_timestep.map_or(self.final_alpha_cumprod, |t| self.alpha_cumprod(t))
    }

    /// The `steps` (`K`) inference timesteps, descending, as diffusers' `set_timesteps` with the
    /// configured [`TimestepSpacing`] (and `steps_offset` for `leading`).
    ///
    /// Errors if `steps` is 0, above `num_train_timesteps`, or (with a large `steps_offset`)
    /// would reach `num_train_timesteps`.
    pub fn timesteps(&self, steps: usize) -> Result<Vec<usize>, Error> {
        let n = self.config.num_train_timesteps;
        if steps == 0 {
            return Err(Error::ZeroSteps);
        }
        if steps > n {
            return Err(Error::BadOptions(format!(
                "{steps} DDIM steps, but num_train_timesteps is {n}"
            )));
        }
        let timesteps: Vec<usize> = match self.config.timestep_spacing {
            TimestepSpacing::Leading => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    .map(|i| i * ratio + self.config.steps_offset)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let t = trailing(n, steps);
                // numpy's arange makes one value too many for some K (61, 103, …): diffusers then
                // steps at t = −1, i.e. at ā_{N−1}. Refused rather than reproduced.
                if t.len() != steps || t.iter().any(|&t| t < 0) {
                    return Err(Error::BadOptions(format!(
                        "\"trailing\" spacing gives {} timesteps ending at {:?} for {steps} steps \
                         (diffusers' numpy arange rounding); choose another step count",
                        t.len(),
                        t.last()
                    )));
                }
                t.into_iter().map(|t| t as usize).collect()
            }
            TimestepSpacing::Linspace => linspace(n, steps),
        };
        if let Some(&t) = timesteps.iter().find(|&&t| t >= n) {
            return Err(Error::BadTimesteps {
                timesteps,
                reason: format!(
                    "{t} is not below num_train_timesteps = {n} (steps_offset = {})",
                    self.config.steps_offset
                ),
            });
        }
        Ok(timesteps)
    }

    /// diffusers' `prev_timestep = t − N // K` of a `K`-step run (for every spacing), or `None`
    /// when it is negative (the step then lands on [`DdimScheduler::final_alpha_cumprod`]).
    pub fn prev_timestep(&self, t: usize, num_inference_steps: usize) -> Option<usize> {
        t.checked_sub(self.config.num_train_timesteps / num_inference_steps.max(1))
    }

    /// The DDIM variance at `η = 1` (diffusers' `_get_variance`), in f32:
    /// `(1 − ā_prev)/(1 − ā_t) · (1 − ā_t/ā_prev)`.
    pub fn variance(&self, t: usize, prev_timestep: Option<usize>) -> f32 {
        let a_t = self.alpha_cumprod(t);
        let a_prev = self.alpha_cumprod_prev(prev_timestep);
        ((1.0 - a_prev) / (1.0 - a_t)) * (1.0 - a_t / a_prev)
    }

    /// `σ_t = η √variance` (0 when `η = 0`).
    pub fn std(&self, t: usize, prev_timestep: Option<usize>, eta: f32) -> f32 {
        eta * self.variance(t, prev_timestep).sqrt()
    }

    /// `x̂_0` and `ε̂` from a raw prediction at `t` (diffusers' step 3), `x̂_0` then clipped or
    /// thresholded (step 4):
    /// - epsilon: `x̂_0 = (x_t − √(1−ā_t) ε) / √ā_t`, `ε̂ = ε`
    /// - v_prediction: `x̂_0 = √ā_t x_t − √(1−ā_t) v`, `ε̂ = √ā_t v + √(1−ā_t) x_t`
    /// - sample: `x̂_0 = output`, `ε̂ = (x_t − √ā_t x̂_0) / √(1−ā_t)`
    ///
    /// The prediction's own [`Parameterization`] decides (a UNet reports its scheduler's
    /// `prediction_type`).
    ///
    /// # Shapes
    /// `prediction.output`, `sample` and both outputs: `[B, …]`.
    pub fn predicted_original<const D: usize>(
        &self,
        prediction: Prediction<D>,
        t: usize,
        sample: Tensor<D>,
    ) -> (Tensor<D>, Tensor<D>) {
        let a = self.alpha_cumprod(t);
        let (sqrt_a, sqrt_b) = (a.sqrt(), (1.0 - a).sqrt());
        let out = prediction.output;
        let (x0, eps) = match prediction.parameterization {
            Parameterization::Epsilon => ((sample - out.clone() * sqrt_b).div_scalar(sqrt_a), out),
            Parameterization::VPrediction => (
                sample.clone() * sqrt_a - out.clone() * sqrt_b,
                out * sqrt_a + sample * sqrt_b,
            ),
            Parameterization::Sample => {
                let eps = (sample - out.clone() * sqrt_a).div_scalar(sqrt_b);
                (out, eps)
            }
        };
        let x0 = if self.config.thresholding {
            self.threshold(x0)
        } else if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            x0.clamp(-r, r)
        } else {
            x0
        };
        (x0, eps)
    }

    /// Dynamic thresholding (Saharia et al. 2022, diffusers' `_threshold_sample`): per sample,
    /// `s = clamp(quantile(|x̂_0|, ratio), 1, sample_max_value)` (torch's linear-interpolation
    /// quantile), then `x̂_0 ← clamp(x̂_0, −s, s) / s`. Differentiable through the sorted values.
    ///
    /// # Shapes
    /// `x0` and the output: `[B, …]`.
    pub fn threshold<const D: usize>(&self, x0: Tensor<D>) -> Tensor<D> {
        let dims = x0.dims();
        let batch = dims[0];
        let numel: usize = dims.iter().skip(1).product();
        let flat = x0.reshape([batch, numel]);
        let abs = flat.clone().abs();
        let order = abs.clone().detach().argsort(1);
        let sorted = abs.gather(1, order);
        // torch.quantile: rank = q (n − 1) in the input's dtype, then lerp between its neighbours.
        let rank = self.config.dynamic_thresholding_ratio as f32 * (numel - 1) as f32;
        let below = (rank.floor() as usize).min(numel - 1);
        let above = (rank.ceil() as usize).min(numel - 1);
        let weight = rank - below as f32;
        let lo = sorted.clone().narrow(1, below, 1);
        let hi = sorted.narrow(1, above, 1);
        let s = (lo.clone() + (hi - lo) * weight).clamp(1.0, self.config.sample_max_value as f32);
        let s = s.detach().expand([batch, numel]);
        let clamped = flat.max_pair(s.clone().neg()).min_pair(s.clone());
        (clamped / s).reshape(dims)
    }

    /// One DDIM step from `sample` at `t` to `t_prev` (diffusers' `DDIMScheduler.step` with
    /// `variance_noise = noise`, `use_clipped_model_output = false`):
    ///
    /// ```text
    /// σ_t    = η √((1 − ā_prev)/(1 − ā_t) · (1 − ā_t/ā_prev))
    /// μ      = √ā_prev x̂_0 + √(1 − ā_prev − σ_t²) ε̂
    /// x_prev = μ + σ_t z
    /// ```
    ///
    /// `prev_timestep` is [`DdimScheduler::prev_timestep`] of the run (`None` past `t = 0`);
    /// with `noise = None` (or `σ_t = 0`) `x_prev = μ`.
    ///
    /// # Shapes
    /// `prediction.output`, `sample`, `noise` and every output tensor: `[B, …]`.
    pub fn step<const D: usize>(
        &self,
        prediction: Prediction<D>,
        t: usize,
        prev_timestep: Option<usize>,
        sample: Tensor<D>,
        eta: f32,
        noise: Option<Tensor<D>>,
    ) -> DdimStepOutput<D> {
        let a_prev = self.alpha_cumprod_prev(prev_timestep);
        let (pred_original, pred_epsilon) = self.predicted_original(prediction, t, sample);
        let std = self.std(t, prev_timestep, eta);
        let direction = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let mean = pred_original.clone() * a_prev.sqrt() + pred_epsilon.clone() * direction;
        let prev_sample = match noise {
            Some(z) if eta > 0.0 => mean.clone() + z * std,
            _ => mean.clone(),
        };
        DdimStepOutput {
            prev_sample,
            mean,
            std,
            pred_original,
            pred_epsilon,
        }
    }

    /// `log N(x_prev; μ, σ_t² I)` averaged over each sample's elements, with `x_prev` detached
    /// (DDPO's `ddim_step_with_logprob`; [`gaussian_log_prob`]):
    /// `mean_i[−(x_prev − μ)²/(2σ_t²)] − ln σ_t − ½ ln 2π`. Needs `σ_t > 0` (`η > 0`).
    ///
    /// # Shapes
    /// - `x_prev`, `mean`: `[B, …]`
    /// - output: `[B]`
    pub fn step_log_prob<const D: usize>(
        &self,
        x_prev: Tensor<D>,
        mean: Tensor<D>,
        std: f32,
    ) -> Tensor<1> {
        gaussian_log_prob(x_prev.detach(), mean, std)
    }
}

impl Default for DdimScheduler {
    fn default() -> Self {
        Self::sd15()
    }
}

/// numpy's `round(arange(n, 0, −n/k)).astype(int64) − 1` (round half to even), which can have
/// `k + 1` values, the last `−1`.
fn trailing(n: usize, k: usize) -> Vec<i64> {
    let step = -(n as f64 / k as f64);
    let start = n as f64;
    // numpy: len = ceil((stop − start) / step); values start + i · δ with the rounded
    // δ = (start + step) − start (its `fill`).
    let len = ((0.0 - start) / step).ceil() as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| (start + i as f64 * delta).round_ties_even() as i64 - 1)
        .collect()
}

/// numpy's `round(linspace(0, n − 1, k))[::-1]` (round half to even).
fn linspace(n: usize, k: usize) -> Vec<usize> {
    let stop = (n - 1) as f64;
    if k == 1 {
        return vec![0];
    }
    let step = stop / (k - 1) as f64;
    let mut t: Vec<usize> = (0..k)
        .map(|i| {
            let v = if i == k - 1 { stop } else { i as f64 * step };
            v.round_ties_even() as usize
        })
        .collect();
    t.reverse();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_timesteps_of_every_spacing() {
        let s = DdimScheduler::sd15();
        let leading: Vec<usize> = (0..20).rev().map(|i| 50 * i + 1).collect();
        assert_eq!(s.timesteps(20).unwrap(), leading);
        assert_eq!(s.timesteps(20).unwrap()[..3], [951, 901, 851]);
        assert_eq!(*s.timesteps(50).unwrap().last().unwrap(), 1);
        assert_eq!(s.timesteps(1).unwrap(), [1]);
        let with = |spacing| {
            DdimScheduler::new(DdimSchedulerConfig {
                timestep_spacing: spacing,
                ..DdimSchedulerConfig::sd15()
            })
            .unwrap()
        };
        let trailing: Vec<usize> = (1..=20).rev().map(|i| 50 * i - 1).collect();
        assert_eq!(
            with(TimestepSpacing::Trailing).timesteps(20).unwrap(),
            trailing
        );
        assert_eq!(
            with(TimestepSpacing::Trailing).timesteps(3).unwrap(),
            [999, 666, 332]
        );
        let linspace = with(TimestepSpacing::Linspace).timesteps(20).unwrap();
        assert_eq!(
            (linspace[0], linspace[1], linspace[18], linspace[19]),
            (999, 946, 53, 0)
        );
        assert_eq!(with(TimestepSpacing::Linspace).timesteps(1).unwrap(), [0]);
        // diffusers would visit 62 timesteps, the last −1.
        assert!(with(TimestepSpacing::Trailing).timesteps(61).is_err());
    }

    #[test]
    fn bad_step_counts_and_configs_are_errors() {
        let s = DdimScheduler::sd15();
        assert!(matches!(s.timesteps(0), Err(Error::ZeroSteps)));
        assert!(s.timesteps(1001).is_err());
        // 1000 leading steps with steps_offset = 1 reach t = 1000.
        assert!(matches!(s.timesteps(1000), Err(Error::BadTimesteps { .. })));
        let bad = DdimSchedulerConfig {
            clip_sample: true,
            clip_sample_range: -1.0,
            ..DdimSchedulerConfig::sd15()
        };
        let msg = DdimScheduler::new(bad).unwrap_err().to_string();
        assert!(
            msg.contains("clip_sample_range") && msg.contains("<config>"),
            "{msg}"
        );
        let msg = DdimSchedulerConfig::from_json_str(r#"{"beta_start": 2.0}"#)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("beta_start") && msg.contains("<string>"),
            "{msg}"
        );
        let msg = DdimSchedulerConfig::from_json_str(r#"{"timestep_spacing": "evenly"}"#)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("evenly"), "{msg}");
    }

    #[test]
    fn sd15_config_reads_like_diffusers_from_config() {
        // runwayml/stable-diffusion-v1-5's scheduler/scheduler_config.json (a PNDM config).
        let json = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;
        let c = DdimSchedulerConfig::from_json_str(json).unwrap();
        assert_eq!(c, DdimSchedulerConfig::sd15());
        let s = DdimScheduler::new(c).unwrap();
        assert_eq!(s.final_alpha_cumprod(), s.alpha_cumprod(0));
    }

    #[test]
    fn eta_zero_is_deterministic_and_eta_one_is_ddpm_like() {
        let device = Device::flex();
        let s = DdimScheduler::sd15();
        let x = Tensor::<2>::from_floats([[0.5, -1.0, 2.0]], &device);
        let eps = Tensor::<2>::from_floats([[1.0, 0.3, -0.7]], &device);
        let z = Tensor::<2>::from_floats([[9.0, 9.0, 9.0]], &device);
        let prediction = || Prediction {
            output: eps.clone(),
            parameterization: Parameterization::Epsilon,
        };
        let out = s.step(
            prediction(),
            501,
            Some(451),
            x.clone(),
            0.0,
            Some(z.clone()),
        );
        assert_eq!(out.std, 0.0);
        assert_eq!(out.prev_sample.to_data(), out.mean.to_data());
        // η = 0: μ = √ā_prev x̂_0 + √(1 − ā_prev) ε.
        let (a, ap) = (s.alpha_cumprod(501), s.alpha_cumprod(451));
        let x0 = (x.clone() - eps.clone() * (1.0 - a).sqrt()) / a.sqrt();
        let want = x0 * ap.sqrt() + eps.clone() * (1.0 - ap).sqrt();
        let diff = (out.mean - want).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
        // η = 1: σ² = (1 − ā_prev)/(1 − ā_t) (1 − ā_t/ā_prev), the DDPM posterior variance.
        let out = s.step(prediction(), 501, Some(451), x, 1.0, Some(z.clone()));
        let var = (1.0 - ap) / (1.0 - a) * (1.0 - a / ap);
        assert!((out.std - var.sqrt()).abs() < 1e-7);
        let diff = (out.prev_sample - out.mean - z * out.std)
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
        // set_alpha_to_one: the last step lands on ā = 1 with σ = 0.
        let one = DdimScheduler::new(DdimSchedulerConfig {
            set_alpha_to_one: true,
            ..DdimSchedulerConfig::sd15()
        })
        .unwrap();
        assert_eq!(one.std(1, one.prev_timestep(1, 20), 1.0), 0.0);
    }

    #[test]
    fn every_parameterization_recovers_x0_and_eps() {
        let device = Device::flex();
        let s = DdimScheduler::sd15();
        let t = 499;
        let a = s.alpha_cumprod(t);
        let x0 = Tensor::<2>::from_floats([[0.5, -1.0, 2.0]], &device);
        let eps = Tensor::<2>::from_floats([[1.0, 0.3, -0.7]], &device);
        let xt = x0.clone() * a.sqrt() + eps.clone() * (1.0 - a).sqrt();
        let v = eps.clone() * a.sqrt() - x0.clone() * (1.0 - a).sqrt();
        for (output, parameterization) in [
            (eps.clone(), Parameterization::Epsilon),
            (v, Parameterization::VPrediction),
            (x0.clone(), Parameterization::Sample),
        ] {
            let prediction = Prediction {
                output,
                parameterization,
            };
            let (got_x0, got_eps) = s.predicted_original(prediction, t, xt.clone());
            let e0 = (got_x0 - x0.clone()).abs().max().into_scalar::<f32>();
            let e1 = (got_eps - eps.clone()).abs().max().into_scalar::<f32>();
            assert!(e0 < 1e-5 && e1 < 1e-5, "{parameterization:?}: {e0} {e1}");
        }
    }

    #[test]
    fn log_prob_of_the_mean_is_the_normalising_constant() {
        let device = Device::flex();
        let s = DdimScheduler::sd15();
        let mean = Tensor::<2>::from_floats([[1.0, 2.0], [0.0, 0.0]], &device);
        let off = mean.clone() + Tensor::from_floats([[0.5, 0.0], [0.0, 0.0]], &device);
        let lp = s
            .step_log_prob(off, mean, 0.5)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let c = -(0.5f32).ln() - 0.5 * (2.0 * std::f32::consts::PI).ln();
        // Sample 0 is off by σ in one of two elements: −½ · ½ on average.
        assert!((lp[0] - (c - 0.25)).abs() < 1e-6, "{lp:?}");
        assert!((lp[1] - c).abs() < 1e-6, "{lp:?}");
    }

    #[test]
    fn thresholding_clamps_to_the_quantile() {
        let device = Device::flex();
        let s = DdimScheduler::new(DdimSchedulerConfig {
            thresholding: true,
            dynamic_thresholding_ratio: 0.5,
            sample_max_value: 10.0,
            ..DdimSchedulerConfig::sd15()
        })
        .unwrap();
        // |x| sorted = [1, 2, 4, 8, 16]: the median 4 is the threshold; a row whose quantile is
        // below 1 is only clipped to ±1.
        let x = Tensor::<2>::from_floats(
            [[1.0, -16.0, 4.0, 2.0, -8.0], [0.1, -0.2, 3.0, 0.3, 0.0]],
            &device,
        );
        let got = s.threshold(x).into_data().try_into_vec::<f32>().unwrap();
        let want = [0.25, -1.0, 1.0, 0.5, -1.0, 0.1, -0.2, 1.0, 0.3, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }
}
