//! The LCM scheduler: timesteps, boundary condition and one consistency step (diffusers'
//! `scheduling_lcm.py`, docs/method.md §1).

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{BetaSchedule, Error, NoiseSchedule, Parameterization, Prediction};

/// `σ_data` of the consistency-model boundary condition (fixed in diffusers and the LCM code).
pub const SIGMA_DATA: f64 = 0.5;

/// diffusers' `LCMScheduler` `scheduler_config.json`, field for field, with diffusers' defaults.
///
/// Unknown keys (`_class_name`, `_diffusers_version`) are ignored. `set_alpha_to_one`,
/// `steps_offset` and `timestep_spacing` are parsed but, as in diffusers' `LCMScheduler`, never
/// change the LCM schedule; `thresholding = true` is rejected by [`LcmScheduler::new`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LcmSchedulerConfig {
    /// `N`, the number of training timesteps (1000).
    pub num_train_timesteps: usize,
    /// First beta (0.00085).
    pub beta_start: f64,
    /// Last beta (0.012).
    pub beta_end: f64,
    /// Beta spacing (`scaled_linear`).
    pub beta_schedule: BetaSchedule,
    /// Explicit betas that replace the three fields above (`null`).
    pub trained_betas: Option<Vec<f64>>,
    /// Steps of the distillation schedule the timesteps are drawn from (50).
    pub original_inference_steps: usize,
    /// Clamp `x̂_0` to `±clip_sample_range` (`false`).
    pub clip_sample: bool,
    /// The clamp bound (1.0).
    pub clip_sample_range: f64,
    /// `ā` used after `t = 0` (`true`: 1.0); unused by LCM, which never steps past its last timestep.
    pub set_alpha_to_one: bool,
    /// Unused by LCM (0).
    pub steps_offset: usize,
    /// What the network predicts (`epsilon`).
    pub prediction_type: Parameterization,
    /// Dynamic thresholding (`false`; `true` is not supported).
    pub thresholding: bool,
    /// Dynamic thresholding quantile (0.995); unused.
    pub dynamic_thresholding_ratio: f64,
    /// Dynamic thresholding bound (1.0); unused.
    pub sample_max_value: f64,
    /// Unused by LCM (`leading`); see [`LcmSpacing`] for the LCM choice.
    pub timestep_spacing: String,
    /// `s = timestep_scaling · t` in the boundary condition (10).
    pub timestep_scaling: f64,
    /// Rescale the betas to zero terminal SNR (`false`).
    pub rescale_betas_zero_snr: bool,
}

impl Default for LcmSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
            original_inference_steps: 50,
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: Parameterization::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: "leading".into(),
            timestep_scaling: 10.0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl LcmSchedulerConfig {
    /// Parses a `scheduler_config.json` held in a string.
    pub fn from_json_str(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json).map_err(|source| Error::Json {
            origin: "<string>".into(),
            source,
        })
    }

    /// Reads a diffusers `scheduler/scheduler_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&json).map_err(|source| Error::Json {
            origin: path.display().to_string(),
            source,
        })
    }
}

/// How `K` inference timesteps are picked from the `original_inference_steps` distillation
/// timesteps `origin = [N−c, N−2c, …, c−1]` (descending, `c = N / original_inference_steps`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LcmSpacing {
    /// diffusers ≥ 0.24: `t_k = origin[⌊k · n / K⌋]`, `n = len(origin)`.
    /// K = 8 → `[999, 879, 759, 639, 499, 379, 259, 139]`.
    #[default]
    #[serde(rename = "evenly")]
    Evenly,
    /// The LCM paper's code and RLCM: `origin[::⌊n/K⌋][:K]`.
    /// K = 8 → `[999, 879, 759, 639, 519, 399, 279, 159]`.
    #[serde(rename = "original")]
    Original,
}

/// The output of [`LcmScheduler::step`].
///
/// # Shapes
/// Both tensors have the latent's shape `[B, …]`.
#[derive(Clone, Debug)]
pub struct LcmStepOutput<const D: usize> {
    /// `f_θ(x_k, t_k) = c_skip x_k + c_out x̂_0` (diffusers' `denoised`).
    pub denoised: Tensor<D>,
    /// `x_{k+1} = √ā_{t_{k+1}} f_θ + √(1 − ā_{t_{k+1}}) z_k`, or `f_θ` on the last step
    /// (diffusers' `prev_sample`).
    pub prev_sample: Tensor<D>,
}

