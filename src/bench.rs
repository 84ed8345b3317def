//! The benchmark workload of `examples/bench_rocm.rs`, `benches/per_step_backprop.rs` and
//! `benches/compare.sh`: one ROCM iteration on a random-weight LCM UNet + VAE, identical to the
//! PyTorch + diffusers + peft script `benches/python/bench_rocm.py`.
//!
//! Two sizes, written as diffusers `config.json` documents so that both sides build the same
//! modules: [`BenchSize::Tiny`] and [`BenchSize::Small`].

use std::fmt;
use std::str::FromStr;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use rocm_lora::{LoraConfig, LoraContainer, apply_lora};
use rocm_models::{
    AutoencoderKL, AutoencoderKLConfig, UNet2DConditionModel, UNet2DConditionModelConfig,
};
use rocm_rewards::ColorTarget;
use rocm_trainer::{DecodedReward, ReductionKind, TrainConfig};

/// The `tiny` UNet, in diffusers' `config.json` terms.
const TINY_UNET: &str = r#"{
  "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
  "block_out_channels": [32, 64],
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
  "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 8,
  "time_cond_proj_dim": 32
}"#;

/// The `tiny` VAE.
const TINY_VAE: &str = r#"{
  "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
  "block_out_channels": [16, 32], "norm_num_groups": 8,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

/// The `small` UNet.
const SMALL_UNET: &str = r#"{
  "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
  "block_out_channels": [64, 128, 256],
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "cross_attention_dim": 256, "attention_head_dim": 8, "norm_num_groups": 32,
  "time_cond_proj_dim": 64
}"#;

/// The `small` VAE.
const SMALL_VAE: &str = r#"{
  "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
  "block_out_channels": [32, 32, 64, 64], "norm_num_groups": 32,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D",
                       "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                     "UpDecoderBlock2D"]
}"#;

/// The benchmark's model size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchSize {
    /// UNet (32, 64) channels, text width 32, latent 8×8; VAE (16, 32).
    Tiny,
    /// UNet (64, 128, 256) channels, text width 256, latent 16×16; VAE (32, 32, 64, 64).
    Small,
}

impl BenchSize {
    /// The UNet's configuration.
    pub fn unet_config(self) -> UNet2DConditionModelConfig {
        let json = match self {
            Self::Tiny => TINY_UNET,
            Self::Small => SMALL_UNET,
        };
        UNet2DConditionModelConfig::from_json_str(json)
            .unwrap_or_else(|e| unreachable!("built-in UNet config: {e}"))
    }

    /// The VAE's configuration.
    pub fn vae_config(self) -> AutoencoderKLConfig {
        let json = match self {
            Self::Tiny => TINY_VAE,
            Self::Small => SMALL_VAE,
        };
        AutoencoderKLConfig::from_json_str(json)
            .unwrap_or_else(|e| unreachable!("built-in VAE config: {e}"))
    }
}

impl fmt::Display for BenchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
        })
    }
}

impl FromStr for BenchSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "small" => Ok(Self::Small),
            other => Err(format!("unknown benchmark size `{other}` (tiny, small)")),
        }
    }
}

/// The workload's models on `device`, from the backend's RNG seeded with 0: the UNet with the
/// paper's LoRA (r16/α32, gaussian, `to_q`/`to_k`/`to_v`/`to_out.0`), the frozen VAE, the
/// fixed random conditioning `[1, 77, cross_attention_dim]`, and the colour reward
/// `−mean((img − [0.8, 0.2, 0.2])²)` behind the VAE decoder.
#[derive(Debug)]
pub struct BenchModels {
    /// The LoRA-adapted UNet.
    pub unet: UNet2DConditionModel,
    /// VAE decoding `/ 0.18215` then `(x/2 + 0.5).clamp(0, 1)`, followed by the colour reward.
    pub reward: DecodedReward<AutoencoderKL, ColorTarget>,
    /// The fixed conditioning.
    pub conditioning: Tensor<3>,
    /// One latent's shape, `[1, 4, sample_size, sample_size]`.
    pub latent_shape: [usize; 4],
    /// Parameters of the UNet without adapters.
    pub base_params: usize,
    /// Adapter parameters (the only trainable ones).
    pub lora_params: usize,
    /// Layers carrying an adapter.
    pub lora_layers: usize,
}

