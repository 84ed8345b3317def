//! A tiny epsilon-predicting MLP for tests, benches and examples: no weights to download, and
//! [`ToyObjective`], a ROCM-shaped loss for it.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use rand_distr::StandardNormal;

use crate::{
    ConsistencyModel, ModelInput, Parameterization, Prediction, TrajectoryObjective,
    TrajectoryStep, guidance_scale_embedding, per_sample_mean,
};

/// Configuration of a [`ToyEpsMlp`].
#[derive(Config, Debug)]
pub struct ToyEpsMlpConfig {
    /// The latent dimension `d`.
    pub dim: usize,
    /// The hidden width `h` (default 32; at least 4 when guidance is used).
    #[config(default = 32)]
    pub hidden: usize,
    /// Add a `d → d` adapter that [`ConsistencyModel::predict_base`] leaves out (default `false`).
    #[config(default = false)]
    pub adapter: bool,
}

/// A two-layer MLP predicting the noise `ε` of a flat latent:
///
/// ```text
/// h = tanh(linear_in(x) + time_in(t / 1000) [+ 0.1 · guidance_scale_embedding(w, h)])
/// ε = linear_out(h) [+ adapter(x)]
/// ```
///
/// The adapter (when configured) stands in for LoRA: `predict` includes it, `predict_base` does
/// not.
///
/// # Shapes
/// - latent: `[B, d]`; timestep, guidance: `[B]`
/// - output: `[B, d]`
#[derive(Module, Debug)]
pub struct ToyEpsMlp {
    /// `d → h`.
    pub linear_in: Linear,
    /// `1 → h`, on `t / 1000`.
    pub time_in: Linear,
    /// `h → d`.
    pub linear_out: Linear,
    /// Optional `d → d` adapter, left out of the base.
    pub adapter: Option<Linear>,
}

impl ToyEpsMlpConfig {
    /// Initialises the model (Burn's default Linear initialisation) on `device`.
    pub fn init(&self, device: &Device) -> ToyEpsMlp {
        ToyEpsMlp {
            linear_in: LinearConfig::new(self.dim, self.hidden).init(device),
            time_in: LinearConfig::new(1, self.hidden).init(device),
            linear_out: LinearConfig::new(self.hidden, self.dim).init(device),
            adapter: self
                .adapter
                .then(|| LinearConfig::new(self.dim, self.dim).init(device)),
        }
    }
}

impl ToyEpsMlpConfig {
    /// Initialises the model from a host RNG (`ChaCha8Rng::seed_from_u64(seed)`): every weight
    /// and bias `~ N(0, 1/fan_in)`, drawn layer by layer (`linear_in`, `time_in`, `linear_out`,
    /// `adapter`), weight before bias. The same values on every backend and in every test thread.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> ToyEpsMlp {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut linear = |d_in: usize, d_out: usize| {
            let std = 1.0 / (d_in as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| rng.sample::<f32, _>(StandardNormal) * std)
                    .collect()
            };
            let weight =
                Tensor::from_data(TensorData::new(draw(d_in * d_out), [d_in, d_out]), device);
            let bias = Tensor::from_data(TensorData::new(draw(d_out), [d_out]), device);
            Linear {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
            }
        };
        ToyEpsMlp {
            linear_in: linear(self.dim, self.hidden),
            time_in: linear(1, self.hidden),
            linear_out: linear(self.hidden, self.dim),
            adapter: self.adapter.then(|| linear(self.dim, self.dim)),
        }
    }
}

impl ToyEpsMlp {
    fn eps(&self, input: &ModelInput<2>, with_adapter: bool) -> Tensor<2> {
        let t = input
            .timestep
            .clone()
            .div_scalar(1000.0)
            .unsqueeze_dim::<2>(1);
        let mut h = self.linear_in.forward(input.latent.clone()) + self.time_in.forward(t);
        if let Some(w) = &input.guidance {
            let width = h.dims()[1];
            h = h + guidance_scale_embedding(w.clone(), width) * 0.1;
        }
        let eps = self.linear_out.forward(h.tanh());
        match (&self.adapter, with_adapter) {
            (Some(adapter), true) => eps + adapter.forward(input.latent.clone()),
            _ => eps,
        }
    }
}

impl ConsistencyModel<2> for ToyEpsMlp {
    type Conditioning = ();

    fn predict(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
        Prediction {
            output: self.eps(input, true),
            parameterization: Parameterization::Epsilon,
        }
    }

    fn predict_base(&self, input: &ModelInput<2>, _: &()) -> Prediction<2> {
        Prediction {
            output: self.eps(input, false),
            parameterization: Parameterization::Epsilon,
        }
    }
}

/// A ROCM-shaped objective for benches and examples: on each step with a policy the KL to the
/// base, `mean(‖μ − μ_ref‖²) / (2σ²)` (without [`crate::SamplerOptions::record_base`] there is no
/// `μ_ref` and the term is left out), and
/// `mean(x_K²)` on the final sample, a stand-in for a negative reward pulling samples to 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct ToyObjective;

impl TrajectoryObjective<2> for ToyObjective {
    fn step_term(&self, step: &TrajectoryStep<2>) -> Option<Tensor<1>> {
        let p = step.policy.as_ref()?;
        let d = p.mean.clone() - p.base_mean.clone()?;
        Some(per_sample_mean(d.square()) / (2.0 * p.std * p.std))
    }

    fn final_term(&self, x: Tensor<2>) -> Tensor<1> {
        per_sample_mean(x.square())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_only_changes_the_tuned_prediction() {
        let device = Device::flex();
        let model = ToyEpsMlpConfig::new(3)
            .with_hidden(8)
            .with_adapter(true)
            .init(&device);
        let input = ModelInput {
            latent: Tensor::from_floats([[0.1, 0.2, 0.3]], &device),
            timestep: Tensor::from_floats([500.0], &device),
            guidance: Some(Tensor::from_floats([6.5], &device)),
        };
        let tuned = model.predict(&input, &()).output;
        let base = model.predict_base(&input, &()).output;
        let adapter = model
            .adapter
            .as_ref()
            .unwrap()
            .forward(input.latent.clone());
        let diff = (tuned - base - adapter).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
    }
}
