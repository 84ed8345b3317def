//! Per-step surrogate losses of the policy-gradient baselines, each over a batch `[B]`.

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

/// A step's loss and what it measured against the stored log-probs.
#[derive(Clone, Debug)]
pub struct StepLoss {
    /// The scalar loss of the step (`[1]`), differentiable through `lp`.
    pub loss: Tensor<1>,
    /// `½ mean_b (lp − lp_old)²` (PPO's `approx_kl`).
    pub approx_kl: f64,
    /// The fraction of samples whose ratio left the clip window.
    pub clipfrac: f64,
}

/// Host statistics of a ratio against its window: `(½ mean (log ρ)², mean(|ρ − 1| > c))`.
fn ratio_stats(log_ratio: &Tensor<1>, clip: f64) -> (f64, f64) {
    let v = log_ratio
        .clone()
        .detach()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    let n = v.len().max(1) as f64;
    let kl = v.iter().map(|d| 0.5 * f64::from(*d).powi(2)).sum::<f64>() / n;
    let clipped = v
        .iter()
        .filter(|d| (f64::from(**d).exp() - 1.0).abs() > clip)
        .count() as f64
        / n;
    (kl, clipped)
}

/// PPO's clipped surrogate of one step (RLCM, DDPO; BASELINES §0.3):
///
/// ```text
/// A = clamp(adv, ±adv_clip),  ρ = exp(lp − lp_old)
/// L = mean_b max(−A ρ, −A clamp(ρ, 1 − ε, 1 + ε))
/// ```
///
/// `lp_old` and `adv` are constants; the gradient flows through `lp` only.
///
/// # Shapes
/// - `lp`, `lp_old`, `adv`: `[B]`
pub fn ppo_step_loss(
    lp: Tensor<1>,
    lp_old: Tensor<1>,
    adv: Tensor<1>,
    clip: f64,
    adv_clip: f64,
) -> StepLoss {
    let log_ratio = lp - lp_old.detach();
    let (approx_kl, clipfrac) = ratio_stats(&log_ratio, clip);
    let adv = adv.detach().clamp(-adv_clip, adv_clip);
    let ratio = log_ratio.exp();
    let unclipped = -adv.clone() * ratio.clone();
    let clipped = -adv * ratio.clamp(1.0 - clip, 1.0 + clip);
    StepLoss {
        loss: unclipped.max_pair(clipped).mean(),
        approx_kl,
        clipfrac,
    }
}

/// DPOK's step loss (google-research `dpok/train_online_pg.py`; BASELINES §3):
///
/// ```text
/// ρ = clamp(exp(lp − lp_old), 1 − c, 1 + c)          (a plain clamp: zero gradient outside)
/// L = mean_b(−α · adv · ρ) + kl_weight · mean_b kl
/// ```
///
/// `kl` is the per-sample KL term `[B]` (differentiable), `adv = r − baseline` a constant.
pub fn dpok_step_loss(
    lp: Tensor<1>,
    lp_old: Tensor<1>,
    adv: Tensor<1>,
    kl: Tensor<1>,
    reward_weight: f64,
    kl_weight: f64,
    clip: f64,
) -> StepLoss {
    let log_ratio = lp - lp_old.detach();
    let (approx_kl, clipfrac) = ratio_stats(&log_ratio, clip);
    let ratio = log_ratio.exp().clamp(1.0 - clip, 1.0 + clip);
    let policy = (-adv.detach() * ratio * reward_weight).mean();
    StepLoss {
        loss: policy + kl.mean() * kl_weight,
        approx_kl,
        clipfrac,
    }
}

