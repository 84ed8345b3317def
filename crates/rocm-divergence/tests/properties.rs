//! Property tests of every divergence: zero at p = q, non-negative, symmetric where it should be,
//! closed forms equal to the generic f-divergence of their generator, Monte Carlo agreeing with
//! quadrature, finite gradients, and f32 stability over the ranges the sampler produces.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use burn::prelude::*;
use proptest::prelude::*;
use rocm_divergence::reference::{self, Normal};
use rocm_divergence::{
    DiagGaussian, Estimator, FDivergence, Fisher, GeneralF, JensenShannon, Kl, Reduction,
    ReverseKl, SquaredHellinger,
};

/// `(μ_p, s_p, μ_q, s_q)` per univariate pair.
type Pair = (f64, f64, f64, f64);

/// The pair with every parameter rounded to f32, so that references see the tensors' inputs.
fn f32_exact(p: Pair) -> Pair {
    let r = |x: f64| x as f32 as f64;
    (r(p.0), r(p.1), r(p.2), r(p.3))
}

fn gaussians(pairs: &[Pair], device: &Device) -> (DiagGaussian, DiagGaussian) {
    let col = |f: fn(&Pair) -> f64| {
        let v: Vec<f32> = pairs.iter().map(|p| f(p) as f32).collect();
        Tensor::<2>::from_data(TensorData::new(v, [pairs.len(), 1]), device)
    };
    (
        DiagGaussian::new(col(|p| p.0), col(|p| p.1)),
        DiagGaussian::new(col(|p| p.2), col(|p| p.3)),
    )
}

