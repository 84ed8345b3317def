//! Configuration of [`UNet2DConditionModel`](crate::UNet2DConditionModel): the diffusers
//! `unet/config.json` mirror, our Burn config, and presets.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_sampler::Parameterization;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::bounds::{Fields, MAX_LATENT_SIZE, MAX_LAYERS, MAX_LEVELS, MAX_WIDTH};
use crate::load::read_to_string;

/// A down block type of the SD 1.5 family (diffusers' `down_block_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    /// Resnets, each followed by a cross-attention transformer.
    CrossAttnDownBlock2D,
    /// Resnets only.
    DownBlock2D,
}

/// An up block type of the SD 1.5 family (diffusers' `up_block_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    /// Resnets, each followed by a cross-attention transformer.
    CrossAttnUpBlock2D,
    /// Resnets only.
    UpBlock2D,
}

/// A JSON value that is a number or a per-block list (`attention_head_dim`, `num_attention_heads`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrPerBlock<T> {
    /// One value for every block.
    One(T),
    /// One value per down block.
    PerBlock(Vec<T>),
}

/// The fields of diffusers' `unet/config.json` that this port reads, with upstream names and
/// defaults (`UNet2DConditionModel.__init__`). Unknown fields are ignored.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct UNet2DConditionJson {
    pub sample_size: Option<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: serde_json::Value,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: serde_json::Value,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub cross_attention_dim: serde_json::Value,
    pub transformer_layers_per_block: serde_json::Value,
    pub attention_head_dim: OneOrPerBlock<usize>,
    pub num_attention_heads: Option<OneOrPerBlock<usize>>,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub encoder_hid_dim: Option<usize>,
    pub time_embedding_type: String,
    pub time_cond_proj_dim: Option<usize>,
    pub resnet_time_scale_shift: String,
    pub resnet_out_scale_factor: f64,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub dual_cross_attention: bool,
    /// Not in diffusers' UNet config: the scheduler's `prediction_type`, if merged in.
    pub prediction_type: Option<Parameterization>,
}

impl Default for UNet2DConditionJson {
    fn default() -> Self {
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            only_cross_attention: serde_json::Value::Bool(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2.into(),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: 1280.into(),
            transformer_layers_per_block: 1.into(),
            attention_head_dim: OneOrPerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            encoder_hid_dim: None,
            time_embedding_type: "positional".into(),
            time_cond_proj_dim: None,
            resnet_time_scale_shift: "default".into(),
            resnet_out_scale_factor: 1.0,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            dual_cross_attention: false,
            prediction_type: None,
        }
    }
}

/// Configuration of a [`UNet2DConditionModel`](crate::UNet2DConditionModel) (SD 1.5 family).
#[derive(Config, Debug)]
pub struct UNet2DConditionModelConfig {
    /// Channels per resolution level (`block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Down block types, one per level.
    pub down_block_types: Vec<DownBlockType>,
    /// Up block types, one per level (deepest first).
    pub up_block_types: Vec<UpBlockType>,
    /// Heads per down block (diffusers' `num_attention_heads`, else `attention_head_dim`, which
    /// in SD 1.5 configs is the number of heads); the up path uses the reversed list.
    pub num_attention_heads: Vec<usize>,
    /// Width of the text embeddings.
    pub cross_attention_dim: usize,
    /// Latent channels in.
    #[config(default = 4)]
    pub in_channels: usize,
    /// Latent channels out.
    #[config(default = 4)]
    pub out_channels: usize,
    /// Resnets per down block (`+ 1` per up block).
    #[config(default = 2)]
    pub layers_per_block: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of resnets and `conv_norm_out`.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Linear instead of 1×1-conv transformer projections.
    #[config(default = false)]
    pub use_linear_projection: bool,
    /// `[cos, sin]` order of the timestep sinusoid.
    #[config(default = true)]
    pub flip_sin_to_cos: bool,
    /// The sinusoid's `downscale_freq_shift`.
    #[config(default = 0.0)]
    pub freq_shift: f64,
    /// Width of LCM's guidance embedding (`cond_proj`); `None` for none.
    #[config(default = "None")]
    pub time_cond_proj_dim: Option<usize>,
    /// `BasicTransformerBlock`s per transformer.
    #[config(default = 1)]
    pub transformer_layers_per_block: usize,
    /// `mid_block_scale_factor`.
    #[config(default = 1.0)]
    pub mid_block_scale_factor: f64,
    /// What the output predicts (the scheduler's `prediction_type`).
    #[config(default = "Parameterization::Epsilon")]
    pub prediction_type: Parameterization,
    /// Native latent size (`sample_size`), informational.
    #[config(default = 64)]
    pub sample_size: usize,
}

