//! Writing the world's diffusion models as diffusers pipeline folders: the distilled LCM as a
//! `LatentConsistencyModelPipeline` (`LCMScheduler`) and the teacher as a `StableDiffusionPipeline`
//! (`DDIMScheduler`, for the diffusion baselines). Each folder holds `model_index.json`, `unet/`
//! (diffusers config and safetensors), `vae/` (the world VAE), `text_encoder/` (the world CLIP's
//! text tower as a transformers `CLIPTextModel`), `tokenizer/` and `scheduler/`.

use std::collections::HashMap;
use std::path::Path;

use rocm_models::UNet2DConditionModel;
use rocm_models::UNet2DConditionModelConfig;
use rocm_models::unet_2d_condition_config::{DownBlockType, UpBlockType};
use rocm_sampler::{DdimSchedulerConfig, LcmSchedulerConfig};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use crate::Error;
use crate::export::{Storage, module_bytes};

/// The diffusers version the folders are written for.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// The tokenizer files copied from the CLIP folder.
pub const TOKENIZER_FILES: [&str; 4] = [
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// Which pipeline a folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineKind {
    /// `LatentConsistencyModelPipeline` with an `LCMScheduler`.
    Lcm,
    /// `StableDiffusionPipeline` with a `DDIMScheduler` (Stable Diffusion 1.x's settings).
    StableDiffusionDdim,
}