fn values(div: &dyn FDivergence, pairs: &[Pair]) -> Vec<f64> {
    let device = Device::flex();
    let (p, q) = gaussians(pairs, &device);
    div.divergence(&p, &q, Reduction::Mean)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn all_divergences() -> Vec<Box<dyn FDivergence>> {
    vec![
        Box::new(Kl),
        Box::new(ReverseKl),
        Box::new(SquaredHellinger),
        Box::new(Fisher),
        Box::new(JensenShannon::default()),
        Box::new(GeneralF::pearson_chi2()),
        Box::new(GeneralF::total_variation()),
        Box::new(GeneralF::alpha(0.5)),
    ]
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn zero_at_equal_distributions(mu in -10.0f64..10.0, s in 1e-4f64..10.0) {
        for div in all_divergences() {
            let v = values(div.as_ref(), &[(mu, s, mu, s)])[0];
            prop_assert!(v.abs() < 1e-6, "{}: D(p,p) = {v}", div.name());
        }
    }

    #[test]
    fn non_negative(mu_p in -3.0f64..3.0, sp in 0.3f64..3.0, mu_q in -3.0f64..3.0, sq in 0.3f64..3.0) {
        for div in all_divergences() {
            let v = values(div.as_ref(), &[(mu_p, sp, mu_q, sq)])[0];
            // Pearson χ² grows like exp(d²/(2s_q² − s_p²)) and is infinite from s_p ≥ √2 s_q: it
            // may overflow f32 to +inf, never to NaN.
            let may_be_infinite = div.name() == "chi2";
            prop_assert!(v >= -1e-6 && (v.is_finite() || may_be_infinite), "{}: {v}", div.name());
        }
    }

    #[test]
    fn js_and_hellinger_are_symmetric(mu_p in -4.0f64..4.0, sp in 0.2f64..3.0, mu_q in -4.0f64..4.0, sq in 0.2f64..3.0) {
        let symmetric: [Box<dyn FDivergence>; 2] = [Box::new(JensenShannon::default()), Box::new(SquaredHellinger)];
        for div in symmetric {
            let pq = values(div.as_ref(), &[(mu_p, sp, mu_q, sq)])[0];
            let qp = values(div.as_ref(), &[(mu_q, sq, mu_p, sp)])[0];
            prop_assert!((pq - qp).abs() <= 1e-6 + 1e-5 * pq.abs(), "{}: {pq} vs {qp}", div.name());
        }
    }

    #[test]
    fn monte_carlo_agrees_with_quadrature(d in 0.2f64..1.0, sq in 1.0f64..2.0, seed in 0u64..1000) {
        use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
        let device = Device::flex();
        let samples = 4000;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise: Vec<f32> = (0..samples).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
        let pair = (d, 1.0, 0.0, sq);
        // The same pair S times, each with one noise sample: the S one-sample estimates, whose
        // mean is the S-sample estimate and whose spread gives its standard error.
        let (p, q) = gaussians(&vec![pair; samples], &device);
        let noise = Tensor::<3>::from_data(TensorData::new(noise, [1, samples, 1]), &device);
        let cases: [(Box<dyn FDivergence>, Box<dyn FDivergence>); 2] = [
            (Box::new(JensenShannon::default()), Box::new(JensenShannon::monte_carlo(noise.clone()))),
            (Box::new(GeneralF::squared_hellinger()),
             Box::new(GeneralF::squared_hellinger().with_estimator(Estimator::MonteCarlo(noise)))),
        ];
        for (quad, mc) in cases {
            let want = values(quad.as_ref(), &[pair])[0];
            let per_sample: Vec<f64> = mc
                .divergence(&p, &q, Reduction::Mean)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            let mean = per_sample.iter().sum::<f64>() / samples as f64;
            let var = per_sample.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (samples - 1) as f64;
            let se = (var / samples as f64).sqrt();
            // 5 standard errors: the sample se of these skewed one-sample estimates runs low; at 4
            // a CI-like run failed on d 0.69, s_q 1.70, seed 138 (4.2 se). A biased estimator is
            // still far outside.
            prop_assert!((mean - want).abs() <= 5.0 * se + 1e-6, "{}: mc {mean} quad {want} se {se}", quad.name());
        }
    }
}

#[test]
fn closed_forms_equal_general_f_quadrature_of_their_generators() {
    let mut pairs = Vec::new();
    // q at least as wide as p: the whole grid; q narrower (s_q = s_p/2): quadrature under the
    // wider p loses accuracy as p moves away, so up to 1.5 s.
    for (ratio, max_d) in [(1.0, 3.0), (2.0, 3.0), (0.5, 1.5)] {
        for d_over_s in [0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0] {
            if d_over_s <= max_d {
                pairs.push((d_over_s * 0.8, 0.8, 0.0, 0.8 * ratio));
            }
        }
    }
    let cases: [(Box<dyn FDivergence>, GeneralF); 4] = [
        (Box::new(Kl), GeneralF::kl()),
        (Box::new(ReverseKl), GeneralF::reverse_kl()),
        (Box::new(SquaredHellinger), GeneralF::squared_hellinger()),
        (
            Box::new(JensenShannon::default()),
            GeneralF::jensen_shannon(),
        ),
    ];
    for (closed, general) in cases {
        let general = general.with_estimator(Estimator::Quadrature(96));
        let (a, b) = (values(closed.as_ref(), &pairs), values(&general, &pairs));
        for ((x, y), pair) in a.iter().zip(&b).zip(&pairs) {
            assert!(
                rel_err(*y, *x) < 1e-5,
                "{} at {pair:?}: closed {x} vs general {y}",
                closed.name()
            );
        }
    }
}

#[test]
fn every_implementation_matches_the_f64_reference() {
    let mut pairs = Vec::new();
    for (sp, sq) in [(1.0, 1.0), (0.5, 1.0), (1.0, 0.7), (1e-2, 1e-2), (2.0, 3.0)] {
        for d_over_s in [0.05, 0.5, 1.0, 2.0, 4.0] {
            pairs.push(f32_exact((0.3 + d_over_s * sp, sp, 0.3, sq)));
        }
    }
    type Reference = fn(Normal, Normal) -> f64;
    let cases: [(Box<dyn FDivergence>, Reference); 7] = [
        (Box::new(Kl), reference::kl),
        (Box::new(ReverseKl), reference::reverse_kl),
        (Box::new(SquaredHellinger), reference::squared_hellinger),
        (Box::new(Fisher), reference::fisher),
        (
            Box::new(JensenShannon::default()),
            reference::jensen_shannon,
        ),
        (Box::new(GeneralF::pearson_chi2()), reference::pearson_chi2),
        (Box::new(GeneralF::alpha(1.0)), reference::kl),
    ];
    for (div, exact) in cases {
        let got = values(div.as_ref(), &pairs);
        for (g, &(mp, sp, mq, sq)) in got.iter().zip(&pairs) {
            let want = exact(Normal::new(mp, sp), Normal::new(mq, sq));
            // chi² explodes as exp(d²/(2s_q² − s_p²)): quadrature only near the mode.
            if div.name() == "chi2" && want > 50.0 {
                continue;
            }
            // f32 quadrature sums O(d) terms into an O(d²) JS: ~1e-8 absolute near d = 0.
            let ok = rel_err(*g, want) < 2e-5 || (g - want).abs() < 2e-8;
            assert!(
                ok,
                "{} at {:?}: {g} vs {want}",
                div.name(),
                (mp, sp, mq, sq)
            );
        }
    }
}

#[test]
fn js_reference_values_to_1e_5() {
    let pairs = [
        (0.5, 1.0, 0.0, 1.0),
        (2.0, 1.0, 0.0, 1.0),
        (6.0, 1.0, 0.0, 1.0),
    ];
    let got = values(&JensenShannon::default(), &pairs);
    for (g, want) in got.iter().zip([0.030_311_3, 0.336_831, 0.689_30]) {
        assert!((g - want).abs() < 1e-5, "{g} vs {want}");
    }
}

#[test]
fn stable_in_f32_from_d_zero_to_fifty_sigmas_and_tiny_std() {
    let device = Device::flex().autodiff();
    let mut pairs = Vec::new();
    for s in [1e-4, 1e-2, 1.0, 30.0] {
        for d_over_s in [0.0, 1e-3, 1.0, 10.0, 25.0, 50.0] {
            pairs.push((1.0 + d_over_s * s, s, 1.0, s));
        }
    }
    for div in all_divergences() {
        let (p, q) = gaussians(&pairs, &device);
        let mean_p = p.mean().clone().require_grad();
        let p = DiagGaussian::new(mean_p.clone(), p.std().clone());
        let out = div.divergence(&p, &q, Reduction::Sum);
        let v = out.clone().into_data().try_into_vec::<f32>().unwrap();
        let grads = out.sum().backward();
        let g = mean_p
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for (i, pair) in pairs.iter().enumerate() {
            // χ² = exp(d²/s²) − 1 overflows f32 beyond d/s ≈ 9.4: inf is its true value there.
            if div.name() == "chi2" && pair.0 - pair.2 > 9.0 * pair.1 {
                continue;
            }
            assert!(
                v[i].is_finite() && g[i].is_finite(),
                "{} at {pair:?}: {} / grad {}",
                div.name(),
                v[i],
                g[i]
            );
        }
    }
}

#[test]
fn gradients_wrt_means_are_finite_and_nonzero_off_the_diagonal() {
    let device = Device::flex().autodiff();
    let pairs = [
        (0.7, 1.0, 0.0, 1.0),
        (-1.2, 0.5, 0.3, 0.8),
        (2.0, 2.0, 0.0, 1.5),
    ];
    for div in all_divergences() {
        let (p, q) = gaussians(&pairs, &device);
        let mean_p = p.mean().clone().require_grad();
        let mean_q = q.mean().clone().require_grad();
        let p = DiagGaussian::new(mean_p.clone(), p.std().clone());
        let q = DiagGaussian::new(mean_q.clone(), q.std().clone());
        let grads = div.divergence(&p, &q, Reduction::Mean).sum().backward();
        for mean in [mean_p, mean_q] {
            let g = mean
                .grad(&grads)
                .unwrap()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            assert!(
                g.iter().all(|v| v.is_finite() && v.abs() > 1e-8),
                "{}: {g:?}",
                div.name()
            );
        }
    }
}

#[test]
fn kl_gradient_matches_its_derivative() {
    // ∂/∂μ_p of d²/(2s²) is d/s².
    let device = Device::flex().autodiff();
    let mean_p = Tensor::<2>::from_floats([[0.6, -0.3]], &device).require_grad();
    let p = DiagGaussian::with_scalar_std(mean_p.clone(), 0.5);
    let q = DiagGaussian::with_scalar_std(Tensor::<2>::zeros([1, 2], &device), 0.5);
    let grads = Kl.divergence(&p, &q, Reduction::Sum).sum().backward();
    let g = mean_p
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert!(
        (g[0] - 2.4).abs() < 1e-5 && (g[1] + 1.2).abs() < 1e-5,
        "{g:?}"
    );
}

#[test]
fn mean_and_sum_reductions_over_latents() {
    let device = Device::flex();
    let mean_p = Tensor::<4>::ones([2, 4, 8, 8], &device);
    let p = DiagGaussian::with_sample_std(mean_p, Tensor::from_floats([1.0, 2.0], &device));
    let q = DiagGaussian::with_sample_std(
        Tensor::<4>::zeros([2, 4, 8, 8], &device),
        Tensor::from_floats([1.0, 2.0], &device),
    );
    let mean = Kl
        .divergence(&p, &q, Reduction::Mean)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let sum = Kl
        .divergence(&p, &q, Reduction::Sum)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(mean, vec![0.5, 0.125]);
    assert_eq!(sum, vec![128.0, 32.0]);
}
