//! diffusers' `LatentConsistencyModelPipeline` (text → image in `K` steps): the CLIP tokenizer and
//! text encoder, the LCM multistep sampler on the UNet with its distilled guidance embedding, and
//! the VAE decoder.
//!
//! ```no_run
//! # fn main() -> Result<(), rocm_models::pipeline::PipelineError> {
//! use burn::prelude::*;
//! use rocm_models::pipeline::{LcmPipeline, NoiseSource};
//!
//! let device = Device::flex();
//! let pipeline = LcmPipeline::from_pretrained("SimianLuo/LCM_Dreamshaper_v7", &device)?;
//! let images = pipeline.generate(&["a photo of a cat"], 4, 8.0, NoiseSource::Seed(0))?;
//! assert_eq!(images.dims(), [1, 3, 768, 768]); // in [0, 1]
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use rocm_sampler::{
    ConsistencyModel, DdimScheduler, Guidance, LcmScheduler, LcmSchedulerConfig, ModelInput,
    Prediction, Sampler, SamplerNoise, SamplerOptions,
};

use crate::clip::CLIPTextModel;
use crate::tokenizer::CLIPTokenizer;
use crate::{AutoencoderKL, AutoencoderKLConfig, Error, UNet2DConditionModel};
use crate::{UNet2DConditionModelConfig, hub};

/// The files of a diffusers LCM folder that [`LcmPipeline::from_hub`] needs (fp32 weights, CLIP
/// tokenizer as `vocab.json` + `merges.txt`), as in `SimianLuo/LCM_Dreamshaper_v7`.
pub const LCM_FOLDER_FILES: [&str; 12] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// The sub-folders a diffusers LCM pipeline folder must have.
const COMPONENTS: [&str; 5] = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"];

/// Errors of the pipeline: loading a component, or invalid generation inputs.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A model, tokenizer or hub error (names the file).
    #[error(transparent)]
    Model(#[from] Error),
    /// The folder is not a diffusers pipeline folder.
    #[error("{path} is not a diffusers pipeline folder: {message}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// `scheduler/scheduler_config.json` could not be read or is invalid.
    #[error("scheduler config {path}: {source}")]
    Scheduler {
        /// The scheduler config file.
        path: PathBuf,
        /// The sampler crate's error.
        source: rocm_sampler::Error,
    },
    /// Invalid sampling options or noise (step count, noise count or shape).
    #[error(transparent)]
    Sampler(#[from] rocm_sampler::Error),
    /// Noise that does not fit the prompts or the UNet (batch or channel count).
    #[error("bad noise: {0}")]
    BadNoise(String),
}

/// Where the starting latent `x_0` and the re-noising draws `z_0 … z_{K−2}` come from.
// Made once per `generate` call and consumed: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum NoiseSource {
    /// Drawn on the host with [`SamplerNoise::from_seed`] (the same on every backend).
    Seed(u64),
    /// Given explicitly (e.g. diffusers' `latents` and the scheduler's `randn_tensor` draws).
    Injected(SamplerNoise<4>),
}

/// The latent consistency model text-to-image pipeline (diffusers' `LatentConsistencyModelPipeline`
/// without the safety checker): `w = g − 1`, distilled guidance embedded through the UNet's
/// `time_cond_proj_dim`, evenly spaced LCM timesteps, `init_noise_sigma = 1`.
#[derive(Debug)]
pub struct LcmPipeline {
    /// The consistency-distilled UNet.
    pub unet: UNet2DConditionModel,
    /// The VAE (only its decoder is used here).
    pub vae: AutoencoderKL,
    /// The CLIP text encoder (its `last_hidden_state` conditions the UNet).
    pub text_encoder: CLIPTextModel,
    /// The CLIP tokenizer (padded/truncated to its `model_max_length`).
    pub tokenizer: CLIPTokenizer,
    /// The LCM scheduler from `scheduler/scheduler_config.json`.
    pub scheduler: LcmScheduler,
    /// The UNet's `sample_size` (latent height and width).
    pub sample_size: usize,
    /// The UNet's `in_channels` (latent channels).
    pub latent_channels: usize,
    /// `2^(len(vae.block_out_channels) − 1)`: image pixels per latent pixel.
    pub vae_scale_factor: usize,
    device: Device,
    /// The folder the pipeline was loaded from.
    dir: PathBuf,
}

