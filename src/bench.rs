//! The benchmark workload of `examples/bench_rocm.rs`, `benches/per_step_backprop.rs` and
//! `benches/compare.sh`: one ROCM iteration on a random-weight LCM UNet + VAE, identical to the
//! PyTorch + diffusers + peft script `benches/python/bench_rocm.py`.
//!
//! Three sizes, written as diffusers `config.json` documents so that both sides build the same
//! modules: [`BenchSize::Tiny`] and [`BenchSize::Small`] (CPU-sized), and [`BenchSize::Dreamshaper`],
//! the real-size workload for GPUs (LCM Dreamshaper v7's UNet and Stable Diffusion's VAE, 512²
//! images).

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
use rocm_trainer::{DecodedReward, ReductionKind, RocmTrainer, TrainConfig};

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

/// The `dreamshaper` UNet: the architecture of LCM Dreamshaper v7's UNet (Stable Diffusion 1.5's
/// UNet with a 256-wide guidance embedding, `time_cond_proj_dim`), latent 64×64 (512² images).
/// The values are those of the model's `unet/config.json`; the weights here are random.
const DREAMSHAPER_UNET: &str = r#"{
  "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
  "block_out_channels": [320, 640, 1280, 1280],
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                       "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                     "CrossAttnUpBlock2D"],
  "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
  "norm_eps": 1e-05, "act_fn": "silu", "flip_sin_to_cos": true, "freq_shift": 0,
  "downsample_padding": 1, "mid_block_scale_factor": 1, "center_input_sample": false,
  "time_cond_proj_dim": 256
}"#;

/// The `dreamshaper` VAE: Stable Diffusion's `AutoencoderKL` (the one LCM Dreamshaper v7 ships).
const DREAMSHAPER_VAE: &str = r#"{
  "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
  "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu",
  "sample_size": 512, "scaling_factor": 0.18215,
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
    /// LCM Dreamshaper v7's UNet (320, 640, 1280, 1280) channels, text width 768, latent 64×64;
    /// Stable Diffusion's VAE (128, 256, 512, 512): the real-size workload, for GPUs.
    Dreamshaper,
}

impl BenchSize {
    /// The UNet's configuration.
    pub fn unet_config(self) -> UNet2DConditionModelConfig {
        let json = match self {
            Self::Tiny => TINY_UNET,
            Self::Small => SMALL_UNET,
            Self::Dreamshaper => DREAMSHAPER_UNET,
        };
        UNet2DConditionModelConfig::from_json_str(json)
            .unwrap_or_else(|e| unreachable!("built-in UNet config: {e}"))
    }

    /// The VAE's configuration.
    pub fn vae_config(self) -> AutoencoderKLConfig {
        let json = match self {
            Self::Tiny => TINY_VAE,
            Self::Small => SMALL_VAE,
            Self::Dreamshaper => DREAMSHAPER_VAE,
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
            Self::Dreamshaper => "dreamshaper",
        })
    }
}

impl FromStr for BenchSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "small" => Ok(Self::Small),
            "dreamshaper" => Ok(Self::Dreamshaper),
            other => Err(format!(
                "unknown benchmark size `{other}` (tiny, small, dreamshaper)"
            )),
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

impl BenchModels {
    /// The benchmark's trainer on these models: the single empty prompt encoded as the fixed
    /// conditioning, SD 1.5's LCM schedule (the random-weight UNet has none of its own), on
    /// `device` (where the models live, with autodiff).
    ///
    /// # Errors
    /// The builder's, when `config` is refused.
    pub fn into_trainer(
        self,
        config: TrainConfig,
        device: Device,
    ) -> Result<RocmTrainer<4, UNet2DConditionModel>, rocm_trainer::Error> {
        let conditioning = self.conditioning;
        let encode = move |prompts: &[String]| conditioning.clone().repeat_dim(0, prompts.len());
        RocmTrainer::builder(config)
            .model(self.unet)
            .reward(self.reward)
            .prompts(vec![String::new()], encode)
            .scheduler(rocm_sampler::LcmScheduler::default())
            .latent_shape(self.latent_shape)
            .device(device)
            .build()
    }

    /// The same models and conditioning on `device`, each with its own autodiff graph
    /// ([`Module::fork`]; `to_device` would make the parameters outputs of a recorded transfer,
    /// not trainable leaves). Every parameter is drawn first, so lazily initialised adapters are
    /// not re-drawn by the target backend. This is how a device is compared with another on
    /// identical weights (`examples/device_check.rs`).
    pub fn fork(self, device: &Device) -> Self {
        self.unet.visit(&mut Materialise);
        self.reward.decoder.visit(&mut Materialise);
        Self {
            unet: self.unet.fork(device),
            reward: DecodedReward::new(self.reward.decoder.fork(device), self.reward.reward),
            conditioning: self.conditioning.to_device(device).detach(),
            ..self
        }
    }
}

/// What a device's allocator reports, in MiB ([`device_memory`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceMemory {
    /// Bytes reserved from the device (pages held for reuse included).
    pub reserved_mib: f64,
    /// Bytes of live allocations (padding excluded).
    pub in_use_mib: f64,
    /// The largest number of pages each page-carving pool ever held, times its page size,
    /// summed over those pools: a peak, but without allocations that own a page of their own.
    pub pool_peak_mib: f64,
}

