//! diffusers `models/autoencoders/autoencoder_kl.py`: `AutoencoderKL` (the Stable Diffusion VAE).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_lora::{Conv2d, Conv2dConfig, impl_lora_container};
use serde::Deserialize;

use crate::Error;
use crate::bounds::{Fields, MAX_LAYERS, MAX_LEVELS, MAX_SAMPLE_SIZE, MAX_WIDTH};
use crate::load::{DIFFUSERS_REMAP, find_weights, load_safetensors_strict, read_to_string};
use crate::vae::{Decoder, Encoder};

/// The fields of diffusers' `vae/config.json` that this port reads (upstream names/defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct AutoencoderKLJson {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLJson {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

/// Configuration of an [`AutoencoderKL`].
#[derive(Config, Debug)]
pub struct AutoencoderKLConfig {
    /// Channels per resolution level.
    pub block_out_channels: Vec<usize>,
    /// Image channels in.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Image channels out.
    #[config(default = 3)]
    pub out_channels: usize,
    /// Latent channels.
    #[config(default = 4)]
    pub latent_channels: usize,
    /// Resnets per encoder level (`+ 1` per decoder level).
    #[config(default = 2)]
    pub layers_per_block: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding (the pipeline divides before decoding).
    #[config(default = 0.18215)]
    pub scaling_factor: f64,
    /// Whether `quant_conv` exists.
    #[config(default = true)]
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` exists.
    #[config(default = true)]
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have attention.
    #[config(default = true)]
    pub mid_block_add_attention: bool,
}

impl AutoencoderKLConfig {
    /// The Stable Diffusion 1.5 / LCM Dreamshaper v7 VAE (docs/models.md §3).
    pub fn sd15() -> Self {
        Self::new(vec![128, 256, 512, 512])
    }

    /// The tiny test VAE of `tests/fixtures/scripts/models_unet_vae.py`.
    pub fn tiny() -> Self {
        Self::new(vec![16, 32])
            .with_layers_per_block(1)
            .with_norm_num_groups(8)
    }

    /// Reads a diffusers `vae/config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::parse(&read_to_string(path)?, path)
    }

    /// Parses the text of a diffusers `vae/config.json`.
    pub fn from_json_str(json: &str) -> Result<Self, Error> {
        Self::parse(json, Path::new("<string>"))
    }

    fn parse(json: &str, path: &Path) -> Result<Self, Error> {
        let hf: AutoencoderKLJson = crate::load::parse_json(json, path)?;
        let bad = |field: &str, value: String, reason: &str| Error::UnsupportedConfig {
            path: PathBuf::from(path),
            field: field.into(),
            value,
            reason: reason.into(),
        };
        let levels = hf.block_out_channels.len();
        // Sizes first: the model's allocations are computed from them.
        let fields = Fields::new(path);
        fields.sizes(
            "block_out_channels",
            &hf.block_out_channels,
            MAX_WIDTH,
            MAX_LEVELS,
        )?;
        fields.size("in_channels", hf.in_channels, MAX_WIDTH)?;
        fields.size("out_channels", hf.out_channels, MAX_WIDTH)?;
        fields.size("latent_channels", hf.latent_channels, MAX_WIDTH)?;
        fields.size("layers_per_block", hf.layers_per_block, MAX_LAYERS)?;
        fields.size("sample_size", hf.sample_size, MAX_SAMPLE_SIZE)?;
        fields.divides(
            "norm_num_groups",
            hf.norm_num_groups,
            &hf.block_out_channels,
            "block_out_channels",
        )?;
        fields.positive("scaling_factor", hf.scaling_factor)?;
        if hf.act_fn != "silu" {
            return Err(bad("act_fn", hf.act_fn.clone(), "only silu"));
        }
        let all = |v: &[String], name: &str| v.len() == levels && v.iter().all(|t| t == name);
        if !all(&hf.down_block_types, "DownEncoderBlock2D") {
            let v = format!("{:?}", hf.down_block_types);
            return Err(bad("down_block_types", v, "DownEncoderBlock2D per level"));
        }
        if !all(&hf.up_block_types, "UpDecoderBlock2D") {
            let v = format!("{:?}", hf.up_block_types);
            return Err(bad("up_block_types", v, "UpDecoderBlock2D per level"));
        }
        if hf.shift_factor.is_some_and(|s| s != 0.0) {
            return Err(bad(
                "shift_factor",
                format!("{:?}", hf.shift_factor),
                "only null",
            ));
        }
        Ok(Self::new(hf.block_out_channels)
            .with_in_channels(hf.in_channels)
            .with_out_channels(hf.out_channels)
            .with_latent_channels(hf.latent_channels)
            .with_layers_per_block(hf.layers_per_block)
            .with_norm_num_groups(hf.norm_num_groups)
            .with_scaling_factor(hf.scaling_factor)
            .with_use_quant_conv(hf.use_quant_conv)
            .with_use_post_quant_conv(hf.use_post_quant_conv)
            .with_mid_block_add_attention(hf.mid_block_add_attention))
    }

    /// Builds the VAE with random weights.
    pub fn init(&self, device: &Device) -> AutoencoderKL {
        let two = 2 * self.latent_channels;
        let lc = self.latent_channels;
        AutoencoderKL {
            encoder: Encoder::new(self, device),
            decoder: Decoder::new(self, device),
            quant_conv: self
                .use_quant_conv
                .then(|| Conv2dConfig::new([two, two], [1, 1]).init(device)),
            post_quant_conv: self
                .use_post_quant_conv
                .then(|| Conv2dConfig::new([lc, lc], [1, 1]).init(device)),
            scaling_factor: self.scaling_factor,
        }
    }
}

