//! f-divergences between per-step diagonal Gaussian policies.
//!
//! ROCM regularises the fine-tuned consistency model towards its frozen base with a divergence
//! between the two per-step policies of the multistep sampler,
//! `π_θ(x_{k+1} | x_k) = N(μ_θ, σ² I)` and `π_ref(x_{k+1} | x_k) = N(μ_ref, σ² I)`
//! (docs/method.md §2–4). Every divergence here is an [`FDivergence`]: it takes two batches of
//! diagonal Gaussians ([`DiagGaussian`], leading batch dimension) and returns one differentiable
//! value per sample, shape `[B]`.
//!
//! The divergences are computed **per element** and then reduced over the non-batch elements
//! ([`Reduction::Mean`] by default, or [`Reduction::Sum`]): whole-vector Hellinger and
//! Jensen–Shannon saturate in the 16k-dimensional latent space of Stable Diffusion, and averaging
//! keeps β independent of the resolution.

mod closed_form;
mod estimator;
mod gaussian;
mod general;
mod hermite;
mod js;
mod kind;
mod math;
pub mod reference;

pub use closed_form::{Fisher, Kl, ReverseKl, SquaredHellinger};
pub use estimator::{DEFAULT_QUADRATURE_NODES, Estimator};
pub use gaussian::DiagGaussian;
pub use general::{GeneralF, Generator};
pub use hermite::GaussHermite;
pub use js::JensenShannon;
pub use kind::{BoxedDivergence, DivergenceConfig, DivergenceKind, UnknownDivergence};

use burn::prelude::*;

/// How per-element divergences are reduced to one value per sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Average over the non-batch elements (the default; keeps β resolution independent).
    #[default]
    Mean,
    /// Sum over the non-batch elements (the divergence of the whole joint diagonal Gaussian for
    /// the additive divergences KL, reverse KL and Fisher).
    Sum,
}

impl Reduction {
    /// Reduces per-element values `[B, N]` to `[B]`.
    pub fn apply(self, elementwise: Tensor<2>) -> Tensor<1> {
        match self {
            Reduction::Mean => elementwise.mean_dim(1).squeeze_dim(1),
            Reduction::Sum => elementwise.sum_dim(1).squeeze_dim(1),
        }
    }
}

/// A divergence `D(p‖q)` between two batches of diagonal Gaussians.
///
/// For `p = N(μ_p, diag s_p²)` and `q = N(μ_q, diag s_q²)` over `N` elements per sample, an
/// implementation gives the divergence of every element, `D(p_i‖q_i)` for the univariate
/// Gaussians `N(μ_p,i, s_p,i²)` and `N(μ_q,i, s_q,i²)`; [`FDivergence::divergence`] reduces
/// them to one value per sample:
///
/// ```text
/// D(p‖q)_b = reduce_i D(p_b,i ‖ q_b,i),   reduce ∈ {mean, sum}
/// ```
///
/// For an f-divergence with convex generator `f`, `f(1) = 0`, the per-element value is
/// `D_f(p‖q) = E_q[f(p(x)/q(x))]`. Every result is a tensor on the inputs' device, so on an
/// autodiff device the gradient flows back to the means and standard deviations.
///
/// # Shapes
/// - inputs: [`DiagGaussian`] with means `[B, N]` (any rank is flattened on construction) and
///   standard deviations `[B, N]` or `[B, 1]`
/// - per element ([`FDivergence::elementwise`]): `[B, N]`
/// - per sample ([`FDivergence::divergence`]): `[B]`
///
/// # Example
/// A (deliberately trivial) divergence: half the squared distance of the means, which is the KL
/// divergence of two unit-variance Gaussians.
/// ```
/// use burn::prelude::*;
/// use rocm_divergence::{DiagGaussian, FDivergence, Reduction};
///
/// struct HalfSquaredDistance;
///
/// impl FDivergence for HalfSquaredDistance {
///     fn name(&self) -> &str {
///         "half_squared_distance"
///     }
///     fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
///         (p.mean().clone() - q.mean().clone()).square() / 2.0
///     }
/// }
///
/// let device = Device::flex().autodiff();
/// let mu_p = Tensor::<2>::from_floats([[0.0, 1.0], [2.0, 2.0]], &device).require_grad();
/// let mu_q = Tensor::<2>::zeros([2, 2], &device);
/// let p = DiagGaussian::with_scalar_std(mu_p.clone(), 1.0);
/// let q = DiagGaussian::with_scalar_std(mu_q, 1.0);
///
/// let per_sample = HalfSquaredDistance.divergence(&p, &q, Reduction::Sum); // [B]
/// let values = per_sample.clone().into_data().try_into_vec::<f32>().unwrap();
/// assert_eq!(values, vec![0.5, 4.0]);
///
/// // Differentiable: d/dμ_p of Σ_b D_b is (μ_p − μ_q).
/// let grads = per_sample.sum().backward();
/// let g = mu_p.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap();
/// assert_eq!(g, vec![0.0, 1.0, 2.0, 2.0]);
/// ```
pub trait FDivergence {
    /// A short, stable name (`"kl"`, `"js"`, …) for logs, metrics and configuration files.
    fn name(&self) -> &str;

    /// The divergence of every element, `[B, N]`.
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2>;

    /// The per-sample divergence `[B]`: [`FDivergence::elementwise`] reduced over the
    /// non-batch elements.
    fn divergence(&self, p: &DiagGaussian, q: &DiagGaussian, reduction: Reduction) -> Tensor<1> {
        reduction.apply(self.elementwise(p, q))
    }
}

impl<F: FDivergence + ?Sized> FDivergence for &F {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        (**self).elementwise(p, q)
    }
    fn divergence(&self, p: &DiagGaussian, q: &DiagGaussian, reduction: Reduction) -> Tensor<1> {
        (**self).divergence(p, q, reduction)
    }
}

impl<F: FDivergence + ?Sized> FDivergence for Box<F> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn elementwise(&self, p: &DiagGaussian, q: &DiagGaussian) -> Tensor<2> {
        (**self).elementwise(p, q)
    }
    fn divergence(&self, p: &DiagGaussian, q: &DiagGaussian, reduction: Reduction) -> Tensor<1> {
        (**self).divergence(p, q, reduction)
    }
}