/// D3PO's step loss on pairs (D3PO `train_d3po.py`; BASELINES §4): samples `2i` and `2i + 1`
/// share a prompt and an initial latent; `h_i = sign(r_{2i} − r_{2i+1})` (0 on ties, whose loss
/// is the constant `ln 2`, with zero gradient);
///
/// ```text
/// l_j = clamp(lp_j − lp_ref_j, ln(1 − ε), ln(1 + ε))       (the clamped log-ratio to the base)
/// L   = −mean_i ln σ(β h_i (l_{2i} − l_{2i+1}))
/// ```
///
/// `approx_kl`/`clipfrac` are measured against `lp_old` and the window `ε` around the
/// reference respectively.
///
/// # Shapes
/// - `lp`, `lp_ref`, `lp_old`: `[2P]`; `preference`: `[P]` with values in `{−1, 0, 1}`
pub fn d3po_step_loss(
    lp: Tensor<1>,
    lp_ref: Tensor<1>,
    lp_old: Tensor<1>,
    preference: Tensor<1>,
    beta: f64,
    eps: f64,
) -> StepLoss {
    let (approx_kl, _) = ratio_stats(&(lp.clone() - lp_old.detach()), eps);
    let to_ref = lp - lp_ref.detach();
    let (_, clipfrac) = ratio_stats(&to_ref, eps);
    let [n] = to_ref.dims();
    let pairs = to_ref
        .clamp((1.0 - eps).ln(), (1.0 + eps).ln())
        .reshape([n / 2, 2]);
    let winner = pairs.clone().slice(s![.., 0..1]).reshape([n / 2]);
    let loser = pairs.slice(s![.., 1..2]).reshape([n / 2]);
    let z = (winner - loser) * preference.detach() * beta;
    StepLoss {
        loss: -log_sigmoid(z).mean(),
        approx_kl,
        clipfrac,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    fn grad(lp: &Tensor<1>, loss: Tensor<1>) -> Vec<f32> {
        let g = loss.backward();
        lp.grad(&g)
            .map(|g| g.into_data().try_into_vec::<f32>().unwrap())
            .unwrap_or_default()
    }

    #[test]
    fn ppo_at_ratio_one_is_minus_the_advantage_times_the_log_prob_gradient() {
        let device = Device::flex().autodiff();
        let lp = t(&[-1.0, -2.0], &device).require_grad();
        let out = ppo_step_loss(
            lp.clone(),
            t(&[-1.0, -2.0], &device),
            t(&[2.0, -20.0], &device),
            1e-4,
            10.0,
        );
        assert_eq!((out.approx_kl, out.clipfrac), (0.0, 0.0));
        // ∂/∂lp of mean(−A ρ) at ρ = 1 is −A/B, with A clamped to ±10.
        assert_eq!(grad(&lp, out.loss), vec![-1.0, 5.0]);
    }

    #[test]
    fn ppo_clips_the_ratio_in_the_advantages_direction() {
        let device = Device::flex().autodiff();
        // ρ = e^0.5 > 1 + ε with A > 0: clipped, no gradient; with A < 0: not clipped.
        let lp = t(&[0.5, 0.5], &device).require_grad();
        let out = ppo_step_loss(
            lp.clone(),
            t(&[0.0, 0.0], &device),
            t(&[1.0, -1.0], &device),
            0.2,
            10.0,
        );
        assert_eq!(out.clipfrac, 1.0);
        let g = grad(&lp, out.loss);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 0.5f32.exp() / 2.0).abs() < 1e-6, "{g:?}");
    }

    #[test]
    fn d3po_ties_give_zero_gradient_and_no_nan() {
        let device = Device::flex().autodiff();
        let lp = t(&[-1.0, -1.2, -0.5, -0.4], &device).require_grad();
        let lp_ref = t(&[-1.01, -1.19, -0.52, -0.41], &device);
        let out = d3po_step_loss(
            lp.clone(),
            lp_ref.clone(),
            lp_ref.clone(),
            t(&[0.0, 0.0], &device),
            0.1,
            0.1,
        );
        let loss = out.loss.clone().into_scalar::<f32>();
        assert!((loss - 2f32.ln()).abs() < 1e-6, "{loss}");
        assert!(grad(&lp, out.loss).iter().all(|g| *g == 0.0));
        // A preference moves the winner's log-ratio up and the loser's down.
        let lp = t(&[-1.0, -1.2, -0.5, -0.4], &device).require_grad();
        let out = d3po_step_loss(
            lp.clone(),
            lp_ref.clone(),
            lp_ref,
            t(&[1.0, -1.0], &device),
            0.1,
            0.1,
        );
        let g = grad(&lp, out.loss);
        assert!(
            g[0] < 0.0 && g[1] > 0.0 && g[2] > 0.0 && g[3] < 0.0,
            "{g:?}"
        );
    }

    #[test]
    fn dpok_adds_the_weighted_kl() {
        let device = Device::flex().autodiff();
        let lp = t(&[-1.0, -1.0], &device).require_grad();
        let kl = t(&[0.5, 1.5], &device);
        let out = dpok_step_loss(
            lp.clone(),
            t(&[-1.0, -1.0], &device),
            t(&[1.0, 3.0], &device),
            kl,
            10.0,
            0.1,
            1e-4,
        );
        // mean(−10 · adv · 1) + 0.1 · mean(kl) = −20 + 0.1
        let loss = out.loss.clone().into_scalar::<f32>();
        assert!((loss - (-20.0 + 0.1)).abs() < 1e-5, "{loss}");
        assert_eq!(grad(&lp, out.loss), vec![-5.0, -15.0]);
    }
}
