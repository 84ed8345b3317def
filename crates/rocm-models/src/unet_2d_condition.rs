//! diffusers `models/unets/unet_2d_condition.py`: `UNet2DConditionModel` (SD 1.5 family, with
//! LCM's guidance embedding), its weight loading and its [`ConsistencyModel`] implementation.
//!
//! # Example
//! ```
//! use burn::prelude::*;
//! use rocm_models::UNet2DConditionModelConfig;
//! use rocm_sampler::{ConsistencyModel, ModelInput, Parameterization};
//!
//! let device = Device::flex();
//! // Real use: UNet2DConditionModel::from_pretrained("LCM_Dreamshaper_v7/unet", &device)?
//! let unet = UNet2DConditionModelConfig::tiny().init(&device);
//! let input = ModelInput {
//!     latent: Tensor::zeros([1, 4, 8, 8], &device),
//!     timestep: Tensor::from_floats([999.0], &device),
//!     guidance: Some(Tensor::from_floats([7.0], &device)), // w, embedded for `cond_proj`
//! };
//! let text = Tensor::<3>::zeros([1, 77, 32], &device); // CLIP last_hidden_state
//! let eps = unet.predict(&input, &text);
//! assert_eq!(eps.output.dims(), [1, 4, 8, 8]);
//! assert_eq!(eps.parameterization, Parameterization::Epsilon);
//! ```

use std::path::Path;

use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use rocm_lora::{Conv2d, Conv2dConfig, impl_lora_container, with_adapters_disabled};
use rocm_sampler::{
    ConsistencyModel, ModelInput, Parameterization, Prediction, guidance_scale_embedding,
};

use crate::Error;
use crate::embeddings::{TimestepEmbedding, TimestepEmbeddingConfig, timestep_embedding};
use crate::load::{DIFFUSERS_REMAP, load_safetensors_strict};
use crate::unet_2d_blocks::{UNetBlockConfig, UNetDownBlock, UNetMidBlock2DCrossAttn, UNetUpBlock};
use crate::unet_2d_condition_config::{DownBlockType, UNet2DConditionModelConfig, UpBlockType};

/// File names tried, in order, by [`UNet2DConditionModel::from_pretrained`] and
/// [`AutoencoderKL::from_pretrained`](crate::AutoencoderKL::from_pretrained).
pub const DIFFUSERS_WEIGHT_FILES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

impl UNet2DConditionModelConfig {
    /// Builds the UNet with random weights (diffusers' module tree and names).
    pub fn init(&self, device: &Device) -> UNet2DConditionModel {
        let ch = &self.block_out_channels;
        let levels = ch.len();
        let temb = 4 * ch[0];
        let block = |cin: usize, cout: usize, layers: usize| {
            UNetBlockConfig::new(cin, cout, temb, layers)
                .with_groups(self.norm_num_groups)
                .with_eps(self.norm_eps)
                .with_cross_attention_dim(self.cross_attention_dim)
                .with_use_linear_projection(self.use_linear_projection)
                .with_transformer_layers_per_block(self.transformer_layers_per_block)
        };
        let down_blocks = (0..levels)
            .map(|i| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                let cross = self.down_block_types[i] == DownBlockType::CrossAttnDownBlock2D;
                block(cin, ch[i], self.layers_per_block)
                    .with_add_sample(i + 1 < levels)
                    .with_num_attention_heads(cross.then_some(self.num_attention_heads[i]))
                    .init_down(device)
            })
            .collect();
        let mid_block = block(ch[levels - 1], ch[levels - 1], 1)
            .with_num_attention_heads(Some(self.num_attention_heads[levels - 1]))
            .with_output_scale_factor(self.mid_block_scale_factor)
            .init_mid(device);
        let up_blocks = (0..levels)
            .map(|i| {
                let level = levels - 1 - i;
                let prev = ch[(level + 1).min(levels - 1)];
                let cin = ch[level.saturating_sub(1)];
                let cross = self.up_block_types[i] == UpBlockType::CrossAttnUpBlock2D;
                block(cin, ch[level], self.layers_per_block + 1)
                    .with_prev_output_channel(prev)
                    .with_add_sample(i + 1 < levels)
                    .with_num_attention_heads(cross.then_some(self.num_attention_heads[level]))
                    .init_up(device)
            })
            .collect();
        let conv3 = |a, b| {
            Conv2dConfig::new([a, b], [3, 3])
                .with_padding([1, 1])
                .init(device)
        };
        UNet2DConditionModel {
            conv_in: conv3(self.in_channels, ch[0]),
            time_embedding: TimestepEmbeddingConfig::new(ch[0], temb)
                .with_cond_proj_dim(self.time_cond_proj_dim)
                .init(device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNormConfig::new(self.norm_num_groups, ch[0])
                .with_epsilon(self.norm_eps)
                .init(device),
            conv_out: conv3(ch[0], self.out_channels),
            time_proj_dim: ch[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            time_cond_proj_dim: self.time_cond_proj_dim.unwrap_or(0),
            prediction_type: self.prediction_type,
        }
    }
}

/// The conditional denoising UNet of Stable Diffusion (Rombach et al. 2022), as diffusers'
/// `UNet2DConditionModel`, with LCM's guidance embedding (Luo et al. 2023):
///
/// ```text
/// emb = time_embedding(sinusoid(t) + cond_proj(guidance_embedding(w)))
/// h = conv_in(x) → down_blocks (skips) → mid_block → up_blocks (concat skips)
/// out = conv_out(silu(conv_norm_out(h)))
/// ```
/// Field names are diffusers' attribute names, so Burn's parameter paths are the weight keys.
///
/// # Shapes
/// - `sample`: `[B, in_channels, H, W]` (`H`, `W` divisible by `2^(levels−1)`)
/// - `timesteps`: `[B]`; `encoder_hidden_states`: `[B, M, cross_attention_dim]`
/// - `timestep_cond`: `[B, time_cond_proj_dim]`
/// - output: `[B, out_channels, H, W]`
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// Timestep (and guidance) embedding MLP.
    pub time_embedding: TimestepEmbedding,
    /// Down path.
    pub down_blocks: Vec<UNetDownBlock>,
    /// Bottleneck.
    pub mid_block: UNetMidBlock2DCrossAttn,
    /// Up path.
    pub up_blocks: Vec<UNetUpBlock>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution.
    pub conv_out: Conv2d,
    /// Width of the timestep sinusoid (`block_out_channels[0]`).
    pub time_proj_dim: usize,
    /// `[cos, sin]` order.
    pub flip_sin_to_cos: bool,
    /// The sinusoid's frequency shift.
    pub freq_shift: f64,
    /// Width of the guidance embedding, 0 when the model has none.
    pub time_cond_proj_dim: usize,
    /// What the output predicts.
    #[module(skip)]
    pub prediction_type: Parameterization,
}
impl_lora_container!(UNet2DConditionModel {
    conv_in,
    time_embedding,
    down_blocks,
    mid_block,
    up_blocks,
    conv_out,
});

