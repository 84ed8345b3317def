//! Any f-divergence from its generator, by quadrature or Monte Carlo.

use std::fmt;
use std::sync::Arc;

use burn::prelude::*;

use crate::estimator::Estimator;
use crate::math::{Pair, expm1, log_two_sigmoid};
use crate::{DiagGaussian, FDivergence};

/// `|log|` bound on the log-ratio and the importance log-weight: `e^80` and `e^-80` are finite,
/// normal f32 numbers.
const LOG_RANGE: f64 = 80.0;

/// A generator `f` written as a function of the log-ratio `t = log(p/q)`: it maps a tensor of
/// `t` values to `f(eᵗ)`, element-wise.
pub type Generator = Arc<dyn Fn(Tensor<3>) -> Tensor<3> + Send + Sync>;

/// The f-divergence `D_f(p‖q) = E_q[f(p(x)/q(x))]` of a user-supplied convex generator `f` with
/// `f(1) = 0`, estimated per element by Gauss–Hermite quadrature (default) or reparameterised
/// Monte Carlo under `q`.
///
/// The generator receives the log-ratio `t = log p − log q` (computed in standardised
/// coordinates, so it stays accurate for tiny standard deviations) and returns `f(eᵗ)`; writing
/// it in `t` lets it avoid overflow (`t eᵗ` rather than `u log u`). Ready-made generators:
///
/// | constructor | `f(u)` | divergence |
/// |---|---|---|
/// | [`GeneralF::kl`] | `u log u` | KL(p‖q) |
/// | [`GeneralF::reverse_kl`] | `−log u` | KL(q‖p) |
/// | [`GeneralF::squared_hellinger`] | `½(√u − 1)²` | 1 − BC |
/// | [`GeneralF::jensen_shannon`] | `½[u log(2u/(1+u)) + log(2/(1+u))]` | JS |
/// | [`GeneralF::pearson_chi2`] | `(u − 1)²` | Pearson χ² |
/// | [`GeneralF::total_variation`] | `½|u − 1|` | TV, in `[0, 1]` |
/// | [`GeneralF::alpha`] | `(u^α − 1 − α(u − 1)) / (α(α − 1))` | Amari α (α→1: KL, α→0: reverse KL) |
///
/// The expectation is taken under `r = N(μ_q, max(s_p, s_q)²)` as `E_r[(q/r) f(p/q)]`, which is
/// `E_q[f(p/q)]` when `q` is the wider one and keeps the integrand bounded when `p` is. Quadrature
/// is accurate while `p` sits within a few standard deviations of `q` (|d|/s ≲ 3 for 64 nodes to
/// 1e-5); kinked generators (total variation) converge slowly. Prefer the closed forms
/// ([`crate::Kl`], [`crate::SquaredHellinger`], …) where they exist. In f32, Pearson χ² by
/// quadrature overflows to `inf` once `s_p > 1.28 s_q` (its true value is infinite from
/// `s_p ≥ √2 s_q`).
///
/// # Example
/// ```
/// use burn::prelude::*;
/// use rocm_divergence::{DiagGaussian, FDivergence, GeneralF, Reduction};
///
/// // Neyman χ²: f(u) = (1 − u)² / u = e^{−t} (1 − e^t)², here with a hand-written generator.
/// let neyman = GeneralF::new("neyman_chi2", |t: Tensor<3>| {
///     let u = t.clone().exp();
///     (u.neg() + 1.0).square() * t.neg().exp()
/// });
/// let device = Device::flex();
/// let p = DiagGaussian::with_scalar_std(Tensor::<2>::from_floats([[0.5]], &device), 1.0);
/// let q = DiagGaussian::with_scalar_std(Tensor::<2>::zeros([1, 1], &device), 1.0);
/// // Equal variances: χ²(q‖p) = exp(d²/s²) − 1.
/// let value = neyman.divergence(&p, &q, Reduction::Mean).into_scalar::<f32>();
/// assert!((value - (0.25f32.exp() - 1.0)).abs() < 1e-5);
/// ```
#[derive(Clone)]
pub struct GeneralF {
    name: String,
    generator: Generator,
    /// How `E_q[·]` is estimated.
    pub estimator: Estimator,
}

