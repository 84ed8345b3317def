//! All the randomness of one multistep run, drawn before it starts.

use burn::prelude::*;
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use rand_distr::StandardNormal;

use crate::Error;

/// The noise `ε = (x_0, z_0, …, z_{K−2})` of a `K`-step run (docs/method.md §2).
///
/// The sampled latent is a deterministic function of the model, this noise and the conditioning,
/// so a run can be replayed exactly (for the checkpointed backward pass, for PPO-style baselines,
/// or on another backend). [`SamplerNoise::from_seed`] draws it on the host with ChaCha8, so the
/// values are the same on every backend and thread count; [`SamplerNoise::new`] injects noise made
/// elsewhere (e.g. by diffusers).
///
/// # Shapes
/// - `initial`: `[B, …]`, the starting latent `x_0`
/// - `steps`: `K − 1` tensors of the same shape, `z_k` re-noises step `k` to `t_{k+1}`
#[derive(Clone, Debug)]
pub struct SamplerNoise<const D: usize> {
    /// The starting latent `x_0 ~ N(0, I)`.
    pub initial: Tensor<D>,
    /// The re-noising draws `z_0 … z_{K−2}`, in step order.
    pub steps: Vec<Tensor<D>>,
}

impl<const D: usize> SamplerNoise<D> {
    /// Wraps noise made elsewhere; checked against the run by [`SamplerNoise::check`].
    pub fn new(initial: Tensor<D>, steps: Vec<Tensor<D>>) -> Self {
        Self { initial, steps }
    }

    /// Draws `x_0` and then `z_0, …, z_{K−2}` (in that order, row-major) from one
    /// `ChaCha8Rng::seed_from_u64(seed)` stream of standard normals, on `device`.
    pub fn from_seed(shape: [usize; D], num_steps: usize, seed: u64, device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let numel: usize = shape.iter().product();
        let mut draw = || {
            let v: Vec<f32> = (0..numel).map(|_| rng.sample(StandardNormal)).collect();
            Tensor::from_data(TensorData::new(v, shape), device)
        };
        let initial = draw();
        let steps = (1..num_steps).map(|_| draw()).collect();
        Self { initial, steps }
    }

    /// The number of steps `K` this noise is for (`steps.len() + 1`).
    pub fn num_steps(&self) -> usize {
        self.steps.len() + 1
    }

    /// Errors unless there are exactly `num_steps − 1` step draws, all shaped like `x_0`.
    pub fn check(&self, num_steps: usize) -> Result<(), Error> {
        if self.steps.len() + 1 != num_steps {
            return Err(Error::BadNoise(format!(
                "{} re-noising draws for {num_steps} steps, expected {}",
                self.steps.len(),
                num_steps.saturating_sub(1)
            )));
        }
        let shape = self.initial.dims();
        if shape.first() == Some(&0) {
            return Err(Error::BadNoise("the batch is empty".into()));
        }
        if let Some((k, z)) = self
            .steps
            .iter()
            .enumerate()
            .find(|(_, z)| z.dims() != shape)
        {
            return Err(Error::BadNoise(format!(
                "z_{k} has shape {:?}, x_0 has {shape:?}",
                z.dims()
            )));
        }
        Ok(())
    }

    /// The same noise without autodiff (for no-grad sampling).
    pub fn inner(self) -> Self {
        Self {
            initial: self.initial.inner(),
            steps: self.steps.into_iter().map(Tensor::inner).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_ordered() {
        let device = Device::flex();
        let a = SamplerNoise::from_seed([2, 3], 3, 7, &device);
        let b = SamplerNoise::from_seed([2, 3], 3, 7, &device);
        assert_eq!(a.num_steps(), 3);
        assert_eq!(a.initial.to_data(), b.initial.to_data());
        assert_eq!(a.steps[1].to_data(), b.steps[1].to_data());
        // x_0 is the first draw of the stream: a 1-step noise with the same seed starts the same.
        let one = SamplerNoise::from_seed([2, 3], 1, 7, &device);
        assert_eq!(one.initial.to_data(), a.initial.to_data());
        assert_ne!(a.steps[0].to_data(), a.steps[1].to_data());
    }

    #[test]
    fn check_rejects_bad_counts_and_shapes() {
        let device = Device::flex();
        let n = SamplerNoise::from_seed([2, 3], 3, 0, &device);
        assert!(n.check(3).is_ok());
        assert!(matches!(n.check(4), Err(Error::BadNoise(_))));
        let bad = SamplerNoise::new(n.initial.clone(), vec![Tensor::zeros([2, 4], &device)]);
        let msg = bad.check(2).unwrap_err().to_string();
        assert!(msg.contains("[2, 4]") && msg.contains("[2, 3]"), "{msg}");
    }
}
