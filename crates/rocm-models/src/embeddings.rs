//! Timestep embeddings (diffusers `models/embeddings.py`): the sinusoidal `Timesteps` projection
//! and the `TimestepEmbedding` MLP with LCM's guidance condition.

use burn::prelude::*;
use rocm_kernels::silu;
use rocm_lora::{Linear, LinearConfig, impl_lora_container};

/// The sinusoidal timestep embedding of DDPM (diffusers `get_timestep_embedding`, max period 10⁴):
///
/// ```text
/// half = ⌊d/2⌋,  freq_i = exp(−ln(10⁴) · i / (half − freq_shift)),  i = 0..half
/// emb = [sin(t · freq), cos(t · freq)]   ([cos, sin] when flip_sin_to_cos), zero-padded if d odd
/// ```
///
/// # Shapes
/// - `timesteps`: `[B]`
/// - output: `[B, dim]`
pub fn timestep_embedding(
    timesteps: Tensor<1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Tensor<2> {
    let half = dim / 2;
    let denom = half as f32 - freq_shift as f32;
    // f32 on the host in torch's order: exponent = (−ln(10⁴) · i) / (half − shift), then exp.
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((-(10000f32).ln() * i as f32) / denom).exp())
        .collect();
    let device = timesteps.device();
    let [b] = timesteps.dims();
    let freqs = Tensor::<1>::from_floats(freqs.as_slice(), &device).reshape([1, half]);
    let args = timesteps.reshape([b, 1]) * freqs;
    let (sin, cos) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![cos, sin], 1)
    } else {
        Tensor::cat(vec![sin, cos], 1)
    };
    if dim % 2 == 1 {
        Tensor::cat(vec![emb, Tensor::zeros([b, 1], &device)], 1)
    } else {
        emb
    }
}

/// Configuration of a [`TimestepEmbedding`].
#[derive(Config, Debug)]
pub struct TimestepEmbeddingConfig {
    /// Width of the sinusoidal input (`block_out_channels[0]`).
    pub in_channels: usize,
    /// Width of the embedding (`4 · block_out_channels[0]`).
    pub time_embed_dim: usize,
    /// Width of the extra condition (LCM's `time_cond_proj_dim`); `None` for no `cond_proj`.
    #[config(default = "None")]
    pub cond_proj_dim: Option<usize>,
}

impl TimestepEmbeddingConfig {
    /// Builds the layers with random weights.
    pub fn init(&self, device: &Device) -> TimestepEmbedding {
        TimestepEmbedding {
            linear_1: LinearConfig::new(self.in_channels, self.time_embed_dim).init(device),
            linear_2: LinearConfig::new(self.time_embed_dim, self.time_embed_dim).init(device),
            cond_proj: self.cond_proj_dim.map(|d| {
                LinearConfig::new(d, self.in_channels)
                    .with_bias(false)
                    .init(device)
            }),
        }
    }
}

/// diffusers `TimestepEmbedding`: `linear_2(silu(linear_1(t_emb + cond_proj(c))))`, where the
/// bias-free `cond_proj` adds LCM's guidance-scale embedding `c` (Luo et al. 2023, §4.2).
///
/// # Shapes
/// - `sample`: `[B, in_channels]`, `condition`: `[B, cond_proj_dim]`
/// - output: `[B, time_embed_dim]`
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// First projection.
    pub linear_1: Linear,
    /// Second projection.
    pub linear_2: Linear,
    /// Projection of the guidance embedding, bias-free.
    pub cond_proj: Option<Linear>,
}
impl_lora_container!(TimestepEmbedding {
    linear_1,
    linear_2,
    cond_proj
});

impl TimestepEmbedding {
    /// Embeds `sample`, adding `cond_proj(condition)` first when both exist (a condition given to
    /// a model without `cond_proj` is ignored, as diffusers does).
    pub fn forward(&self, sample: Tensor<2>, condition: Option<Tensor<2>>) -> Tensor<2> {
        let sample = match (&self.cond_proj, condition) {
            (Some(proj), Some(c)) => sample + proj.forward(c),
            _ => sample,
        };
        self.linear_2.forward(silu(self.linear_1.forward(sample)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_embedding_matches_formula() {
        let device = Device::flex();
        let t = Tensor::<1>::from_floats([0.0, 10.0], &device);
        let e = timestep_embedding(t, 4, true, 0.0)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        // half = 2: freqs = exp(−ln(10⁴)·i/2) = [1, 1e-2]; flip → [cos, sin].
        let expect = [
            1.0,
            1.0,
            0.0,
            0.0,
            10f32.cos(),
            0.1f32.cos(),
            10f32.sin(),
            0.1f32.sin(),
        ];
        for (a, b) in e.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{e:?}");
        }
    }
}
