//! Numerically careful element-wise helpers shared by the divergences.

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

/// `e^x − 1` without the cancellation of `exp(x) − 1` near 0 (Burn has no `expm1`).
///
/// For `x ≤ ½` it uses `e^x − 1 = 2 tanh(x/2) / (1 − tanh(x/2))`, which keeps full relative
/// precision; above, `exp(x) − 1` has no cancellation. The unused branch is evaluated on a clamped
/// input so that it never produces `inf`/`NaN` that would leak into the gradient.
pub fn expm1<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let large = x.clone().greater_elem(0.5);
    let small = x.clone().clamp_max(0.5);
    let tanh_half = (small / 2.0).tanh();
    let near_zero = tanh_half.clone() * 2.0 / (tanh_half.neg() + 1.0);
    let direct = x.clamp_min(0.5).exp() - 1.0;
    near_zero.mask_where(large, direct)
}

/// `log 2 + log σ(t) = log(2 e^t / (1 + e^t))`, the Jensen–Shannon integrand's building block.
pub fn log_two_sigmoid<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    log_sigmoid(t) + std::f64::consts::LN_2
}

/// Per-element parameters of a pair of Gaussians, shaped `[B, N, 1]` (or `[B, 1, 1]` for
/// per-sample standard deviations) to broadcast against estimator points `[·, ·, S]`.
pub(crate) struct Pair {
    /// `μ_p − μ_q`.
    pub d: Tensor<3>,
    /// `s_p`.
    pub sp: Tensor<3>,
    /// `s_q`.
    pub sq: Tensor<3>,
}

impl Pair {
    pub fn new(p: &crate::DiagGaussian, q: &crate::DiagGaussian) -> Self {
        assert_eq!(
            p.mean().dims(),
            q.mean().dims(),
            "divergence between Gaussians of different shapes"
        );
        Self {
            d: (p.mean().clone() - q.mean().clone()).unsqueeze_dim(2),
            sp: p.std().clone().unsqueeze_dim(2),
            sq: q.std().clone().unsqueeze_dim(2),
        }
    }

    /// The same pair with `p` and `q` exchanged.
    pub fn swapped(&self) -> Self {
        Self {
            d: self.d.clone().neg(),
            sp: self.sq.clone(),
            sq: self.sp.clone(),
        }
    }

    /// `t = log p(x) − log q(x)` at `x = μ_q + s_q ξ`.
    pub fn log_ratio_under_q(&self, xi: Tensor<3>) -> Tensor<3> {
        self.log_ratio_at(xi, self.sq.clone())
    }

    /// `t = log p(x) − log q(x)` at `x = μ_q + s_r ξ`.
    ///
    /// With `z_q = s_r ξ / s_q` and `z_p = (s_r ξ − d)/s_p`,
    /// `t = ½ (z_q − z_p)(z_q + z_p) + log(s_q/s_p)`, where
    /// `z_q − z_p = (s_r ξ (s_p − s_q) + d s_q) / (s_p s_q)` is formed without cancellation: no `x`
    /// is ever built, so large means with tiny standard deviations keep their precision.
    pub fn log_ratio_at(&self, xi: Tensor<3>, sr: Tensor<3>) -> Tensor<3> {
        let (sp, sq, d) = (self.sp.clone(), self.sq.clone(), self.d.clone());
        let r_xi = xi * sr;
        let zq = r_xi.clone() / sq.clone();
        let zp = (r_xi.clone() - d.clone()) / sp.clone();
        let diff = (r_xi * (sp.clone() - sq.clone()) + d * sq.clone()) / (sp.clone() * sq.clone());
        diff * (zq + zp) / 2.0 + (sq.log() - sp.log())
    }

    /// `log q(x) − log r(x)` at `x = μ_q + s_r ξ` for `r = N(μ_q, s_r²)`:
    /// `½ ξ² (1 − s_r²/s_q²) + log(s_r/s_q)`, exactly 0 when `s_r = s_q`.
    pub fn log_q_over_r(&self, xi: Tensor<3>, sr: Tensor<3>) -> Tensor<3> {
        let sq = self.sq.clone();
        let rho = sr.clone() / sq.clone();
        let one_minus = (sq.clone() - sr.clone()) * (sq.clone() + sr.clone()) / sq.square();
        xi.square() * one_minus / 2.0 + rho.log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expm1_is_accurate_near_zero_and_finite_far_away() {
        let device = Device::flex();
        let xs = [-100.0f32, -1.0, -1e-6, 0.0, 1e-7, 1e-3, 0.4, 0.6, 5.0];
        let got = expm1(Tensor::<1>::from_floats(xs, &device))
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for (x, g) in xs.iter().zip(got) {
            let want = (*x as f64).exp_m1();
            let rel = ((g as f64 - want) / want.abs().max(1e-300)).abs();
            assert!(
                rel < 4e-7 || (want == 0.0 && g == 0.0),
                "x={x} got={g} want={want}"
            );
        }
    }

    #[test]
    fn expm1_gradient_is_finite_on_both_branches() {
        let device = Device::flex().autodiff();
        let x = Tensor::<1>::from_floats([-50.0, 0.0, 0.3, 80.0], &device).require_grad();
        let grads = expm1(x.clone()).sum().backward();
        let g = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert!((g[1] - 1.0).abs() < 1e-6 && (g[2] - 0.3f32.exp()).abs() < 1e-5);
    }
}