/// The LCM multistep scheduler (Luo et al. 2023; diffusers' `LCMScheduler`).
///
/// ```text
/// c_skip(t) = σ_d² / (s² + σ_d²),   c_out(t) = s / √(s² + σ_d²),   s = timestep_scaling · t, σ_d = 0.5
/// f_θ(x, t) = c_skip(t) x + c_out(t) x̂_0(x, t)
/// ```
#[derive(Clone, Debug)]
pub struct LcmScheduler {
    config: LcmSchedulerConfig,
    schedule: NoiseSchedule,
}

impl LcmScheduler {
    /// Builds the scheduler and its noise schedule from a config.
    pub fn new(config: LcmSchedulerConfig) -> Result<Self, Error> {
        let n = config.num_train_timesteps;
        if config.original_inference_steps == 0 || config.original_inference_steps > n {
            return Err(Error::BadOriginalSteps {
                original: config.original_inference_steps,
                num_train_timesteps: n,
            });
        }
        if config.thresholding {
            return Err(Error::BadOptions(
                "dynamic thresholding is not supported".into(),
            ));
        }
        let mut schedule = match &config.trained_betas {
            Some(betas) => NoiseSchedule::from_betas(betas.clone())?,
            None => {
                NoiseSchedule::new(config.beta_schedule, config.beta_start, config.beta_end, n)?
            }
        };
        if schedule.num_train_timesteps() != n {
            return Err(Error::BadSchedule(format!(
                "{} trained betas for num_train_timesteps = {n}",
                schedule.num_train_timesteps()
            )));
        }
        if config.rescale_betas_zero_snr {
            schedule = schedule.rescale_zero_terminal_snr();
        }
        Ok(Self { config, schedule })
    }

    /// The scheduler of Stable Diffusion 1.5 LCMs (`LCM_Dreamshaper_v7`): the default config.
    pub fn sd15() -> Self {
        Self::new(LcmSchedulerConfig::default()).expect("the default config is valid")
    }

    /// The config it was built from.
    pub fn config(&self) -> &LcmSchedulerConfig {
        &self.config
    }

    /// The noise schedule `ā_t`.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
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

    /// The distillation timesteps, descending: `[N−1, N−1−c, …, c−1]`, `c = N / original_inference_steps`.
    pub fn origin_timesteps(&self) -> Vec<usize> {
        let c = self.config.num_train_timesteps / self.config.original_inference_steps;
        (1..=self.config.original_inference_steps)
            .rev()
            .map(|i| i * c - 1)
            .collect()
    }

    /// The `steps` inference timesteps, descending (see [`LcmSpacing`]).
    ///
    /// Errors if `steps` is 0 or above `original_inference_steps`.
    pub fn timesteps(&self, steps: usize, spacing: LcmSpacing) -> Result<Vec<usize>, Error> {
        let origin = self.origin_timesteps();
        let n = origin.len();
        if steps == 0 {
            return Err(Error::ZeroSteps);
        }
        if steps > n {
            return Err(Error::TooManySteps { steps, original: n });
        }
        Ok(match spacing {
            // numpy's `floor(linspace(0, n, K, endpoint=False))`, float rounding included.
            LcmSpacing::Evenly => {
                let step = n as f64 / steps as f64;
                (0..steps)
                    .map(|k| origin[(k as f64 * step).floor() as usize])
                    .collect()
            }
            LcmSpacing::Original => origin
                .iter()
                .step_by(n / steps)
                .take(steps)
                .copied()
                .collect(),
        })
    }

