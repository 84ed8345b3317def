//! f64 reference values for univariate Gaussian pairs, computed on the host.
//!
//! These are the exact (closed-form, or adaptively integrated to ~1e-12) divergences between
//! `p = N(μ_p, s_p²)` and `q = N(μ_q, s_q²)`. They back the `divergences` example and serve as
//! ground truth for the tensor implementations' tests.

use std::f64::consts::{LN_2, SQRT_2};

/// A univariate Gaussian `N(mean, std²)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normal {
    /// The mean.
    pub mean: f64,
    /// The standard deviation, `> 0`.
    pub std: f64,
}

impl Normal {
    /// `N(mean, std²)`.
    pub fn new(mean: f64, std: f64) -> Self {
        Self { mean, std }
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let z = (x - self.mean) / self.std;
        -0.5 * z * z - self.std.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
    }

    /// `P(a < X < b)`, accurate in both tails.
    fn mass(&self, a: f64, b: f64) -> f64 {
        let (za, zb) = ((a - self.mean) / self.std, (b - self.mean) / self.std);
        if za > 0.0 {
            0.5 * (libm::erfc(za / SQRT_2) - libm::erfc(zb / SQRT_2))
        } else if zb < 0.0 {
            0.5 * (libm::erfc(-zb / SQRT_2) - libm::erfc(-za / SQRT_2))
        } else {
            0.5 * (libm::erf(zb / SQRT_2) - libm::erf(za / SQRT_2))
        }
    }
}

/// `KL(p‖q) = log(s_q/s_p) + (s_p² + d²)/(2 s_q²) − ½`.
pub fn kl(p: Normal, q: Normal) -> f64 {
    let rho = (p.std / q.std).powi(2);
    let d = p.mean - q.mean;
    0.5 * (rho - 1.0 - rho.ln()) + d * d / (2.0 * q.std * q.std)
}

/// `KL(q‖p)`.
pub fn reverse_kl(p: Normal, q: Normal) -> f64 {
    kl(q, p)
}

/// `1 − √(2 s_p s_q/(s_p² + s_q²)) exp(−d²/(4(s_p² + s_q²)))`.
pub fn squared_hellinger(p: Normal, q: Normal) -> f64 {
    let sum_var = p.std * p.std + q.std * q.std;
    let d = p.mean - q.mean;
    let log_bc = 0.5 * (2.0 * p.std * q.std / sum_var).ln() - d * d / (4.0 * sum_var);
    -log_bc.exp_m1()
}

/// `E_p (∂ₓ log p − ∂ₓ log q)² = (s_p/s_q² − 1/s_p)² + d²/s_q⁴`.
pub fn fisher(p: Normal, q: Normal) -> f64 {
    let vq = q.std * q.std;
    let d = p.mean - q.mean;
    (p.std / vq - 1.0 / p.std).powi(2) + d * d / (vq * vq)
}

/// Pearson `χ²(p‖q) = ∫ p²/q − 1`; infinite when `2 s_q² ≤ s_p²`.
pub fn pearson_chi2(p: Normal, q: Normal) -> f64 {
    let (vp, vq) = (p.std * p.std, q.std * q.std);
    let denom = 2.0 * vq - vp;
    if denom <= 0.0 {
        return f64::INFINITY;
    }
    let d = p.mean - q.mean;
    // ∫p²/q = s_q² / (s_p √(2s_q² − s_p²)) · exp(d²/(2s_q² − s_p²))
    let log_integral = vq.ln() - p.std.ln() - 0.5 * denom.ln() + d * d / denom;
    log_integral.exp_m1()
}

/// Total variation `½ ∫|p − q|`, exact through the crossing points of the two densities.
pub fn total_variation(p: Normal, q: Normal) -> f64 {
    let d = p.mean - q.mean;
    if p.std == q.std {
        return libm::erf(d.abs() / (2.0 * SQRT_2 * p.std));
    }
    // log p − log q = a x² + b x + c, with a < 0 when p is the narrower one.
    let (vp, vq) = (p.std * p.std, q.std * q.std);
    let a = 0.5 / vq - 0.5 / vp;
    let b = p.mean / vp - q.mean / vq;
    let c = 0.5 * q.mean * q.mean / vq - 0.5 * p.mean * p.mean / vp + (q.std / p.std).ln();
    let disc = (b * b - 4.0 * a * c).max(0.0);
    let k = -0.5 * (b + b.signum() * disc.sqrt());
    let (r1, r2) = if k == 0.0 {
        let r = (-c / a).max(0.0).sqrt();
        (-r, r)
    } else {
        let (x1, x2) = (k / a, c / k);
        (x1.min(x2), x1.max(x2))
    };
    // Between the roots the narrower density dominates.
    let between = p.mass(r1, r2) - q.mass(r1, r2);
    between.abs()
}

