//! The forward-noising schedule `ā_t` of a discrete-time diffusion model (diffusers' `betas`).

use serde::{Deserialize, Serialize};

use crate::Error;

/// How the betas are spaced (diffusers' `beta_schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `β_i = β_start + i/(N−1) (β_end − β_start)`.
    #[serde(rename = "linear")]
    Linear,
    /// `β_i = (√β_start + i/(N−1) (√β_end − √β_start))²`: Stable Diffusion's schedule.
    #[default]
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// Cosine schedule (Nichol & Dhariwal 2021): `β_i = min(1 − ᾱ((i+1)/N) / ᾱ(i/N), 0.999)`,
    /// `ᾱ(s) = cos²((s + 0.008)/1.008 · π/2)`.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// The cumulative signal level `ā_t = Π_{i≤t} (1 − β_i)` for `t ∈ 0..N`.
///
/// Computed in `f64` and stored in `f32` (diffusers computes in `f32`; the two agree to a few
/// `1e-7`). The noisy latent at timestep `t` is `x_t = √ā_t x_0 + √(1 − ā_t) ε`.
///
/// # Shapes
/// - [`NoiseSchedule::alphas_cumprod`]: `[N]`, `N = num_train_timesteps`
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f32>,
}

/// The most training timesteps a schedule may have (diffusers' models use 1000): a config that
/// declares more is refused before its betas are allocated.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

impl NoiseSchedule {
    /// Builds a schedule of `num_train_timesteps` betas of the given kind (`beta_start` and
    /// `beta_end` are ignored by [`BetaSchedule::SquaredcosCapV2`]).
    pub fn new(
        kind: BetaSchedule,
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
    ) -> Result<Self, Error> {
        let n = num_train_timesteps;
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(Error::BadSchedule(format!(
                "num_train_timesteps = {n}, need 2..={MAX_TRAIN_TIMESTEPS}"
            )));
        }
        let lerp = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (n - 1) as f64;
        let betas = match kind {
            BetaSchedule::Linear => (0..n).map(|i| lerp(beta_start, beta_end, i)).collect(),
            BetaSchedule::ScaledLinear => (0..n)
                .map(|i| lerp(beta_start.sqrt(), beta_end.sqrt(), i).powi(2))
                .collect(),
            BetaSchedule::SquaredcosCapV2 => {
                let abar = |s: f64| {
                    ((s + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - abar(t2) / abar(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        Self::from_betas(betas)
    }

    /// Stable Diffusion 1.x's schedule: `scaled_linear`, `β ∈ [0.00085, 0.012]`, 1000 steps.
    pub fn sd15() -> Self {
        Self::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000)
            .expect("the SD 1.5 schedule is valid")
    }

    /// Builds a schedule from explicit betas (diffusers' `trained_betas`), each in `(0, 1)`.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self, Error> {
        if betas.len() < 2 {
            return Err(Error::BadSchedule(format!(
                "{} betas, need at least 2",
                betas.len()
            )));
        }
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(**b > 0.0 && **b < 1.0))
        {
            return Err(Error::BadSchedule(format!(
                "beta[{i}] = {b} is not in (0, 1)"
            )));
        }
        let alphas_cumprod = betas
            .iter()
            .scan(1.0f64, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc as f32)
            })
            .collect();
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    /// Rescales the betas to zero terminal SNR (Lin et al. 2023, diffusers'
    /// `rescale_betas_zero_snr`): `√ā` is shifted and scaled so that `√ā_{N−1} = 0` while `√ā_0` is
    /// kept. The last `ā` becomes 0 (pure noise).
    pub fn rescale_zero_terminal_snr(self) -> Self {
        let sqrt_abar: Vec<f64> = self
            .betas
            .iter()
            .scan(1.0f64, |acc, b| {
                *acc *= 1.0 - b;
                Some(acc.sqrt())
            })
            .collect();
        let (first, last) = (sqrt_abar[0], sqrt_abar[sqrt_abar.len() - 1]);
        let abar: Vec<f64> = sqrt_abar
            .iter()
            .map(|s| ((s - last) * first / (first - last)).powi(2))
            .collect();
        let mut betas = Vec::with_capacity(abar.len());
        betas.push(1.0 - abar[0]);
        betas.extend(abar.windows(2).map(|w| 1.0 - w[1] / w[0]));
        let alphas_cumprod = abar.iter().map(|a| *a as f32).collect();
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// `N`, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `ā_t` for every `t ∈ 0..N`.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The betas `β_t` (f64) for every `t ∈ 0..N`.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `ā_t`, or `None` when `t ≥ N`.
    pub fn alpha_cumprod(&self, t: usize) -> Option<f32> {
        self.alphas_cumprod.get(t).copied()
    }
}

impl Default for NoiseSchedule {
    fn default() -> Self {
        Self::sd15()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_matches_the_spec_checks() {
        let s = NoiseSchedule::sd15();
        assert_eq!(s.num_train_timesteps(), 1000);
        assert!((s.alphas_cumprod()[0] - 0.99915).abs() < 1e-6);
        assert!(
            (s.alphas_cumprod()[999] - 0.004660).abs() < 1e-6,
            "{}",
            s.alphas_cumprod()[999]
        );
        assert!(s.alphas_cumprod().windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn linear_and_cosine_are_monotone() {
        for kind in [BetaSchedule::Linear, BetaSchedule::SquaredcosCapV2] {
            let s = NoiseSchedule::new(kind, 0.0001, 0.02, 1000).unwrap();
            assert!(
                s.alphas_cumprod().windows(2).all(|w| w[1] < w[0]),
                "{kind:?}"
            );
        }
        let lin = NoiseSchedule::new(BetaSchedule::Linear, 0.0001, 0.02, 1000).unwrap();
        assert!((lin.betas()[999] - 0.02).abs() < 1e-15);
    }

    #[test]
    fn zero_snr_ends_at_zero_and_keeps_the_start() {
        let s = NoiseSchedule::sd15();
        let a0 = s.alphas_cumprod()[0];
        let z = s.rescale_zero_terminal_snr();
        assert_eq!(z.alphas_cumprod()[999], 0.0);
        assert!((z.alphas_cumprod()[0] - a0).abs() < 1e-6);
    }

    #[test]
    fn bad_betas_are_errors() {
        assert!(NoiseSchedule::from_betas(vec![0.1]).is_err());
        assert!(NoiseSchedule::from_betas(vec![0.1, 1.0]).is_err());
        assert!(NoiseSchedule::new(BetaSchedule::Linear, 0.1, 0.2, 1).is_err());
    }

    #[test]
    fn beta_schedule_names_match_diffusers() {
        let k: BetaSchedule = serde_json::from_str("\"squaredcos_cap_v2\"").unwrap();
        assert_eq!(k, BetaSchedule::SquaredcosCapV2);
    }
}