impl UNet2DConditionModelConfig {
    /// Stable Diffusion 1.5 (`runwayml/stable-diffusion-v1-5`, docs/models.md §2).
    pub fn sd15() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self::new(
            vec![320, 640, 1280, 1280],
            vec![
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                DownBlock2D,
            ],
            vec![
                UpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
            ],
            vec![8; 4],
            768,
        )
    }

    /// LCM Dreamshaper v7: SD 1.5 plus `time_cond_proj_dim = 256`, `sample_size = 96`.
    pub fn lcm_dreamshaper_v7() -> Self {
        Self::sd15()
            .with_time_cond_proj_dim(Some(256))
            .with_sample_size(96)
    }

    /// The tiny test model of `tests/fixtures/scripts/models_unet_vae.py`: channels (32, 64),
    /// one resnet per down block, 8 heads, text width 32, 8 groups, guidance width 32.
    pub fn tiny() -> Self {
        Self::new(
            vec![32, 64],
            vec![
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            vec![UpBlockType::UpBlock2D, UpBlockType::CrossAttnUpBlock2D],
            vec![8, 8],
            32,
        )
        .with_layers_per_block(1)
        .with_norm_num_groups(8)
        .with_time_cond_proj_dim(Some(32))
        .with_sample_size(8)
    }

    /// Reads a diffusers `unet/config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::parse(&read_to_string(path)?, path)
    }

    /// Parses the text of a diffusers `unet/config.json`.
    pub fn from_json_str(json: &str) -> Result<Self, Error> {
        Self::parse(json, Path::new("<string>"))
    }

    fn parse(json: &str, path: &Path) -> Result<Self, Error> {
        let hf: UNet2DConditionJson = crate::load::parse_json(json, path)?;
        Self::from_hf(&hf, path)
    }

    /// Converts the upstream config, refusing what this port does not implement.
    pub fn from_hf(hf: &UNet2DConditionJson, path: &Path) -> Result<Self, Error> {
        let unsupported =
            |field: &str, value: &dyn std::fmt::Debug, reason: &str| Error::UnsupportedConfig {
                path: PathBuf::from(path),
                field: field.into(),
                value: format!("{value:?}"),
                reason: reason.into(),
            };
        let levels = hf.block_out_channels.len();
        let check = |ok: bool, field: &str, value: &dyn std::fmt::Debug, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(unsupported(field, value, reason))
            }
        };
        // Sizes first: everything below and the model's allocations are computed from them.
        let fields = Fields::new(path);
        fields.sizes(
            "block_out_channels",
            &hf.block_out_channels,
            MAX_WIDTH,
            MAX_LEVELS,
        )?;
        let sample_size =
            fields.size("sample_size", hf.sample_size.unwrap_or(64), MAX_LATENT_SIZE)?;
        fields.size("in_channels", hf.in_channels, MAX_WIDTH)?;
        fields.size("out_channels", hf.out_channels, MAX_WIDTH)?;
        if let Some(d) = hf.time_cond_proj_dim {
            fields.size("time_cond_proj_dim", d, MAX_WIDTH)?;
        }
        let groups = hf.norm_num_groups.unwrap_or(32);
        fields.divides(
            "norm_num_groups",
            groups,
            &hf.block_out_channels,
            "block_out_channels",
        )?;
        fields.positive("norm_eps", hf.norm_eps)?;
        fields.finite("freq_shift", hf.freq_shift)?;
        fields.finite("mid_block_scale_factor", hf.mid_block_scale_factor)?;
        check(hf.act_fn == "silu", "act_fn", &hf.act_fn, "only silu")?;
        check(
            hf.time_embedding_type == "positional",
            "time_embedding_type",
            &hf.time_embedding_type,
            "only positional",
        )?;
        check(
            hf.resnet_time_scale_shift == "default",
            "resnet_time_scale_shift",
            &hf.resnet_time_scale_shift,
            "only default",
        )?;
        check(
            hf.class_embed_type.is_none(),
            "class_embed_type",
            &hf.class_embed_type,
            "only null",
        )?;
        check(
            hf.addition_embed_type.is_none(),
            "addition_embed_type",
            &hf.addition_embed_type,
            "only null (no SDXL)",
        )?;
        check(
            hf.encoder_hid_dim.is_none(),
            "encoder_hid_dim",
            &hf.encoder_hid_dim,
            "only null",
        )?;
        check(
            !hf.center_input_sample,
            "center_input_sample",
            &true,
            "only false",
        )?;
        check(
            !hf.dual_cross_attention,
            "dual_cross_attention",
            &true,
            "only false",
        )?;
        check(
            hf.conv_in_kernel == 3 && hf.conv_out_kernel == 3,
            "conv_in_kernel",
            &hf.conv_in_kernel,
            "only 3",
        )?;
        check(
            hf.downsample_padding == 1,
            "downsample_padding",
            &hf.downsample_padding,
            "only 1",
        )?;
        check(
            hf.resnet_out_scale_factor == 1.0,
            "resnet_out_scale_factor",
            &hf.resnet_out_scale_factor,
            "only 1.0",
        )?;
        check(
            hf.only_cross_attention == serde_json::Value::Bool(false),
            "only_cross_attention",
            &hf.only_cross_attention,
            "only false",
        )?;
        check(
            matches!(
                hf.mid_block_type.as_deref(),
                Some("UNetMidBlock2DCrossAttn")
            ),
            "mid_block_type",
            &hf.mid_block_type,
            "only UNetMidBlock2DCrossAttn",
        )?;
        let as_usize = |field: &str, v: &serde_json::Value| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| unsupported(field, v, "a single integer"))
        };
        let layers_per_block = fields.size(
            "layers_per_block",
            as_usize("layers_per_block", &hf.layers_per_block)?,
            MAX_LAYERS,
        )?;
        let cross_attention_dim = fields.size(
            "cross_attention_dim",
            as_usize("cross_attention_dim", &hf.cross_attention_dim)?,
            MAX_WIDTH,
        )?;
        let transformer_layers = fields.size(
            "transformer_layers_per_block",
            as_usize(
                "transformer_layers_per_block",
                &hf.transformer_layers_per_block,
            )?,
            MAX_LAYERS,
        )?;
        let down = hf
            .down_block_types
            .iter()
            .map(|t| match t.as_str() {
                "CrossAttnDownBlock2D" => Ok(DownBlockType::CrossAttnDownBlock2D),
                "DownBlock2D" => Ok(DownBlockType::DownBlock2D),
                _ => Err(unsupported(
                    "down_block_types",
                    t,
                    "CrossAttnDownBlock2D or DownBlock2D",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let up = hf
            .up_block_types
            .iter()
            .map(|t| match t.as_str() {
                "CrossAttnUpBlock2D" => Ok(UpBlockType::CrossAttnUpBlock2D),
                "UpBlock2D" => Ok(UpBlockType::UpBlock2D),
                _ => Err(unsupported(
                    "up_block_types",
                    t,
                    "CrossAttnUpBlock2D or UpBlock2D",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        check(
            down.len() == levels,
            "down_block_types",
            &hf.down_block_types,
            "one per block_out_channels",
        )?;
        check(
            up.len() == levels,
            "up_block_types",
            &hf.up_block_types,
            "one per block_out_channels",
        )?;
        // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim`.
        let heads = hf
            .num_attention_heads
            .clone()
            .unwrap_or_else(|| hf.attention_head_dim.clone());
        let heads = match heads {
            OneOrPerBlock::One(h) => vec![h; levels],
            OneOrPerBlock::PerBlock(v) => v,
        };
        check(
            heads.len() == levels,
            "num_attention_heads",
            &heads,
            "one per block_out_channels",
        )?;
        for (&h, &c) in heads.iter().zip(&hf.block_out_channels) {
            check(
                h > 0 && c % h == 0,
                "num_attention_heads",
                &heads,
                "must divide block_out_channels",
            )?;
        }
        Ok(Self::new(
            hf.block_out_channels.clone(),
            down,
            up,
            heads,
            cross_attention_dim,
        )
        .with_in_channels(hf.in_channels)
        .with_out_channels(hf.out_channels)
        .with_layers_per_block(layers_per_block)
        .with_norm_num_groups(groups)
        .with_norm_eps(hf.norm_eps)
        .with_use_linear_projection(hf.use_linear_projection)
        .with_flip_sin_to_cos(hf.flip_sin_to_cos)
        .with_freq_shift(hf.freq_shift)
        .with_time_cond_proj_dim(hf.time_cond_proj_dim)
        .with_transformer_layers_per_block(transformer_layers)
        .with_mid_block_scale_factor(hf.mid_block_scale_factor)
        .with_prediction_type(hf.prediction_type.unwrap_or_default())
        .with_sample_size(sample_size))
    }
}
