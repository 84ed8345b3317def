//! A small LoRA-ready consistency model of 2-D points, for tests, benches and the quickstart:
//! no weights to download. [`pretrained`] is the one base model every toy run starts from (the
//! quickstart's, `rocm train`'s with `model = "toy"`), and [`scheduler`] its noise schedule.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::silu;
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use rand_distr::StandardNormal;
use rocm_lora::{Linear, impl_lora_container, with_adapters_disabled};
use rocm_sampler::{ConsistencyModel, ModelInput, Parameterization, Prediction};

/// Number of sinusoidal frequencies of the time features.
const FREQUENCIES: usize = 4;

/// Configuration of a [`ToyPointModel`].
#[derive(Config, Debug)]
pub struct ToyPointModelConfig {
    /// The hidden width (default 64).
    #[config(default = 64)]
    pub hidden: usize,
    /// Hidden layers after the input layer (default 2).
    #[config(default = 2)]
    pub depth: usize,
}

/// An MLP predicting the noise `ε` of a 2-D point `x_t` at timestep `t`:
///
/// ```text
/// τ = t / 1000,  e(τ) = [sin(π 2^j τ), cos(π 2^j τ)]_{j<4}
/// h_0 = silu(linear_in([x, e(τ)])),  h_{i+1} = silu(hidden_i(h_i)),  ε = linear_out(h_depth)
/// ```
///
/// Every layer is a [`rocm_lora::Linear`], so [`rocm_lora::apply_lora`] can target `linear_in`,
/// `hidden.0`, …, `linear_out`; [`ConsistencyModel::predict_base`] runs the same layers with
/// adapters switched off ([`with_adapters_disabled`]). Guidance and conditioning are ignored.
///
/// # Shapes
/// - latent: `[B, 2]`, timestep `[B]`; output `[B, 2]`
#[derive(Module, Debug)]
pub struct ToyPointModel {
    /// `2 + 8 → hidden`.
    pub linear_in: Linear,
    /// `hidden → hidden`, `depth` of them.
    pub hidden: Vec<Linear>,
    /// `hidden → 2`.
    pub linear_out: Linear,
}

impl_lora_container!(ToyPointModel {
    linear_in,
    hidden,
    linear_out
});

impl ToyPointModelConfig {
    /// Initialises the model from a host RNG (`ChaCha8Rng::seed_from_u64(seed)`): weights
    /// `~ N(0, 1/fan_in)`, biases 0, drawn layer by layer. The same values on every backend.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> ToyPointModel {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut linear = |d_in: usize, d_out: usize| {
            let std = 1.0 / (d_in as f32).sqrt();
            let w: Vec<f32> = (0..d_in * d_out)
                .map(|_| rng.sample::<f32, _>(StandardNormal) * std)
                .collect();
            Linear {
                weight: Param::from_tensor(Tensor::from_data(
                    TensorData::new(w, [d_in, d_out]),
                    device,
                )),
                bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
                lora: None,
                merged: false,
            }
        };
        let linear_in = linear(2 + 2 * FREQUENCIES, self.hidden);
        let hidden = (0..self.depth)
            .map(|_| linear(self.hidden, self.hidden))
            .collect();
        let linear_out = linear(self.hidden, 2);
        ToyPointModel {
            linear_in,
            hidden,
            linear_out,
        }
    }
}

impl ToyPointModel {
    /// The LoRA targets covering every layer: `linear_in`, `hidden.i`, `linear_out`.
    pub fn all_layers(&self) -> Vec<String> {
        let mut v = vec!["linear_in".to_string()];
        v.extend((0..self.hidden.len()).map(|i| format!("hidden.{i}")));
        v.push("linear_out".into());
        v
    }

    /// `ε̂(x_t, t)`.
    ///
    /// # Shapes
    /// - `latent`: `[B, 2]`, `timestep`: `[B]`; output `[B, 2]`
    pub fn forward(&self, latent: Tensor<2>, timestep: Tensor<1>) -> Tensor<2> {
        let device = latent.device();
        let tau = timestep.div_scalar(1000.0).unsqueeze_dim::<2>(1); // [B, 1]
        let freqs: Vec<f32> = (0..FREQUENCIES)
            .map(|j| std::f32::consts::PI * 2f32.powi(j as i32))
            .collect();
        let freqs =
            Tensor::<1>::from_data(TensorData::new(freqs, [FREQUENCIES]), &device).unsqueeze::<2>();
        let phase = tau * freqs; // [B, F]
        let features = Tensor::cat(vec![latent, phase.clone().sin(), phase.cos()], 1);
        let mut h = silu(self.linear_in.forward(features));
        for layer in &self.hidden {
            h = silu(layer.forward(h));
        }
        self.linear_out.forward(h)
    }
}

impl ConsistencyModel<2> for ToyPointModel {
    type Conditioning = ();

    fn predict(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
        Prediction {
            output: self.forward(input.latent.clone(), input.timestep.clone()),
            parameterization: Parameterization::Epsilon,
        }
    }

    fn predict_base(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
        let output =
            with_adapters_disabled(|| self.forward(input.latent.clone(), input.timestep.clone()));
        Prediction {
            output,
            parameterization: Parameterization::Epsilon,
        }
    }
}

/// A mixture of equal-weight isotropic Gaussians in 2-D: the toy's data distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    /// The modes' centres.
    pub means: Vec<(f32, f32)>,
    /// The per-coordinate standard deviation of every mode.
    pub std: f32,
}