/// Jensen–Shannon `½ KL(p‖m) + ½ KL(q‖m)`, `m = ½(p + q)`, by adaptive Gauss–Kronrod
/// integration (relative tolerance 1e-13) over breakpoints around both means.
pub fn jensen_shannon(p: Normal, q: Normal) -> f64 {
    let integrand = |x: f64| {
        let (lp, lq) = (p.log_pdf(x), q.log_pdf(x));
        let lm = lp.max(lq) + (-(lp - lq).abs()).exp().ln_1p() - LN_2; // log ½(p+q)
        0.5 * (lp.exp() * (lp - lm) + lq.exp() * (lq - lm))
    };
    let mut points: Vec<f64> = Vec::new();
    for g in [p, q] {
        for k in [
            -40.0, -20.0, -10.0, -6.0, -3.0, -1.5, 0.0, 1.5, 3.0, 6.0, 10.0, 20.0, 40.0,
        ] {
            points.push(g.mean + k * g.std);
        }
    }
    points.sort_by(f64::total_cmp);
    points.dedup();
    points
        .windows(2)
        .map(|w| adaptive_gauss_kronrod(&integrand, w[0], w[1], 1e-13, 30))
        .sum::<f64>()
        .max(0.0)
}

/// Integrates `f` over `[a, b]` by recursive bisection of the 7/15-point Gauss–Kronrod rule.
fn adaptive_gauss_kronrod(f: &impl Fn(f64) -> f64, a: f64, b: f64, tol: f64, depth: u32) -> f64 {
    let (kronrod, gauss) = gauss_kronrod_15(f, a, b);
    // Absolute floor: pieces in the far tails integrate to ~0 and never meet a relative test.
    if depth == 0 || (kronrod - gauss).abs() <= (tol * kronrod.abs()).max(1e-18) {
        return kronrod;
    }
    let m = 0.5 * (a + b);
    adaptive_gauss_kronrod(f, a, m, tol, depth - 1)
        + adaptive_gauss_kronrod(f, m, b, tol, depth - 1)
}

fn gauss_kronrod_15(f: &impl Fn(f64) -> f64, a: f64, b: f64) -> (f64, f64) {
    const XK: [f64; 8] = [
        0.991_455_371_120_812_6,
        0.949_107_912_342_758_5,
        0.864_864_423_359_769_1,
        0.741_531_185_599_394_4,
        0.586_087_235_467_691_1,
        0.405_845_151_377_397_2,
        0.207_784_955_007_898_5,
        0.0,
    ];
    const WK: [f64; 8] = [
        0.022_935_322_010_529_22,
        0.063_092_092_629_978_55,
        0.104_790_010_322_250_2,
        0.140_653_259_715_525_9,
        0.169_004_726_639_267_9,
        0.190_350_578_064_785_4,
        0.204_432_940_075_298_9,
        0.209_482_141_084_728,
    ];
    const WG: [f64; 4] = [
        0.129_484_966_168_869_7,
        0.279_705_391_489_276_7,
        0.381_830_050_505_118_9,
        0.417_959_183_673_469_4,
    ];
    let (c, h) = (0.5 * (a + b), 0.5 * (b - a));
    let fc = f(c);
    let (mut kronrod, mut gauss) = (WK[7] * fc, WG[3] * fc);
    for i in 0..7 {
        let pair = f(c - h * XK[i]) + f(c + h * XK[i]);
        kronrod += WK[i] * pair;
        if i % 2 == 1 {
            gauss += WG[i / 2] * pair;
        }
    }
    (kronrod * h, gauss * h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn js_reference_values_from_method_md() {
        let q = Normal::new(0.0, 1.0);
        for (d, want) in [(0.5, 0.030_311_3), (2.0, 0.336_831), (6.0, 0.689_30)] {
            let got = jensen_shannon(Normal::new(d, 1.0), q);
            assert!(close(got, want, 1e-5), "d={d}: {got} vs {want}");
        }
    }

    #[test]
    fn total_variation_agrees_with_numerical_integration() {
        for (p, q) in [
            (Normal::new(0.3, 0.5), Normal::new(-1.0, 2.0)),
            (Normal::new(2.0, 3.0), Normal::new(0.0, 1.0)),
            (Normal::new(0.0, 1.0), Normal::new(0.0, 1.5)),
        ] {
            let half_abs = |x: f64| 0.5 * (p.log_pdf(x).exp() - q.log_pdf(x).exp()).abs();
            let lo = (p.mean - 40.0 * p.std).min(q.mean - 40.0 * q.std);
            let hi = (p.mean + 40.0 * p.std).max(q.mean + 40.0 * q.std);
            let n = 200_000;
            let h = (hi - lo) / n as f64;
            let numeric: f64 = (0..n)
                .map(|i| half_abs(lo + (i as f64 + 0.5) * h) * h)
                .sum();
            let exact = total_variation(p, q);
            assert!(
                close(exact, numeric, 1e-6),
                "{p:?} {q:?}: {exact} vs {numeric}"
            );
        }
    }

    #[test]
    fn equal_variance_identities() {
        let (p, q) = (Normal::new(1.5, 0.7), Normal::new(0.2, 0.7));
        let r = (1.3f64 / 0.7).powi(2);
        assert!(close(kl(p, q), r / 2.0, 1e-14));
        assert!(close(reverse_kl(p, q), r / 2.0, 1e-14));
        assert!(close(fisher(p, q), r / 0.49, 1e-14));
        assert!(close(
            squared_hellinger(p, q),
            1.0 - (-r / 8.0).exp(),
            1e-14
        ));
        assert!(close(pearson_chi2(p, q), r.exp() - 1.0, 1e-13));
    }
}
