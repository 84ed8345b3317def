//! The data of the diffusion stages: training scenes encoded once by the shipped VAE (latent
//! means times its `scaling_factor`, as Stable Diffusion trains on) and their captions encoded by
//! the world CLIP's text tower (`last_hidden_state`, what conditions the UNet), held on the host.
//! Batches are drawn from the cache per step, from the step's own seed, with empty-prompt dropout
//! for classifier-free guidance.

use burn::prelude::*;
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use rocm_models::AutoencoderKL;
use rocm_models::TextEncoder;

use super::host_values;
use crate::Error;
use crate::render::{Image, render};
use crate::world::Split;

/// Scenes (and captions) encoded per call of the VAE and the text encoder.
const CHUNK: usize = 64;

/// Encoded training scenes: latents `[n, C, h, w]` and text embeddings `[n, M, D]`, row-major on
/// the host, plus the empty prompt's embedding `[M, D]`.
#[derive(Debug, Clone)]
pub struct LatentCache {
    /// Latent shape of one scene, `[C, h, w]`.
    pub latent_shape: [usize; 3],
    /// Text embedding shape of one caption, `[M, D]`.
    pub text_shape: [usize; 2],
    /// The scenes' captions.
    pub captions: Vec<String>,
    latents: Vec<f32>,
    texts: Vec<f32>,
    empty: Vec<f32>,
}

/// A training batch (on the device it was made on).
#[derive(Debug, Clone)]
pub struct LatentBatch {
    /// Scaled latents `[B, C, h, w]`.
    pub latents: Tensor<4>,
    /// Text embeddings `[B, M, D]` (the empty prompt's where dropped).
    pub text: Tensor<3>,
    /// The empty prompt's embeddings, repeated `[B, M, D]`.
    pub empty: Tensor<3>,
}

impl LatentCache {
    /// Renders the first `n` scenes of `split` from `start`, encodes them with `vae` (scaled by
    /// its `scaling_factor`) and their captions with `text` (on `device`, without autodiff).
    pub fn build(
        vae: &AutoencoderKL,
        text: &TextEncoder,
        split: Split,
        start: u64,
        n: usize,
        device: &Device,
    ) -> Result<Self, Error> {
        let scenes = split.scenes(start, n);
        let captions: Vec<String> = scenes.iter().map(|s| s.caption.clone()).collect();
        let (mut latents, mut texts) = (Vec::new(), Vec::new());
        let (mut latent_shape, mut text_shape) = ([0; 3], [0; 2]);
        for chunk in scenes.chunks(CHUNK) {
            let images: Vec<Image> = chunk.iter().map(render).collect();
            let (mean, _) = vae.encode(Image::batch(&images, device) * 2.0 - 1.0);
            let mean = mean * vae.scaling_factor;
            let [_, c, h, w] = mean.dims();
            latent_shape = [c, h, w];
            latents.extend(host_values(mean));
            let prompts: Vec<&str> = chunk.iter().map(|s| s.caption.as_str()).collect();
            let emb = text.encode(&prompts)?;
            let [_, m, d] = emb.dims();
            text_shape = [m, d];
            texts.extend(host_values(emb));
        }
        let empty = host_values(text.encode(&[""])?);
        Ok(Self {
            latent_shape,
            text_shape,
            captions,
            latents,
            texts,
            empty,
        })
    }

    /// Scenes in the cache.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// `batch` random scenes, each caption replaced by the empty prompt with probability
    /// `dropout` (classifier-free guidance training), on `device`.
    pub fn batch(
        &self,
        rng: &mut ChaCha8Rng,
        batch: usize,
        dropout: f64,
        device: &Device,
    ) -> LatentBatch {
        let [c, h, w] = self.latent_shape;
        let [m, d] = self.text_shape;
        let (lsize, tsize) = (c * h * w, m * d);
        let (mut latents, mut texts) = (Vec::with_capacity(batch * lsize), Vec::new());
        for _ in 0..batch {
            let k = rng.random_range(0..self.len());
            latents.extend_from_slice(&self.latents[k * lsize..(k + 1) * lsize]);
            if rng.random_bool(dropout) {
                texts.extend_from_slice(&self.empty);
            } else {
                texts.extend_from_slice(&self.texts[k * tsize..(k + 1) * tsize]);
            }
        }
        let empty: Vec<f32> = (0..batch)
            .flat_map(|_| self.empty.iter().copied())
            .collect();
        LatentBatch {
            latents: Tensor::from_data(TensorData::new(latents, [batch, c, h, w]), device),
            text: Tensor::from_data(TensorData::new(texts, [batch, m, d]), device),
            empty: Tensor::from_data(TensorData::new(empty, [batch, m, d]), device),
        }
    }
}

/// `[B, 1, 1, 1]` per-sample coefficients (for broadcasting over latents).
pub fn per_sample(values: &[f32], device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len(), 1, 1, 1]),
        device,
    )
}