    /// Checks a custom timestep list: non-empty, strictly descending, below `num_train_timesteps`.
    /// Timesteps off the distillation schedule are allowed (with a logged warning, as diffusers).
    pub fn custom_timesteps(&self, timesteps: &[usize]) -> Result<Vec<usize>, Error> {
        let bad = |reason: String| Error::BadTimesteps {
            timesteps: timesteps.to_vec(),
            reason,
        };
        let n = self.config.num_train_timesteps;
        match timesteps.first() {
            None => return Err(bad("the list is empty".into())),
            Some(&t0) if t0 >= n => {
                return Err(bad(format!("{t0} is not below num_train_timesteps = {n}")));
            }
            _ => {}
        }
        if let Some(w) = timesteps.windows(2).find(|w| w[1] >= w[0]) {
            return Err(bad(format!(
                "not strictly descending ({} then {})",
                w[0], w[1]
            )));
        }
        let origin = self.origin_timesteps();
        let off: Vec<usize> = timesteps
            .iter()
            .filter(|t| !origin.contains(t))
            .copied()
            .collect();
        if !off.is_empty() {
            log::warn!("custom timesteps {off:?} are not on the LCM distillation schedule");
        }
        Ok(timesteps.to_vec())
    }

    /// The boundary-condition scalings `(c_skip(t), c_out(t))`, in `f64`.
    pub fn boundary_condition(&self, t: usize) -> (f64, f64) {
        let s = t as f64 * self.config.timestep_scaling;
        let sd2 = SIGMA_DATA * SIGMA_DATA;
        (sd2 / (s * s + sd2), s / (s * s + sd2).sqrt())
    }

    /// The clean-sample estimate `x̂_0` from a raw prediction at timestep `t` (clamped when
    /// `clip_sample`):
    /// - epsilon: `(x_t − √(1−ā_t) ε) / √ā_t`
    /// - v_prediction: `√ā_t x_t − √(1−ā_t) v`
    /// - sample: the output
    ///
    /// # Shapes
    /// `prediction.output`, `sample` and the result: `[B, …]`.
    pub fn predicted_original<const D: usize>(
        &self,
        prediction: Prediction<D>,
        t: usize,
        sample: Tensor<D>,
    ) -> Tensor<D> {
        let a = self.alpha_cumprod(t);
        let (sqrt_a, sqrt_b) = (a.sqrt(), (1.0 - a).sqrt());
        let x0 = match prediction.parameterization {
            Parameterization::Epsilon => (sample - prediction.output * sqrt_b).div_scalar(sqrt_a),
            Parameterization::VPrediction => sample * sqrt_a - prediction.output * sqrt_b,
            Parameterization::Sample => prediction.output,
        };
        if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            x0.clamp(-r, r)
        } else {
            x0
        }
    }

    /// The consistency function `f_θ(x_t, t) = c_skip(t) x_t + c_out(t) x̂_0`.
    ///
    /// # Shapes
    /// `prediction.output`, `sample` and the result: `[B, …]`.
    pub fn denoise<const D: usize>(
        &self,
        prediction: Prediction<D>,
        t: usize,
        sample: Tensor<D>,
    ) -> Tensor<D> {
        let (c_skip, c_out) = self.boundary_condition(t);
        let x0 = self.predicted_original(prediction, t, sample.clone());
        x0 * (c_out as f32) + sample * (c_skip as f32)
    }

    /// Re-noises a denoised sample to timestep `t_next`:
    /// `√ā_{t_next} f_θ + √(1 − ā_{t_next}) z`.
    ///
    /// # Shapes
    /// `denoised`, `noise` and the result: `[B, …]`.
    pub fn renoise<const D: usize>(
        &self,
        denoised: Tensor<D>,
        t_next: usize,
        noise: Tensor<D>,
    ) -> Tensor<D> {
        let (mean_scale, std) = self.transition_scales(t_next);
        denoised * mean_scale + noise * std
    }

    /// `(√ā_{t_next}, √(1 − ā_{t_next}))`: the policy mean's scale and its standard deviation.
    pub fn transition_scales(&self, t_next: usize) -> (f32, f32) {
        let a = self.alpha_cumprod(t_next);
        (a.sqrt(), (1.0 - a).sqrt())
    }

    /// One LCM step (diffusers' `LCMScheduler.step`): the denoised sample, and the next state
    /// re-noised to `t_next` with `noise`, or the denoised sample itself when `t_next` is `None`
    /// (the last step).
    ///
    /// # Shapes
    /// All tensors: `[B, …]`.
    pub fn step<const D: usize>(
        &self,
        prediction: Prediction<D>,
        t: usize,
        t_next: Option<(usize, Tensor<D>)>,
        sample: Tensor<D>,
    ) -> LcmStepOutput<D> {
        let denoised = self.denoise(prediction, t, sample);
        let prev_sample = match t_next {
            Some((t_next, noise)) => self.renoise(denoised.clone(), t_next, noise),
            None => denoised.clone(),
        };
        LcmStepOutput {
            denoised,
            prev_sample,
        }
    }
}