impl BenchModels {
    /// Builds the models of `size` on `device` (seeds the device's RNG with 0).
    pub fn new(size: BenchSize, device: &Device) -> Result<Self, rocm_lora::Error> {
        let unet_config = size.unet_config();
        device.seed(0);
        let mut unet = unet_config.init(device);
        unet.visit(&mut Materialise);
        let vae = size.vae_config().init(device);
        vae.visit(&mut Materialise);
        let vae = vae.no_grad();
        let base_params = unet.num_params();
        apply_lora(&mut unet, &LoraConfig::paper())?;
        let lora_params = unet.num_params() - base_params;
        let mut lora_layers = 0;
        unet.visit_lora_layers("", &mut |_, layer| {
            lora_layers += usize::from(layer.has_adapter());
        });
        let conditioning = Tensor::<3>::random(
            [1, 77, unet_config.cross_attention_dim],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let s = unet_config.sample_size;
        Ok(Self {
            unet,
            reward: DecodedReward::new(vae, ColorTarget::new([0.8, 0.2, 0.2])),
            conditioning,
            latent_shape: [1, 4, s, s],
            base_params,
            lora_params,
            lora_layers,
        })
    }
}

/// Draws every lazily initialised parameter now, in module order. Burn initialises a parameter
/// on first access, so without this the random weights would depend on which code path touches
/// them first (a plain forward pass and `Module::valid` visit them in different orders).
struct Materialise;

impl ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// The workload's training configuration: `K = 8` evenly spaced steps, guidance embedding of
/// `w = 6.5` (`guidance_scale = 7.5`), KL summed over elements with β = 0.1, AdamW lr 6e-5
/// with PyTorch's defaults, no gradient clipping, batch 1, no checkpoints or evaluation;
/// per-step `checkpointing` and the `concurrent` switch as given.
pub fn bench_train_config(checkpointing: bool, concurrent: bool) -> TrainConfig {
    TrainConfig {
        num_steps: 8,
        guidance_scale: 7.5,
        beta: 0.1,
        divergence: rocm_divergence::DivergenceConfig::Kl,
        reduction: ReductionKind::Sum,
        gradient_checkpointing: checkpointing,
        concurrent,
        batch_size: 1,
        max_grad_norm: 0.0,
        learning_rate: 6e-5,
        iterations: usize::MAX,
        checkpoint_every: 0,
        eval_every: 0,
        ..TrainConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_and_round_trip_names() {
        for size in [BenchSize::Tiny, BenchSize::Small] {
            assert_eq!(size.to_string().parse::<BenchSize>(), Ok(size));
            let unet = size.unet_config();
            assert_eq!(
                unet.num_attention_heads.len(),
                unet.block_out_channels.len()
            );
            assert!(unet.time_cond_proj_dim.is_some());
            let vae = size.vae_config();
            assert_eq!(vae.latent_channels, 4);
        }
        assert!("medium".parse::<BenchSize>().is_err());
    }

    /// One test (not two): the models draw from the device's shared RNG, which parallel tests
    /// would interleave.
    #[test]
    fn tiny_models_are_reproducible_and_carry_lora_on_attention_only() {
        let (device, _) = crate::select_device("auto").unwrap();
        let device = device.autodiff();
        let weights = |m: &BenchModels| {
            struct Collect<'a>(&'a mut Vec<f32>);
            impl ModuleVisitor for Collect<'_> {
                fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                    self.0
                        .extend(p.val().into_data().try_to_vec::<f32>().unwrap());
                }
            }
            let mut all = Vec::new();
            m.unet.visit(&mut Collect(&mut all));
            all
        };
        let first = BenchModels::new(BenchSize::Tiny, &device).unwrap();
        let a = weights(&first);
        // Touch the second model through a forward pass (another order than the fields') first.
        let second = BenchModels::new(BenchSize::Tiny, &device).unwrap();
        let x = Tensor::<4>::zeros(second.latent_shape, &device);
        let t = Tensor::<1>::full([1], 999.0, &device);
        let w = Tensor::<2>::zeros([1, 32], &device);
        drop(
            second
                .unet
                .forward(x, t, second.conditioning.clone(), Some(w)),
        );
        assert!(
            a == weights(&second),
            "the weights depend on the first access"
        );
        // 4 projections × 2 attentions × 4 transformers (down, mid, 2 × up).
        assert_eq!(first.lora_layers, 32);
        assert_eq!(first.latent_shape, [1, 4, 8, 8]);
        assert!(first.lora_params > 0 && first.lora_params < first.base_params / 10);
    }
}