/// The device allocator's state on `device`, or `None` where the backend reports none (burn-flex
/// allocates from the process heap: its peak is the resident set).
pub fn device_memory(device: &Device) -> Option<DeviceMemory> {
    const MIB: f64 = 1024.0 * 1024.0;
    let usage = device.memory_pool_usage()?;
    let pool_peak = device.memory_pool_report().map_or(0, |pools| {
        pools
            .iter()
            .map(|p| p.page_size.saturating_mul(p.pages_peak))
            .sum::<u64>()
    });
    Some(DeviceMemory {
        reserved_mib: usage.bytes_reserved as f64 / MIB,
        in_use_mib: usage.bytes_in_use as f64 / MIB,
        pool_peak_mib: pool_peak as f64 / MIB,
    })
}

/// Wall-clock seconds and losses of a benchmark's iterations ([`time_iterations`]).
#[derive(Clone, Debug, PartialEq)]
pub struct IterationTimes {
    /// Seconds of each untimed warm-up iteration; the first one is the cold start (a GPU
    /// backend's kernel compilation and autotuning happen there).
    pub warmup: Vec<f64>,
    /// Seconds of each timed iteration.
    pub timed: Vec<f64>,
    /// The loss of every iteration, warm-up included.
    pub losses: Vec<f64>,
    /// The device allocator's largest reading after any iteration ([`device_memory`]; each
    /// field maximised separately), `None` on backends that report none.
    pub memory: Option<DeviceMemory>,
}

impl IterationTimes {
    /// The first iteration's seconds, warm-up or not.
    pub fn first(&self) -> Option<f64> {
        self.warmup.first().or(self.timed.first()).copied()
    }
}

/// Runs `warmup` then `iters` iterations of `iteration` (which returns the iteration's loss),
/// each timed from its start until `device` has finished the work it queued
/// ([`Device::sync`]: GPU backends return before their kernels do), reading the device's
/// allocator after each one. `progress(i, seconds, loss)` is called after iteration `i`
/// (0-based, warm-up first).
///
/// # Errors
/// The first error of `iteration`, or of the device's synchronisation.
pub fn time_iterations<E: From<burn::tensor::ExecutionError>>(
    device: &Device,
    warmup: usize,
    iters: usize,
    mut iteration: impl FnMut() -> Result<f64, E>,
    mut progress: impl FnMut(usize, f64, f64),
) -> Result<IterationTimes, E> {
    let mut times = IterationTimes {
        warmup: Vec::with_capacity(warmup),
        timed: Vec::with_capacity(iters),
        losses: Vec::with_capacity(warmup + iters),
        memory: None,
    };
    for i in 0..warmup + iters {
        let start = std::time::Instant::now();
        let loss = iteration()?;
        device.sync()?;
        let seconds = start.elapsed().as_secs_f64();
        if i < warmup {
            times.warmup.push(seconds);
        } else {
            times.timed.push(seconds);
        }
        times.losses.push(loss);
        if let Some(now) = device_memory(device) {
            let max = times.memory.get_or_insert(now);
            max.reserved_mib = max.reserved_mib.max(now.reserved_mib);
            max.in_use_mib = max.in_use_mib.max(now.in_use_mib);
            max.pool_peak_mib = max.pool_peak_mib.max(now.pool_peak_mib);
        }
        progress(i, seconds, loss);
    }
    Ok(times)
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
        for size in [BenchSize::Tiny, BenchSize::Small, BenchSize::Dreamshaper] {
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

    /// The real-size workload is LCM Dreamshaper v7's UNet (SD 1.5's, 8 heads everywhere) at
    /// 512² (its own config says 96, 768²) and SD's VAE: the same as `rocm-models`' presets.
    #[test]
    fn dreamshaper_has_lcm_dreamshaper_shapes() {
        let unet = BenchSize::Dreamshaper.unet_config();
        let preset = UNet2DConditionModelConfig::lcm_dreamshaper_v7().with_sample_size(64);
        assert_eq!(format!("{unet:?}"), format!("{preset:?}"));
        let vae = BenchSize::Dreamshaper.vae_config();
        assert_eq!(
            format!("{vae:?}"),
            format!("{:?}", AutoencoderKLConfig::sd15())
        );
        assert_eq!(unet.block_out_channels, [320, 640, 1280, 1280]);
        assert_eq!(unet.num_attention_heads, [8, 8, 8, 8]);
        assert_eq!(unet.cross_attention_dim, 768);
        assert_eq!(unet.time_cond_proj_dim, Some(256));
        assert_eq!(unet.layers_per_block, 2);
        assert_eq!(unet.sample_size, 64);
        let vae = BenchSize::Dreamshaper.vae_config();
        assert_eq!(vae.block_out_channels, [128, 256, 512, 512]);
        assert_eq!(vae.layers_per_block, 2);
        assert!((vae.scaling_factor - 0.18215).abs() < 1e-12);
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