impl Default for LcmScheduler {
    fn default() -> Self {
        Self::sd15()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_match_method_md() {
        let s = LcmScheduler::sd15();
        assert_eq!(
            s.timesteps(8, LcmSpacing::Evenly).unwrap(),
            [999, 879, 759, 639, 499, 379, 259, 139]
        );
        assert_eq!(
            s.timesteps(4, LcmSpacing::Evenly).unwrap(),
            [999, 759, 499, 259]
        );
        assert_eq!(
            s.timesteps(8, LcmSpacing::Original).unwrap(),
            [999, 879, 759, 639, 519, 399, 279, 159]
        );
        assert_eq!(s.timesteps(1, LcmSpacing::Original).unwrap(), [999]);
        assert_eq!(
            s.timesteps(50, LcmSpacing::Evenly).unwrap(),
            s.origin_timesteps()
        );
    }

    #[test]
    fn bad_step_counts_are_errors() {
        let s = LcmScheduler::sd15();
        assert!(matches!(
            s.timesteps(0, LcmSpacing::Evenly),
            Err(Error::ZeroSteps)
        ));
        assert!(matches!(
            s.timesteps(51, LcmSpacing::Original),
            Err(Error::TooManySteps {
                steps: 51,
                original: 50
            })
        ));
        assert!(s.custom_timesteps(&[]).is_err());
        assert!(s.custom_timesteps(&[999, 999]).is_err());
        assert!(s.custom_timesteps(&[500, 700]).is_err());
        assert!(s.custom_timesteps(&[1000, 500]).is_err());
        assert_eq!(s.custom_timesteps(&[999, 500, 3]).unwrap(), [999, 500, 3]);
        let cfg = LcmSchedulerConfig {
            original_inference_steps: 0,
            ..Default::default()
        };
        assert!(LcmScheduler::new(cfg).is_err());
    }

    #[test]
    fn boundary_condition_matches_the_formula() {
        let s = LcmScheduler::sd15();
        let (c_skip, c_out) = s.boundary_condition(0);
        assert_eq!((c_skip, c_out), (1.0, 0.0));
        let (c_skip, c_out) = s.boundary_condition(999);
        let sc = 9990.0f64;
        assert!((c_skip - 0.25 / (sc * sc + 0.25)).abs() < 1e-18);
        assert!((c_out - sc / (sc * sc + 0.25).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn denoise_inverts_the_forward_process_for_every_parameterization() {
        let device = Device::flex();
        let s = LcmScheduler::sd15();
        let t = 499;
        let a = s.alpha_cumprod(t);
        let x0 = Tensor::<2>::from_floats([[0.5, -1.0, 2.0]], &device);
        let eps = Tensor::<2>::from_floats([[1.0, 0.3, -0.7]], &device);
        let xt = x0.clone() * a.sqrt() + eps.clone() * (1.0 - a).sqrt();
        let v = eps.clone() * a.sqrt() - x0.clone() * (1.0 - a).sqrt();
        for (output, parameterization) in [
            (eps, Parameterization::Epsilon),
            (v, Parameterization::VPrediction),
            (x0.clone(), Parameterization::Sample),
        ] {
            let got = s.predicted_original(
                Prediction {
                    output,
                    parameterization,
                },
                t,
                xt.clone(),
            );
            let diff = (got - x0.clone()).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "{parameterization:?}: {diff}");
        }
    }

    #[test]
    fn config_parses_a_diffusers_file_with_defaults() {
        let json = r#"{"_class_name": "LCMScheduler", "beta_schedule": "scaled_linear",
            "prediction_type": "v_prediction", "steps_offset": 1, "trained_betas": null}"#;
        let c = LcmSchedulerConfig::from_json_str(json).unwrap();
        assert_eq!(c.prediction_type, Parameterization::VPrediction);
        assert_eq!((c.original_inference_steps, c.timestep_scaling), (50, 10.0));
        assert!(LcmSchedulerConfig::from_json_str("{\"prediction_type\": \"x\"}").is_err());
    }
}