/// The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022), diffusers'
/// `AutoencoderKL`: `encode` gives the Gaussian posterior `N(mean, exp(logvar))` of the latent,
/// `decode` maps a latent back to an image in about `[−1, 1]`.
///
/// # Shapes
/// - image `[B, 3, H, W]` ↔ latent `[B, latent_channels, H / 2^(L−1), W / 2^(L−1)]`
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    /// Image → moments.
    pub encoder: Encoder,
    /// Latent → image.
    pub decoder: Decoder,
    /// 1×1 convolution on the moments.
    pub quant_conv: Option<Conv2d>,
    /// 1×1 convolution on the latent before decoding.
    pub post_quant_conv: Option<Conv2d>,
    /// `scaling_factor` of the config (0.18215 for SD 1.5).
    pub scaling_factor: f64,
}
impl_lora_container!(AutoencoderKL {
    encoder,
    decoder,
    quant_conv,
    post_quant_conv
});

impl AutoencoderKL {
    /// The VAE of a diffusers folder (`<model>/vae`): `config.json` and
    /// `diffusion_pytorch_model.safetensors` (or its `.fp16.` variant, cast to f32).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let config = AutoencoderKLConfig::from_file(dir.join("config.json"))?;
        let mut model = config.init(device);
        model.load_safetensors(find_weights(dir)?)?;
        Ok(model)
    }

    /// Loads diffusers weights by name, strictly (see [`Error::WeightsMismatch`]).
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        load_safetensors_strict(self, path.as_ref(), &DIFFUSERS_REMAP)
    }

    /// The posterior's `(mean, logvar)`, `logvar` clamped to `[−30, 20]` as diffusers'
    /// `DiagonalGaussianDistribution`. Multiply a latent by `scaling_factor` for the UNet.
    ///
    /// # Shapes
    /// - `image`: `[B, in_channels, H, W]`; outputs: `[B, latent_channels, h, w]` each
    pub fn encode(&self, image: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let mut moments = self.encoder.forward(image);
        if let Some(conv) = &self.quant_conv {
            moments = conv.forward(moments);
        }
        let c = moments.dims()[1] / 2;
        let mean = moments.clone().narrow(1, 0, c);
        let logvar = moments.narrow(1, c, c).clamp(-30.0, 20.0);
        (mean, logvar)
    }

    /// Decodes latents that are **already divided by `scaling_factor`** (as diffusers'
    /// `vae.decode(latents / scaling_factor)`), giving an image in about `[−1, 1]`.
    ///
    /// # Shapes
    /// - `latents`: `[B, latent_channels, h, w]`; output: `[B, out_channels, H, W]`
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents),
            None => latents,
        };
        self.decoder.forward(z)
    }

    /// `decode(latents / scaling_factor)` then [`to_unit_range`]: the pipeline's image in `[0, 1]`.
    pub fn decode_to_image(&self, latents: Tensor<4>) -> Tensor<4> {
        to_unit_range(self.decode(latents / self.scaling_factor))
    }
}

/// The pipelines' post-processing `(x / 2 + 0.5).clamp(0, 1)`: `[−1, 1]` → `[0, 1]`.
///
/// # Shapes
/// - `x`, output: any `[B, C, H, W]`
pub fn to_unit_range(x: Tensor<4>) -> Tensor<4> {
    (x / 2.0 + 0.5).clamp(0.0, 1.0)
}
