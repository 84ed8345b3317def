//! ROCM in Rust: reward optimisation of latent consistency models.
//!
//! This umbrella crate re-exports the workspace's crates and picks the compute backend from its
//! Cargo features (`flex` CPU by default, `wgpu`, `cuda`): see [`device`].
//!
//! | module | crate | responsibility |
//! |---|---|---|
//! | [`divergence`] | `rocm-divergence` | [`divergence::FDivergence`] between per-step Gaussian policies |
//! | [`sampler`] | `rocm-sampler` | [`sampler::ConsistencyModel`], LCM schedule, multistep sampler |
//! | [`lora`] | `rocm-lora` | LoRA on Linear/Conv2d, PEFT/diffusers files |
//! | [`models`] | `rocm-models` | UNet, VAE, CLIP, tokenizer, weight loading |
//! | [`rewards`] | `rocm-rewards` | [`rewards::RewardModel`]: aesthetic, CLIPScore, PickScore, HPSv2 |
//! | [`trainer`] | `rocm-trainer` | the ROCM loop, checkpoints, metrics |
//!
//! This crate's own modules: [`run`] (a whole run from one TOML file: model, reward, prompts,
//! trainer settings), [`replicas`] (a run built on several devices, data-parallel), [`reward`]
//! (the built-in rewards by name), [`device`] (backend selection),
//! [`bench`] (the benchmark workload), [`tensor_files`] (injected noise and image tensors, for
//! exact comparisons with diffusers).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bench;
pub mod device;
pub mod replicas;
pub mod reward;
pub mod run;
pub mod tensor_files;

pub use rocm_divergence as divergence;
pub use rocm_kernels as kernels;
pub use rocm_lora as lora;
pub use rocm_models as models;
pub use rocm_rewards as rewards;
pub use rocm_sampler as sampler;
pub use rocm_shapes as shapes;
pub use rocm_trainer as trainer;

pub use device::{Backend, DeviceError, select_device};
