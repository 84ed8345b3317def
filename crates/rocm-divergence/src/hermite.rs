//! Gauss–Hermite quadrature nodes and weights, computed in f64.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Nodes `t_i` and weights `w_i` of the `n`-point Gauss–Hermite rule for the weight `e^{−t²}`,
/// converted to expectations under a standard normal:
///
/// ```text
/// E_{ξ~N(0,1)}[g(ξ)] ≈ Σ_i ω_i g(ξ_i),   ξ_i = √2 t_i,   ω_i = w_i / √π,   Σ_i ω_i = 1
/// ```
///
/// The rule is exact for polynomials of degree up to `2n − 1`. Nodes are found by Newton's method
/// on the orthonormal Hermite recurrence (Numerical Recipes' `gauher`), in f64, and cached.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussHermite {
    /// Standard-normal nodes `ξ_i`, ascending.
    pub nodes: Vec<f64>,
    /// Probability weights `ω_i`, summing to 1.
    pub weights: Vec<f64>,
}

impl GaussHermite {
    /// The `n`-point rule (cached after the first call for each `n`).
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn new(n: usize) -> Arc<GaussHermite> {
        assert!(n > 0, "Gauss–Hermite quadrature needs at least one node");
        static CACHE: OnceLock<Mutex<HashMap<usize, Arc<GaussHermite>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut cache = cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .entry(n)
            .or_insert_with(|| Arc::new(compute(n)))
            .clone()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the rule has no nodes (never true for a rule made by [`GaussHermite::new`]).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

fn compute(n: usize) -> GaussHermite {
    const PI_M4: f64 = 0.751_125_544_464_942_5; // π^{-1/4}
    let nf = n as f64;
    let mut t = vec![0.0f64; n];
    let mut w = vec![0.0f64; n];
    let mut z = 0.0f64;
    for i in 0..n.div_ceil(2) {
        z = match i {
            0 => (2.0 * nf + 1.0).sqrt() - 1.85575 * (2.0 * nf + 1.0).powf(-0.16667),
            1 => z - 1.14 * nf.powf(0.426) / z,
            2 => 1.86 * z - 0.86 * t[0],
            3 => 1.91 * z - 0.91 * t[1],
            _ => 2.0 * z - t[i - 2],
        };
        let mut derivative = 0.0;
        for _ in 0..200 {
            // Orthonormal Hermite recurrence: p_{j+1} = z √(2/(j+1)) p_j − √(j/(j+1)) p_{j−1}.
            let (mut p1, mut p2) = (PI_M4, 0.0f64);
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                let jf = j as f64;
                p1 = z * (2.0 / (jf + 1.0)).sqrt() * p2 - (jf / (jf + 1.0)).sqrt() * p3;
            }
            derivative = (2.0 * nf).sqrt() * p2;
            let step = p1 / derivative;
            z -= step;
            if step.abs() <= 1e-15 * z.abs().max(1.0) {
                break;
            }
        }
        t[i] = z;
        t[n - 1 - i] = -z;
        w[i] = 2.0 / (derivative * derivative);
        w[n - 1 - i] = w[i];
    }
    let sqrt_pi = std::f64::consts::PI.sqrt();
    let mut nodes: Vec<f64> = t.iter().map(|t| std::f64::consts::SQRT_2 * t).collect();
    let mut weights: Vec<f64> = w.iter().map(|w| w / sqrt_pi).collect();
    nodes.reverse();
    weights.reverse();
    GaussHermite { nodes, weights }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moment(rule: &GaussHermite, k: i32) -> f64 {
        rule.nodes
            .iter()
            .zip(&rule.weights)
            .map(|(x, w)| w * x.powi(k))
            .sum()
    }

    #[test]
    fn integrates_normal_moments_exactly() {
        for n in [1, 2, 5, 16, 32, 64, 128] {
            let rule = GaussHermite::new(n);
            assert_eq!(rule.len(), n);
            assert!((moment(&rule, 0) - 1.0).abs() < 1e-13, "n={n}");
            assert!(moment(&rule, 1).abs() < 1e-13, "n={n}");
            if n >= 2 {
                assert!((moment(&rule, 2) - 1.0).abs() < 1e-12, "n={n}");
            }
            if n >= 3 {
                assert!((moment(&rule, 4) - 3.0).abs() < 1e-11, "n={n}");
            }
            assert!(rule.nodes.windows(2).all(|w| w[0] < w[1]), "n={n}");
        }
    }

    #[test]
    fn matches_the_tabulated_three_point_rule() {
        // t = ±√(3/2), 0 with w = √π/6, 2√π/3 → ξ = ±√3, 0 and ω = 1/6, 2/3.
        let rule = GaussHermite::new(3);
        assert!((rule.nodes[2] - 3f64.sqrt()).abs() < 1e-14);
        assert!(rule.nodes[1].abs() < 1e-14);
        assert!((rule.weights[0] - 1.0 / 6.0).abs() < 1e-14);
        assert!((rule.weights[1] - 2.0 / 3.0).abs() < 1e-14);
    }

    #[test]
    fn gaussian_expectation_of_exponential() {
        // E[e^{aξ}] = e^{a²/2}
        let rule = GaussHermite::new(64);
        let a = 3.0f64;
        let e: f64 = rule
            .nodes
            .iter()
            .zip(&rule.weights)
            .map(|(x, w)| w * (a * x).exp())
            .sum();
        assert!((e / (a * a / 2.0).exp() - 1.0).abs() < 1e-12);
    }
}