impl fmt::Debug for GeneralF {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneralF")
            .field("name", &self.name)
            .field("estimator", &self.estimator)
            .finish_non_exhaustive()
    }
}

impl GeneralF {
    /// A divergence from a generator given as a function of the log-ratio `t` (returning
    /// `f(eᵗ)`); `f` must be convex with `f(1) = 0`.
    pub fn new(
        name: impl Into<String>,
        generator: impl Fn(Tensor<3>) -> Tensor<3> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            generator: Arc::new(generator),
            estimator: Estimator::default(),
        }
    }

    /// The same divergence with another estimator.
    pub fn with_estimator(mut self, estimator: Estimator) -> Self {
        self.estimator = estimator;
        self
    }

    /// KL(p‖q): `f(u) = u log u`, written `t eᵗ`.
    pub fn kl() -> Self {
        Self::new("kl", |t: Tensor<3>| t.clone() * t.exp())
    }

    /// KL(q‖p): `f(u) = −log u = −t`.
    pub fn reverse_kl() -> Self {
        Self::new("reverse_kl", |t: Tensor<3>| t.neg())
    }

    /// Squared Hellinger: `f(u) = ½(√u − 1)² = ½ expm1(t/2)²`.
    pub fn squared_hellinger() -> Self {
        Self::new("hellinger_sq", |t: Tensor<3>| expm1(t / 2.0).square() / 2.0)
    }

    /// Jensen–Shannon: `f(u) = ½[u log(2u/(1+u)) + log(2/(1+u))]`, with `log(2u/(1+u)) =
    /// log 2 + log σ(t)`.
    pub fn jensen_shannon() -> Self {
        Self::new("js", |t: Tensor<3>| {
            let u = t.clone().exp();
            (u * log_two_sigmoid(t.clone()) + log_two_sigmoid(t.neg())) / 2.0
        })
    }

    /// Pearson χ²: `f(u) = (u − 1)² = expm1(t)²`.
    pub fn pearson_chi2() -> Self {
        Self::new("chi2", |t: Tensor<3>| expm1(t).square())
    }

    /// Total variation: `f(u) = ½|u − 1|`.
    pub fn total_variation() -> Self {
        Self::new("tv", |t: Tensor<3>| expm1(t).abs() / 2.0)
    }

    /// Amari's α-divergence, `f(u) = (u^α − 1 − α(u − 1)) / (α(α − 1))`; `α = 1` is KL(p‖q)
    /// and `α = 0` is KL(q‖p) (their limits), `α = 2` is ½ χ², `α = ½` is 4 H².
    pub fn alpha(alpha: f64) -> Self {
        let name = format!("alpha_{alpha}");
        if alpha == 1.0 {
            return Self { name, ..Self::kl() };
        }
        if alpha == 0.0 {
            return Self {
                name,
                ..Self::reverse_kl()
            };
        }
        Self::new(name, move |t: Tensor<3>| {
            (expm1(t.clone() * alpha) - expm1(t) * alpha) / (alpha * (alpha - 1.0))
        })
    }
}

impl FDivergence for GeneralF {
    fn name(&self) -> &str {
        &self.name
    }

    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        let pair = Pair::new(p, q);
        let points = self
            .estimator
            .points(p.batch_size(), p.num_elements(), &p.mean().device());
        // Integrate under r = N(μ_q, max(s_p, s_q)²): D_f = E_r[(q/r) f(p/q)]. With r at least as
        // wide as p, the integrand stays bounded where p/q explodes (p wider than q), and for
        // s_q ≥ s_p it is exactly E_q[f(p/q)].
        let sr = pair.sp.clone().max_pair(pair.sq.clone());
        // Clamps keep f32 finite at nodes whose weight is negligible (there t + log(q/r) =
        // log(p/r) ≤ 0, so the true product is bounded while its factors overflow).
        let t = pair
            .log_ratio_at(points.xi.clone(), sr.clone())
            .clamp(-LOG_RANGE, LOG_RANGE);
        let weight = pair
            .log_q_over_r(points.xi.clone(), sr)
            .clamp_min(-LOG_RANGE)
            .exp();
        points.expectation(weight * (self.generator)(t))
    }
}