impl UNet2DConditionModel {
    /// The UNet of a diffusers folder (`<model>/unet`): `config.json` and
    /// `diffusion_pytorch_model.safetensors` (or its `.fp16.` variant, cast to f32). The
    /// parameterization is the sibling `../scheduler/scheduler_config.json`'s `prediction_type`
    /// when that file exists, else the config's (epsilon by default).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let mut config = UNet2DConditionModelConfig::from_file(dir.join("config.json"))?;
        if let Some(prediction_type) = scheduler_prediction_type(dir)? {
            config.prediction_type = prediction_type;
        }
        let mut model = config.init(device);
        model.load_safetensors(crate::load::find_weights(dir)?)?;
        Ok(model)
    }

    /// Loads diffusers weights by name (fp16 files are cast to f32). Strict: missing keys, unused
    /// keys and shape mismatches are an [`Error::WeightsMismatch`].
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        load_safetensors_strict(self, path.as_ref(), &DIFFUSERS_REMAP)
    }

    /// The network output, diffusers' `unet(sample, t, encoder_hidden_states, timestep_cond)`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: Tensor<1>,
        encoder_hidden_states: Tensor<3>,
        timestep_cond: Option<Tensor<2>>,
    ) -> Tensor<4> {
        let t_emb = timestep_embedding(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
        );
        let emb = self.time_embedding.forward(t_emb, timestep_cond);
        let ehs = encoder_hidden_states;
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(x, &emb, &ehs, &mut skips);
        }
        x = self.mid_block.forward(x, &emb, &ehs);
        for block in &self.up_blocks {
            x = block.forward(x, &emb, &ehs, &mut skips);
        }
        self.conv_out
            .forward(rocm_kernels::group_norm_silu(&self.conv_norm_out, x))
    }

    /// The guidance-scale embedding `[B, time_cond_proj_dim]` of `w`, or `None` when the model
    /// has no `cond_proj` or no `w` is given.
    pub fn timestep_cond(&self, guidance: Option<&Tensor<1>>) -> Option<Tensor<2>> {
        let w = guidance?;
        (self.time_cond_proj_dim > 0)
            .then(|| guidance_scale_embedding(w.clone(), self.time_cond_proj_dim))
    }
}

impl ConsistencyModel<4> for UNet2DConditionModel {
    /// Text embeddings `[B, M, cross_attention_dim]` (CLIP's `last_hidden_state`).
    type Conditioning = Tensor<3>;

    fn predict(&self, input: &ModelInput<4>, conditioning: &Tensor<3>) -> Prediction<4> {
        let cond = self.timestep_cond(input.guidance.as_ref());
        let output = self.forward(
            input.latent.clone(),
            input.timestep.clone(),
            conditioning.clone(),
            cond,
        );
        Prediction {
            output,
            parameterization: self.prediction_type,
        }
    }

    fn predict_base(&self, input: &ModelInput<4>, conditioning: &Tensor<3>) -> Prediction<4> {
        with_adapters_disabled(|| self.predict(input, conditioning))
    }
}

/// `prediction_type` of `<dir>/../scheduler/scheduler_config.json`, if that file exists.
fn scheduler_prediction_type(unet_dir: &Path) -> Result<Option<Parameterization>, Error> {
    let Some(path) = unet_dir
        .parent()
        .map(|p| p.join("scheduler").join("scheduler_config.json"))
        .filter(|p| p.is_file())
    else {
        return Ok(None);
    };
    #[derive(serde::Deserialize)]
    struct SchedulerJson {
        #[serde(default)]
        prediction_type: Option<Parameterization>,
    }
    let parsed: SchedulerJson = crate::load::read_json(&path)?;
    Ok(parsed.prediction_type)
}
