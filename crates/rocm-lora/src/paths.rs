//! The Burn parameter paths of the adapters' factors: how a checkpoint (or any store filter)
//! picks out exactly the trainable LoRA parameters of a model.
//!
//! [`Linear`](crate::Linear) and [`Conv2d`](crate::Conv2d) keep their adapter in a field named
//! `lora` whose factors are `lora_a` and `lora_b`, so the factors of the layer at module path
//! `p` are the parameters `p.lora.lora_a` and `p.lora.lora_b`.

/// A regex matching the Burn paths of LoRA factors (`….lora.lora_a`, `….lora.lora_b`), for
/// burn-store filters (`with_regex`).
pub const ADAPTER_PARAM_REGEX: &str = r"(^|\.)lora\.lora_[ab]$";

/// Whether a Burn parameter path is a LoRA factor (the paths [`ADAPTER_PARAM_REGEX`] matches).
///
/// ```
/// use rocm_lora::is_adapter_param_path;
/// assert!(is_adapter_param_path("down_blocks.0.attn1.to_q.lora.lora_a"));
/// assert!(is_adapter_param_path("lora.lora_b"));
/// assert!(!is_adapter_param_path("down_blocks.0.attn1.to_q.weight"));
/// assert!(!is_adapter_param_path("xlora.lora_a"));
/// ```
pub fn is_adapter_param_path(path: &str) -> bool {
    let rest = path
        .strip_suffix("lora_a")
        .or_else(|| path.strip_suffix("lora_b"));
    rest.is_some_and(|r| r == "lora." || r.ends_with(".lora."))
}