/// The diffusers key of a Burn parameter path of [`UNet2DConditionModel`]: enum variant segments
/// (`proj_in.Conv.weight`) dropped and `ff.net_0`/`ff.net_2` written `ff.net.0`/`ff.net.2`.
pub fn unet_key(burn_key: &str) -> String {
    burn_key
        .split('.')
        .filter(|s| !matches!(*s, "Conv" | "Linear"))
        .map(|s| match s {
            "net_0" => "net.0",
            "net_2" => "net.2",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Writes `unet`'s weights under diffusers' key names (what
/// [`UNet2DConditionModel::load_safetensors`] and diffusers read).
pub fn save_unet(unet: &UNet2DConditionModel, storage: Storage, path: &Path) -> Result<(), Error> {
    let bytes = module_bytes(unet, &[], storage, &unet_key, path)?;
    crate::io::write(path, &bytes)
}

/// diffusers' `unet/config.json` of `config`.
pub fn unet_config_json(config: &UNet2DConditionModelConfig) -> serde_json::Value {
    let down: Vec<&str> = config
        .down_block_types
        .iter()
        .map(|t| match t {
            DownBlockType::CrossAttnDownBlock2D => "CrossAttnDownBlock2D",
            DownBlockType::DownBlock2D => "DownBlock2D",
        })
        .collect();
    let up: Vec<&str> = config
        .up_block_types
        .iter()
        .map(|t| match t {
            UpBlockType::CrossAttnUpBlock2D => "CrossAttnUpBlock2D",
            UpBlockType::UpBlock2D => "UpBlock2D",
        })
        .collect();
    serde_json::json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        // diffusers reads the head count from `attention_head_dim` (SD 1.x's naming).
        "attention_head_dim": config.num_attention_heads,
        "block_out_channels": config.block_out_channels,
        "center_input_sample": false,
        "cross_attention_dim": config.cross_attention_dim,
        "down_block_types": down,
        "downsample_padding": 1,
        "flip_sin_to_cos": config.flip_sin_to_cos,
        "freq_shift": config.freq_shift,
        "in_channels": config.in_channels,
        "layers_per_block": config.layers_per_block,
        "mid_block_scale_factor": config.mid_block_scale_factor,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": config.norm_eps,
        "norm_num_groups": config.norm_num_groups,
        "out_channels": config.out_channels,
        "sample_size": config.sample_size,
        "time_cond_proj_dim": config.time_cond_proj_dim,
        "transformer_layers_per_block": config.transformer_layers_per_block,
        "up_block_types": up,
        "use_linear_projection": config.use_linear_projection,
    })
}

/// The `scheduler/scheduler_config.json` of a pipeline kind: diffusers' `LCMScheduler` defaults
/// (SD 1.5's betas, 50 original steps), or SD 1.x's `DDIMScheduler` settings.
pub fn scheduler_json(kind: PipelineKind) -> Result<serde_json::Value, Error> {
    let (class, mut value) = match kind {
        PipelineKind::Lcm => (
            "LCMScheduler",
            serde_json::to_value(LcmSchedulerConfig::default()),
        ),
        PipelineKind::StableDiffusionDdim => (
            "DDIMScheduler",
            serde_json::to_value(DdimSchedulerConfig::sd15()),
        ),
    };
    if let Ok(serde_json::Value::Object(map)) = &mut value {
        map.insert("_class_name".into(), class.into());
        map.insert("_diffusers_version".into(), DIFFUSERS_VERSION.into());
    }
    value.map_err(|source| Error::Json {
        path: "scheduler/scheduler_config.json".into(),
        source,
    })
}

/// `model_index.json` of a pipeline kind.
pub fn model_index(kind: PipelineKind) -> serde_json::Value {
    let (class, scheduler) = match kind {
        PipelineKind::Lcm => ("LatentConsistencyModelPipeline", "LCMScheduler"),
        PipelineKind::StableDiffusionDdim => ("StableDiffusionPipeline", "DDIMScheduler"),
    };
    serde_json::json!({
        "_class_name": class,
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
}

/// Writes the pipeline folder `dir`: `unet` (f16), the VAE folder `vae_dir` copied, the text
/// tower of the CLIP folder `clip_dir` and its tokenizer, the scheduler and `model_index.json`.
pub fn export(
    kind: PipelineKind,
    unet: &UNet2DConditionModel,
    config: &UNet2DConditionModelConfig,
    vae_dir: &Path,
    clip_dir: &Path,
    dir: &Path,
) -> Result<(), Error> {
    crate::io::write_json(&dir.join("model_index.json"), &model_index(kind))?;
    crate::io::write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &scheduler_json(kind)?,
    )?;
    crate::io::write_json(&dir.join("unet/config.json"), &unet_config_json(config))?;
    save_unet(
        unet,
        Storage::F16,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    )?;
    for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
        copy(&vae_dir.join(file), &dir.join("vae").join(file))?;
    }
    for file in TOKENIZER_FILES {
        copy(&clip_dir.join(file), &dir.join("tokenizer").join(file))?;
    }
    write_text_encoder(clip_dir, &dir.join("text_encoder"))
}

fn copy(from: &Path, to: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(from).map_err(|source| Error::Io {
        path: from.to_path_buf(),
        source,
    })?;
    crate::io::write(to, &bytes)
}

/// Writes the text tower of the `CLIPModel` folder `clip_dir` as a transformers `CLIPTextModel`
/// folder: `config.json` (the `text_config`) and `model.safetensors` (the `text_model.*` tensors,
/// bytes unchanged).
pub fn write_text_encoder(clip_dir: &Path, dir: &Path) -> Result<(), Error> {
    let config_path = clip_dir.join("config.json");
    let clip = crate::io::read_json(&config_path)?;
    let mut text = clip
        .get("text_config")
        .cloned()
        .ok_or_else(|| Error::Setting {
            name: format!("{}: text_config", config_path.display()),
            value: "missing".into(),
            reason: "a CLIPModel config has a text_config".into(),
        })?;
    if let serde_json::Value::Object(map) = &mut text {
        map.insert("architectures".into(), serde_json::json!(["CLIPTextModel"]));
        map.insert("model_type".into(), "clip_text_model".into());
        if let Some(dtype) = clip.get("torch_dtype") {
            map.insert("torch_dtype".into(), dtype.clone());
        }
    }
    crate::io::write_json(&dir.join("config.json"), &text)?;
    let path = clip_dir.join("model.safetensors");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let err = |message: String| Error::Weights {
        path: path.clone(),
        message,
    };
    let parsed = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let mut views = Vec::new();
    for (key, view) in parsed.tensors() {
        if key.starts_with("text_model.") {
            let view = TensorView::new(view.dtype(), view.shape().to_vec(), view.data())
                .map_err(|e| err(format!("tensor `{key}`: {e}")))?;
            views.push((key, view));
        }
    }
    if views.is_empty() {
        return Err(err("no `text_model.*` tensors".into()));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let out = dir.join("model.safetensors");
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights {
        path: out.clone(),
        message: e.to_string(),
    })?;
    crate::io::write(&out, &bytes)
}
