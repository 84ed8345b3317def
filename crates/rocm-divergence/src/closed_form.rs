//! Divergences with closed forms for diagonal Gaussians of any variances.

use burn::prelude::*;

use crate::math::expm1;
use crate::{DiagGaussian, FDivergence};

/// Kullback–Leibler divergence `KL(p‖q) = E_p[log p/q]`, generator `f(u) = u log u`.
///
/// Per element, with `d = μ_p − μ_q` and `ρ = s_p²/s_q²`:
/// ```text
/// KL = ½ (ρ − 1 − log ρ) + d² / (2 s_q²)      (= d²/(2s²) for equal variances)
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kl;

/// Reverse Kullback–Leibler divergence `KL(q‖p) = E_q[log q/p]`, generator `f(u) = −log u`.
///
/// Per element: `½ (1/ρ − 1 + log ρ) + d² / (2 s_p²)`; equal to [`Kl`] for equal variances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseKl;

/// Squared Hellinger distance `H² = 1 − BC(p, q)`, `BC = ∫√(pq)`, generator
/// `f(u) = ½(√u − 1)²`. Symmetric, in `[0, 1]`.
///
/// Per element:
/// ```text
/// H² = 1 − √(2 s_p s_q / (s_p² + s_q²)) · exp(−d² / (4 (s_p² + s_q²)))
///    = 1 − exp(−d²/(8s²))                          (equal variances)
/// ```
/// evaluated as `−expm1(log BC)` so that small distances keep their relative precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SquaredHellinger;

/// Fisher divergence `E_p ‖∇ₓ log p(x) − ∇ₓ log q(x)‖²`.
///
/// Per element: `(s_p/s_q² − 1/s_p)² + d²/s_q⁴` (`= d²/s⁴` for equal variances). Not an
/// f-divergence, but a common score-matching regulariser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fisher;

fn kl_elementwise(p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
    let d = p.mean().clone() - q.mean().clone();
    let (vp, vq) = (p.variance(), q.variance());
    let rho = vp / vq.clone();
    let variance_term = (rho.clone() - 1.0 - rho.log()) / 2.0;
    d.square() / (vq * 2.0) + variance_term
}

impl FDivergence for Kl {
    fn name(&self) -> &str {
        "kl"
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        kl_elementwise(p, q)
    }
}

impl FDivergence for ReverseKl {
    fn name(&self) -> &str {
        "reverse_kl"
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        kl_elementwise(q, p)
    }
}

impl FDivergence for SquaredHellinger {
    fn name(&self) -> &str {
        "hellinger_sq"
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        let d = p.mean().clone() - q.mean().clone();
        let (sp, sq) = (p.std().clone(), q.std().clone());
        let sum_var = sp.clone().square() + sq.clone().square();
        // ½ log(2 s_p s_q / (s_p² + s_q²)) = −½ log1p((s_p − s_q)² / (2 s_p s_q))
        let log_scale = ((sp.clone() - sq.clone()).square() / (sp * sq * 2.0)).log1p() / -2.0;
        let log_bc = log_scale - d.square() / (sum_var * 4.0);
        expm1(log_bc).neg()
    }
}

impl FDivergence for Fisher {
    fn name(&self) -> &str {
        "fisher"
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        let d = p.mean().clone() - q.mean().clone();
        let (sp, vq) = (p.std().clone(), q.variance());
        let scale_term = ((sp.clone().square() - vq.clone()) / (sp * vq.clone())).square();
        d.square() / vq.square() + scale_term
    }
}
