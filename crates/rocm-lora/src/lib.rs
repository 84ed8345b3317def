//! LoRA adapters for Burn `Linear` and `Conv2d` layers, chosen by diffusers module path, with
//! PEFT, diffusers and kohya adapter files in and out.
//!
//! A LoRA adapter adds a low-rank update to a frozen weight, `W x + (α / r) B A x`, with `A`
//! (`r × in`) and `B` (`out × r`, zero at initialisation). ROCM trains only these adapters; the
//! frozen base (adapters off) is the reference policy of the f-divergence regulariser.
//!
//! # Pieces
//! - [`Linear`] and [`Conv2d`]: drop-in layers for model code (fields `weight`, `bias` load by
//!   their upstream names through burn-store's `PyTorchToBurnAdapter`), each with an optional
//!   adapter computed as PEFT does (`scale · B(A(dropout(x)))`; for convolutions a `k×k` down
//!   convolution to `r` channels and a `1×1` up convolution), merge/unmerge.
//! - [`LoraContainer`] + [`impl_lora_container!`]: reach layers by dotted path
//!   (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0`).
//! - [`apply_lora`] with a [`LoraConfig`] (PEFT's `r`, `lora_alpha`, `target_modules`,
//!   `lora_dropout`, `init_lora_weights`, `use_rslora`): freezes the model, attaches adapters.
//! - [`with_adapters_disabled`]: the frozen base through `&self`, no weight copy.
//! - [`save_adapters`] / [`save_diffusers`] / [`save_peft`] / [`save_kohya`] /
//!   [`load_adapters`]: files in PEFT's, diffusers' and kohya's (A1111, ComfyUI) layouts;
//!   [`save_merged_weights`]: a base weight file with the adapters fused in. Every file is
//!   written atomically and durably ([`write_atomically`]: a temporary sibling, fsynced, renamed
//!   over the name): an interrupted save leaves the previous file or none, never half of one.
//!
//! # Design notes
//! - **Why own layers, not Burn's `apply_lora`:** Burn's built-in LoRA adapts rank-2 weights only
//!   (no convolutions), has no on/off switch, no dropout and its own key names. Here the
//!   adapter lives in the layer (`Linear::lora`, `Conv2d::lora`), computed factored as PEFT does.
//! - **Base weights load by upstream name:** the layer types are named `Linear` and `Conv2d`
//!   because burn-store's `PyTorchToBurnAdapter` keys on the module type name to transpose
//!   PyTorch's `[out, in]` Linear weights. Model code should declare diffusers' `to_out`
//!   `ModuleList` as `to_out: Vec<Linear>`: burn-store and [`LoraContainer`] then both print
//!   `to_out.0` with no remapping. `lora: None` holds no parameter, so a strict load of a base
//!   checkpoint sees no missing keys.
//! - **Saving a whole model through burn-store** also writes the adapter factors (keys
//!   `<layer>.lora.lora_a` / `.lora_b`, Burn's paths, not PEFT's) and, for a merged layer, the
//!   merged weight; save adapters with [`save_adapters`] and filter the `.lora.` keys out of a
//!   base checkpoint.
//! - **Adapters off** is a thread-local scope ([`with_adapters_disabled`]) read in each layer's
//!   forward: no copy of the weights, works through `&self`. It covers the calling thread only:
//!   a forward pass split across threads must enter the scope on each of them.
//! - **Merged layers** ([`merge_adapters`]): the delta is folded into `weight` and the adapter
//!   kept, so [`unmerge_adapters`] can subtract it. Adapters off on a merged layer computes with
//!   `W − scale·ΔW` on the fly: the base up to float rounding (not bitwise). Attaching or
//!   loading an adapter into a merged layer is refused.
//!
//! # Example
//! ```
//! use burn::prelude::*;
//! use rocm_lora::{LinearConfig, Linear, LoraConfig, TargetModules, impl_lora_container};
//!
//! #[derive(Module, Debug)]
//! struct Attention { to_q: Linear, to_k: Linear, to_v: Linear, to_out: Vec<Linear> }
//! impl_lora_container!(Attention { to_q, to_k, to_v, to_out });
//! impl Attention {
//!     fn forward(&self, x: Tensor<2>) -> Tensor<2> {
//!         let v = self.to_v.forward(x.clone()) + self.to_q.forward(x.clone()) + self.to_k.forward(x);
//!         self.to_out[0].forward(v)
//!     }
//! }
//!
//! let device = Device::flex();
//! let lin = || LinearConfig::new(8, 8).init(&device);
//! let mut attn = Attention { to_q: lin(), to_k: lin(), to_v: lin(), to_out: vec![lin()] };
//! // The paper's setting: r = 16, α = 32, A ~ N(0, 1/r), B = 0 (here r = 4, α = 8).
//! let config = LoraConfig::new(4, 8.0, TargetModules::names(&["to_q", "to_k", "to_v", "to_out.0"]))
//!     .with_init_lora_weights(rocm_lora::InitLoraWeights::Gaussian);
//! let report = rocm_lora::apply_lora(&mut attn, &config)?;
//! assert_eq!(report.wrapped, ["to_q", "to_k", "to_v", "to_out.0"]);
//!
//! let x = Tensor::<2>::ones([2, 8], &device);
//! let tuned = attn.forward(x.clone());
//! let base = rocm_lora::with_adapters_disabled(|| attn.forward(x)); // reference policy
//! assert_eq!(tuned.into_data(), base.into_data()); // B = 0 at start
//!
//! let dir = std::env::temp_dir().join(format!("rocm-lora-doc-{}", std::process::id()));
//! let file = rocm_lora::save_adapters(&attn, &dir)?; // pytorch_lora_weights.safetensors
//! rocm_lora::load_adapters(&mut attn, &file)?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), rocm_lora::Error>(())
//! ```

mod config;
mod container;
mod conv;
mod error;
mod kohya;
mod linear;
mod load;
mod merged;
mod paths;
mod plumbing;
mod publish;
mod save;
mod st;
mod switch;

pub use config::{InitLoraWeights, LoraConfig, TargetMatcher, TargetModules, lora_scale};
pub use container::{
    LoraContainer, LoraLayerMut, LoraLayerRef, LoraReport, adapter_paths, apply_lora, join_path,
    lora_capable_paths, merge_adapters, unmerge_adapters,
};
pub use conv::{Conv2d, Conv2dConfig, LoraConv2d};
pub use error::Error;
pub use kohya::{
    KOHYA_TEXT_ENCODER_PREFIXES, KOHYA_UNET_PREFIX, KOHYA_WEIGHTS, kohya_name, save_kohya,
};
pub use linear::{Linear, LinearConfig, LoraLinear};
pub use load::{
    LoadOptions, LoadReport, TextEncoderKeys, adapter_weights_file, load_adapters,
    load_adapters_with,
};
pub use merged::save_merged_weights;
pub use paths::{ADAPTER_PARAM_REGEX, is_adapter_param_path};
pub use publish::write_atomically;
pub use save::{
    DIFFUSERS_WEIGHTS, METADATA_KEY, PEFT_CONFIG, PEFT_WEIGHTS, save_adapters, save_diffusers,
    save_peft,
};
pub use switch::{adapters_enabled, with_adapters_disabled};
