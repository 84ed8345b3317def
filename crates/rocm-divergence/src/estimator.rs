//! Estimators of per-element expectations under a Gaussian: quadrature or Monte Carlo.

use burn::prelude::*;

use crate::hermite::GaussHermite;

/// The default number of Gauss–Hermite nodes: enough for 1e-6 relative accuracy of the
/// Jensen–Shannon divergence for every mean distance up to |d|/s = 6 and beyond.
pub const DEFAULT_QUADRATURE_NODES: usize = 64;

/// Quadrature weights below this are dropped: in f32 they would only turn an overflowing
/// integrand value into `NaN`. Their total mass is below 1e-28; the remaining nodes satisfy
/// `ξ²/2 < 69`, which keeps `e^{log p/q}` finite for any pair of standard deviations.
const MIN_WEIGHT: f64 = 1e-30;

/// How an expectation `E_{x~N(μ, s²)}[g(x)]` of each element is estimated.
///
/// Both estimators write `x = μ + s ξ` with standard-normal `ξ` (the reparameterisation trick),
/// so the estimate is differentiable in `μ` and `s`.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // built once per call; boxing the noise buys nothing
pub enum Estimator {
    /// Gauss–Hermite quadrature with the given number of nodes per element: deterministic,
    /// differentiable, exact for polynomial integrands of degree < 2n. The default (64 nodes).
    Quadrature(usize),
    /// Reparameterised Monte Carlo with caller-supplied standard-normal noise `ξ`, shape
    /// `[S, B, N]` (`S` samples of the flattened `[B, N]` elements). The estimate is the sample
    /// mean; pass fresh noise for every call.
    MonteCarlo(Tensor<3>),
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator::Quadrature(DEFAULT_QUADRATURE_NODES)
    }
}

/// Standard-normal points and their weights, laid out to broadcast against `[B, N, 1]`.
pub(crate) struct Points {
    /// `ξ`: `[1, 1, S]` (quadrature) or `[B, N, S]` (Monte Carlo).
    pub xi: Tensor<3>,
    /// Weights summing to 1: `[1, 1, S]`.
    pub weights: Tensor<3>,
}

impl Points {
    /// `Σ_s ω_s g_s` for integrand values `[B, N, S]` → `[B, N]`.
    pub fn expectation(&self, values: Tensor<3>) -> Tensor<2> {
        (values * self.weights.clone()).sum_dim(2).squeeze_dim(2)
    }
}

impl Estimator {
    /// The points for a `[B, N]` batch of elements.
    ///
    /// # Panics
    /// If Monte Carlo noise is not `[S, B, N]`; the message names both shapes.
    pub(crate) fn points(&self, batch: usize, elements: usize, device: &Device) -> Points {
        match self {
            Estimator::Quadrature(n) => {
                // Outer nodes whose weight is below f32's reach contribute nothing but can
                // overflow the integrand (`inf · 0 = NaN`): they are dropped.
                let rule = GaussHermite::new(*n);
                let (xi, w): (Vec<f32>, Vec<f32>) = rule
                    .nodes
                    .iter()
                    .zip(&rule.weights)
                    .filter(|&(_, &w)| w >= MIN_WEIGHT)
                    .map(|(&x, &w)| (x as f32, w as f32))
                    .unzip();
                let kept = xi.len();
                Points {
                    xi: Tensor::from_data(TensorData::new(xi, [1, 1, kept]), device),
                    weights: Tensor::from_data(TensorData::new(w, [1, 1, kept]), device),
                }
            }
            Estimator::MonteCarlo(noise) => {
                let [s, b, n] = noise.dims();
                assert!(
                    b == batch && n == elements && s > 0,
                    "Monte Carlo noise has shape {:?} but the Gaussians need [S, {batch}, {elements}]",
                    noise.dims()
                );
                Points {
                    xi: noise.clone().permute([1, 2, 0]),
                    weights: Tensor::full([1, 1, s], 1.0 / s as f64, device),
                }
            }
        }
    }
}