impl Mixture {
    /// `modes` Gaussians evenly spaced on a circle of `radius`, the first at `(radius, 0)`.
    pub fn ring(modes: usize, radius: f32, std: f32) -> Self {
        let means = (0..modes)
            .map(|i| {
                let a = 2.0 * std::f32::consts::PI * i as f32 / modes as f32;
                (radius * a.cos(), radius * a.sin())
            })
            .collect();
        Self { means, std }
    }

    /// Draws one point.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> [f32; 2] {
        let (mx, my) = self.means[rng.random_range(0..self.means.len())];
        let (zx, zy): (f32, f32) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
        [mx + self.std * zx, my + self.std * zy]
    }

    /// `log p(x, y)`, computed stably (log-sum-exp) in f64.
    pub fn log_density(&self, x: f32, y: f32) -> f64 {
        let var = f64::from(self.std).powi(2);
        let norm = (2.0 * std::f64::consts::PI * var).ln() + (self.means.len() as f64).ln();
        let logs: Vec<f64> = self
            .means
            .iter()
            .map(|&(mx, my)| {
                let d2 = f64::from(x - mx).powi(2) + f64::from(y - my).powi(2);
                -d2 / (2.0 * var) - norm
            })
            .collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
    }
}

/// Trains `model` (all parameters) as an ε-predictor of `data` by denoising score matching:
/// `t ~ U{0..999}`, `x_t = √ā_t x_0 + √(1 − ā_t) ε`, loss `‖ε̂(x_t, t) − ε‖²`, AdamW (lr 3e-3 for
/// the first ¾ of the steps, then 1e-3), batches of `batch`, host RNG seeded with `seed`.
/// The LCM sampler then uses it as a consistency model (its `x̂_0` is the denoiser's estimate).
pub fn pretrain_denoiser(
    mut model: ToyPointModel,
    data: &Mixture,
    scheduler: &rocm_sampler::LcmScheduler,
    steps: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> ToyPointModel {
    use burn::optim::{AdamWConfig, GradientsParams};
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for step in 0..steps {
        let (mut x, mut eps, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..batch {
            let x0 = data.sample(&mut rng);
            let ts = rng.random_range(0..1000usize);
            let a = scheduler.alpha_cumprod(ts);
            for x0j in x0 {
                let e: f32 = rng.sample(StandardNormal);
                x.push(a.sqrt() * x0j + (1.0 - a).sqrt() * e);
                eps.push(e);
            }
            t.push(ts as f32);
        }
        let x = Tensor::<2>::from_data(TensorData::new(x, [batch, 2]), device);
        let eps = Tensor::<2>::from_data(TensorData::new(eps, [batch, 2]), device);
        let t = Tensor::<1>::from_data(TensorData::new(t, [batch]), device);
        let loss = (model.forward(x, t) - eps).square().mean();
        let lr = if step < steps * 3 / 4 { 3e-3 } else { 1e-3 };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    model
}

/// The toy's data: 8 modes on a ring of radius 2, standard deviation 0.25.
pub fn data() -> Mixture {
    Mixture::ring(8, 2.0, 0.25)
}

/// The toy's noise schedule: SD 1.5's LCM schedule (`LcmScheduler::default()`), the one
/// [`pretrained`] is trained with.
pub fn scheduler() -> rocm_sampler::LcmScheduler {
    rocm_sampler::LcmScheduler::default()
}

/// The toy's schedule read as a `DDIMScheduler` (the same betas as [`scheduler`], SD 1.x's
/// `steps_offset = 1`, `set_alpha_to_one = false`): the toy's ε-predictor is a diffusion model
/// too, so DDPO, DPOK and D3PO can sample it with DDIM as their papers do.
pub fn ddim_scheduler() -> rocm_sampler::DdimScheduler {
    rocm_sampler::DdimScheduler::sd15()
}

/// The toy base model: [`ToyPointModelConfig::new`] (hidden 64, depth 2) from seed 0, trained
/// by [`pretrain_denoiser`] on [`data`] with [`scheduler`] for 600 steps of 512 points (seed 1).
/// Deterministic on a given backend (about a second on 2 CPU cores), so adapters saved from one
/// run fit the base of the next. Apply LoRA to it to fine-tune.
pub fn pretrained(device: &Device) -> ToyPointModel {
    let untrained = ToyPointModelConfig::new().init_seeded(0, device);
    pretrain_denoiser(untrained, &data(), &scheduler(), 600, 512, 1, device)
}

/// The toy's hackable proxy reward: the x-coordinate of the point (unbounded).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyX;

impl crate::LatentReward<2> for ProxyX {
    fn name(&self) -> &str {
        "x"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        let [b, _] = latent.dims();
        latent.slice(s![.., 0..1]).reshape([b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_density_peaks_at_the_modes_and_integrates_sensibly() {
        let m = Mixture::ring(8, 2.0, 0.25);
        assert_eq!(m.means.len(), 8);
        assert!((m.means[0].0 - 2.0).abs() < 1e-6 && m.means[0].1.abs() < 1e-6);
        // At a mode the other modes are ≥ 1.5 apart: p ≈ 1/8 · 1/(2π σ²).
        let want = (1.0 / (8.0 * 2.0 * std::f64::consts::PI * 0.0625)).ln();
        assert!((m.log_density(2.0, 0.0) - want).abs() < 1e-3);
        assert!(m.log_density(0.0, 0.0) < want - 20.0);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let r: f32 = (0..2000)
            .map(|_| {
                let [x, y] = m.sample(&mut rng);
                (x * x + y * y).sqrt()
            })
            .sum::<f32>()
            / 2000.0;
        assert!((r - 2.0).abs() < 0.05, "{r}");
    }
}
