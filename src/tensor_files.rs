//! The safetensors files a run exchanges with diffusers to be compared exactly: injected sampler
//! noise in (`rocm sample --noise`, `examples/sample.rs --noise`), image tensors out
//! (`--out-tensor`).
//!
//! A noise file holds `latents` `[B, C, h, w]` (x_0, diffusers' `latents=`) and `noise`
//! `[K−1, B, C, h, w]` (`noise[k]` = z_k, the LCM scheduler's re-noising draw at step k), f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_sampler::SamplerNoise;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A noise or image file that cannot be read or written; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Creating the output's folder failed.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not a safetensors file, or one that could not be written.
    #[error("{path}: safetensors: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors crate said.
        message: String,
    },
    /// A tensor is missing, or has the wrong dtype or shape.
    #[error("{path}: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        message: String,
    },
}

/// Reads injected noise for `batch` prompts and `steps` sampler steps from `path` (see the
/// module docs), on `device`. A missing tensor, a dtype other than f32 or shapes that do not
/// fit `batch` and `steps` are a [`TensorFileError::Tensor`] saying what was expected.
pub fn read_noise(
    path: &Path,
    batch: usize,
    steps: usize,
    device: &Device,
) -> Result<SamplerNoise<4>, TensorFileError> {
    let bytes = std::fs::read(path).map_err(|source| TensorFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| TensorFileError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let bad = |message: String| TensorFileError::Tensor {
        path: path.to_path_buf(),
        message,
    };
    let get = |name: &str, rank: usize| -> Result<(Vec<usize>, Vec<f32>), TensorFileError> {
        let view = file
            .tensor(name)
            .map_err(|_| bad(format!("no tensor `{name}`")))?;
        if view.dtype() != Dtype::F32 || view.shape().len() != rank {
            return Err(bad(format!(
                "`{name}` is {:?} {:?}, expected a rank-{rank} F32 tensor",
                view.dtype(),
                view.shape()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((view.shape().to_vec(), values))
    };
    let (latent_shape, latents) = get("latents", 4)?;
    let (noise_shape, noise) = get("noise", 5)?;
    let k = steps.saturating_sub(1);
    let expected_noise: Vec<usize> = std::iter::once(k).chain(latent_shape.clone()).collect();
    if latent_shape[0] != batch || noise_shape != expected_noise {
        return Err(bad(format!(
            "latents {latent_shape:?} and noise {noise_shape:?} do not fit {batch} prompt(s) and \
             {steps} steps: expected latents [{batch}, C, h, w] and noise [{k}, {batch}, C, h, w]"
        )));
    }
    let shape = [
        latent_shape[0],
        latent_shape[1],
        latent_shape[2],
        latent_shape[3],
    ];
    let numel: usize = shape.iter().product();
    let tensor = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), device);
    let steps = noise.chunks_exact(numel.max(1)).map(tensor).collect();
    Ok(SamplerNoise::new(tensor(&latents), steps))
}

/// Writes `images` (`[B, 3, H, W]`, the pipeline's output in `[0, 1]`) to `path` as one f32
/// tensor named `image`, before any 8-bit quantisation.
pub fn write_image_tensor(path: &Path, images: Tensor<4>) -> Result<(), TensorFileError> {
    let shape = images.dims().to_vec();
    let data = images.into_data().convert::<f32>();
    let bytes: Vec<u8> = data.iter::<f32>().flat_map(f32::to_le_bytes).collect();
    let st_err = |message: String| TensorFileError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let view = TensorView::new(Dtype::F32, shape, &bytes).map_err(|e| st_err(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TensorFileError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let tensors: HashMap<String, TensorView<'_>> = HashMap::from([("image".to_string(), view)]);
    safetensors::serialize_to_file(tensors, None, path).map_err(|e| st_err(e.to_string()))
}