impl LcmPipeline {
    /// Loads a diffusers pipeline folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
    /// `scheduler/`; fp32 or fp16 safetensors, cast to f32 one tensor at a time).
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self, PipelineError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(PipelineError::Folder {
                path: dir.to_path_buf(),
                message: "no such directory".into(),
            });
        }
        let missing: Vec<&str> = COMPONENTS
            .into_iter()
            .filter(|c| !dir.join(c).is_dir())
            .collect();
        if !missing.is_empty() {
            return Err(PipelineError::Folder {
                path: dir.to_path_buf(),
                message: format!("missing sub-folders {missing:?}"),
            });
        }
        let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler = LcmSchedulerConfig::from_file(&scheduler_path)
            .and_then(LcmScheduler::new)
            .map_err(|source| PipelineError::Scheduler {
                path: scheduler_path,
                source,
            })?;
        let unet_config = UNet2DConditionModelConfig::from_file(dir.join("unet/config.json"))?;
        let vae_config = AutoencoderKLConfig::from_file(dir.join("vae/config.json"))?;
        log::info!("loading the LCM pipeline from {}", dir.display());
        Ok(Self {
            unet: UNet2DConditionModel::from_pretrained(dir.join("unet"), device)?,
            vae: AutoencoderKL::from_pretrained(dir.join("vae"), device)?,
            text_encoder: CLIPTextModel::from_pretrained(dir.join("text_encoder"), device)?,
            tokenizer: CLIPTokenizer::from_dir(dir.join("tokenizer"))?,
            scheduler,
            sample_size: unet_config.sample_size,
            latent_channels: unet_config.in_channels,
            vae_scale_factor: 1 << vae_config.block_out_channels.len().saturating_sub(1),
            device: device.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// Loads a pipeline by name or path, with diffusers' `from_pretrained` meaning
    /// ([`hub::model_dir`]): an existing local directory is a pipeline folder
    /// ([`LcmPipeline::from_folder`]); otherwise an `org/name` string ([`hub::is_repo_id`]) is
    /// a hub repository resolved in the Hugging Face cache ([`LcmPipeline::from_hub`]); anything
    /// else is an [`Error::NotFolderOrRepoId`] naming the string.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), rocm_models::pipeline::PipelineError> {
    /// # let device = burn::prelude::Device::flex();
    /// use rocm_models::LcmPipeline;
    ///
    /// let local = LcmPipeline::from_pretrained("/data/LCM_Dreamshaper_v7", &device)?; // a folder
    /// let cached = LcmPipeline::from_pretrained("SimianLuo/LCM_Dreamshaper_v7", &device)?; // the cache
    /// # Ok(()) }
    /// ```
    pub fn from_pretrained(name_or_path: &str, device: &Device) -> Result<Self, PipelineError> {
        let dir = hub::model_dir(name_or_path, &LCM_FOLDER_FILES)?;
        Self::from_folder(dir, device)
    }

    /// Loads the hub repository `repo_id` (e.g. `SimianLuo/LCM_Dreamshaper_v7`) from the Hugging
    /// Face cache (`HF_HUB_CACHE`, `HF_HOME`; offline unless the `download` feature is on), never
    /// a local folder: [`LcmPipeline::from_pretrained`] takes either. When files are missing the
    /// error lists them with the `huggingface-cli download` command that fetches them; a string
    /// that is not `org/name` is an [`Error::InvalidRepoId`].
    pub fn from_hub(repo_id: &str, device: &Device) -> Result<Self, PipelineError> {
        let dir = hub::resolve(repo_id, &LCM_FOLDER_FILES)?;
        Self::from_folder(dir, device)
    }

    /// The device the pipeline's weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The latent shape `[B, C, h, w]` for `batch` prompts at the UNet's native size.
    pub fn latent_shape(&self, batch: usize) -> [usize; 4] {
        let s = self.sample_size;
        [batch, self.latent_channels, s, s]
    }

    /// Tokenizes (padded/truncated to the tokenizer's length) and encodes prompts: CLIP's
    /// `last_hidden_state`, detached, as diffusers' `encode_prompt` without `clip_skip`
    /// ([`crate::text_encoder::encode_prompts`]).
    ///
    /// # Shapes
    /// - output: `[prompts.len(), max_length, hidden_size]`
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor<3>, PipelineError> {
        let text = crate::text_encoder::encode_prompts(
            &self.tokenizer,
            &self.text_encoder,
            prompts,
            &self.device,
        )?;
        Ok(text)
    }

    /// The pipeline's `scheduler/scheduler_config.json` read as a `DDIMScheduler`, as
    /// diffusers' `DDIMScheduler.from_config(pipe.scheduler.config)` does (what DDPO, DPOK and
    /// D3PO sample a diffusion UNet such as `Lykon/dreamshaper-7` with): the betas and
    /// `steps_offset` of the file, the other schedulers' keys ignored.
    ///
    /// Errors when the file is not a valid DDIM configuration, naming it and the key.
    pub fn ddim_scheduler(&self) -> Result<DdimScheduler, PipelineError> {
        let path = self.dir.join("scheduler").join("scheduler_config.json");
        DdimScheduler::from_file(&path).map_err(|source| PipelineError::Scheduler { path, source })
    }

    /// The sampler of the pipeline's own noise schedule (`scheduler/scheduler_config.json`).
    pub fn sampler(&self) -> Sampler {
        Sampler::new(self.scheduler.clone())
    }

    /// Splits the pipeline into what a training run needs: the UNet (to fine-tune), the VAE
    /// (to decode for the reward), the frozen [`TextEncoder`](crate::TextEncoder), the sampler
    /// of its schedule and one sample's latent shape (`[1, C, h, w]`).
    pub fn into_training_parts(self) -> TrainingParts {
        let sampler = self.sampler();
        let latent_shape = self.latent_shape(1);
        TrainingParts {
            text_encoder: crate::TextEncoder::new(self.tokenizer, self.text_encoder, &self.device),
            unet: self.unet,
            vae: self.vae,
            sampler,
            latent_shape,
        }
    }

    /// [`LcmPipeline::generate_with_progress`] without a progress callback.
    pub fn generate(
        &self,
        prompts: &[&str],
        steps: usize,
        guidance: f32,
        noise: NoiseSource,
    ) -> Result<Tensor<4>, PipelineError> {
        self.generate_with_progress(prompts, steps, guidance, noise, |_, _| {})
    }

    /// Generates one image per prompt in `steps` (`K`) model calls at guidance scale `g`
    /// (`w = g − 1`), calling `progress(k, K)` after the `k`-th call (`k = 1..=K`).
    ///
    /// # Shapes
    /// - injected noise: `initial` `[B, C, h, w]` with `B = prompts.len()`, `K − 1` steps alike
    /// - output: `[B, 3, h·f, w·f]` in `[0, 1]` (`f` = [`LcmPipeline::vae_scale_factor`])
    pub fn generate_with_progress(
        &self,
        prompts: &[&str],
        steps: usize,
        guidance: f32,
        noise: NoiseSource,
        progress: impl FnMut(usize, usize) + Send,
    ) -> Result<Tensor<4>, PipelineError> {
        // The options first (step count, a finite guidance scale): the noise is sized by them.
        let options: SamplerOptions<Tensor<3>> =
            SamplerOptions::new(steps).with_guidance(Guidance::embedded(guidance));
        self.sampler().timesteps(&options)?;
        let noise = match noise {
            NoiseSource::Seed(seed) => {
                let shape = self.latent_shape(prompts.len());
                SamplerNoise::from_seed(shape, steps, seed, &self.device)
            }
            NoiseSource::Injected(noise) => noise,
        };
        let [batch, channels, _, _] = noise.initial.dims();
        if batch != prompts.len() || channels != self.latent_channels {
            return Err(PipelineError::BadNoise(format!(
                "latents {:?} for {} prompts, expected [{}, {}, h, w]",
                noise.initial.dims(),
                prompts.len(),
                prompts.len(),
                self.latent_channels
            )));
        }
        let latent = self.denoise(prompts, steps, guidance, noise, progress)?;
        Ok(self.vae.decode_to_image(latent))
    }

    /// The sampler's final latent `x̂_0` (before the VAE) for `prompts`.
    fn denoise(
        &self,
        prompts: &[&str],
        steps: usize,
        guidance: f32,
        noise: SamplerNoise<4>,
        progress: impl FnMut(usize, usize) + Send,
    ) -> Result<Tensor<4>, PipelineError> {
        let sampler = self.sampler();
        let options = SamplerOptions::new(steps).with_guidance(Guidance::embedded(guidance));
        let total = sampler.timesteps(&options)?.len();
        noise.check(total)?;
        let text = self.encode_prompts(prompts)?;
        let model = WithProgress {
            unet: &self.unet,
            calls: AtomicUsize::new(0),
            total,
            progress: Mutex::new(progress),
        };
        let trajectory = sampler.sample(&model, &text, noise, &options)?;
        Ok(trajectory.final_latent)
    }
}

/// The parts of an [`LcmPipeline`] a training run uses ([`LcmPipeline::into_training_parts`]).
#[derive(Debug)]
pub struct TrainingParts {
    /// The UNet, to carry the adapters.
    pub unet: UNet2DConditionModel,
    /// The VAE, whose decoder turns final latents into images for the reward.
    pub vae: AutoencoderKL,
    /// The frozen tokenizer + text encoder.
    pub text_encoder: crate::TextEncoder,
    /// The sampler of the pipeline's schedule.
    pub sampler: Sampler,
    /// One sample's latent shape, `[1, C, h, w]`.
    pub latent_shape: [usize; 4],
}

/// The UNet with a callback after each model call (the sampler makes one call per step).
struct WithProgress<'a, F> {
    unet: &'a UNet2DConditionModel,
    calls: AtomicUsize,
    total: usize,
    progress: Mutex<F>,
}

impl<F: FnMut(usize, usize) + Send> ConsistencyModel<4> for WithProgress<'_, F> {
    type Conditioning = Tensor<3>;

    fn predict(&self, input: &ModelInput<4>, conditioning: &Tensor<3>) -> Prediction<4> {
        let prediction = self.unet.predict(input, conditioning);
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut progress) = self.progress.lock() {
            progress(call, self.total);
        }
        prediction
    }

    fn predict_base(&self, input: &ModelInput<4>, conditioning: &Tensor<3>) -> Prediction<4> {
        self.unet.predict_base(input, conditioning)
    }
}
