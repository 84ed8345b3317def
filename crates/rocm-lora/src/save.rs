//! Saving adapters: the PEFT layout (`adapter_model.safetensors` + `adapter_config.json`) and
//! the diffusers layout (`pytorch_lora_weights.safetensors`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::{Value, json};

use crate::container::LoraLayerRef;
use crate::st::{F32View, write_file};
use crate::{Error, LoraContainer, LoraConv2d, LoraLinear};

/// PEFT's weight file name.
pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's config file name.
pub const PEFT_CONFIG: &str = "adapter_config.json";
/// diffusers' LoRA weight file name.
pub const DIFFUSERS_WEIGHTS: &str = "pytorch_lora_weights.safetensors";
/// Header key under which diffusers stores the `LoraConfig` kwargs.
pub const METADATA_KEY: &str = "lora_adapter_metadata";

/// One adapter in PEFT layout, read from a model.
pub(crate) struct Exported {
    pub(crate) path: String,
    pub(crate) a: TensorData,
    pub(crate) b: TensorData,
    pub(crate) alpha: f64,
    pub(crate) use_rslora: bool,
    pub(crate) dropout: f64,
    pub(crate) rank: usize,
}

/// Every adapter of `model`, in traversal order.
pub(crate) fn export<M: LoraContainer>(model: &M) -> Vec<Exported> {
    let mut out = Vec::new();
    model.visit_lora_layers("", &mut |path, layer| match layer {
        LoraLayerRef::Linear(l) => {
            if let Some(a) = &l.lora {
                out.push(exported_linear(path, a));
            }
        }
        LoraLayerRef::Conv2d(c) => {
            if let Some(a) = &c.lora {
                out.push(exported_conv(path, a));
            }
        }
    });
    out
}

fn exported_linear(path: &str, a: &LoraLinear) -> Exported {
    Exported {
        path: path.to_string(),
        a: a.lora_a.val().into_data(),
        b: a.lora_b.val().into_data(),
        alpha: a.alpha,
        use_rslora: a.use_rslora,
        dropout: a.dropout.prob,
        rank: a.rank(),
    }
}

fn exported_conv(path: &str, a: &LoraConv2d) -> Exported {
    Exported {
        path: path.to_string(),
        a: a.lora_a.val().into_data(),
        b: a.lora_b.val().into_data(),
        alpha: a.alpha,
        use_rslora: a.use_rslora,
        dropout: a.dropout.prob,
        rank: a.rank(),
    }
}

/// The `LoraConfig` kwargs describing `adapters` (PEFT field names): the most common rank and
/// alpha, with `rank_pattern`/`alpha_pattern` for the exceptions, and the full module paths as
/// `target_modules` (each matches exactly its own layer).
fn lora_config_json(adapters: &[Exported]) -> Value {
    fn most_common<T: PartialEq + Copy>(xs: impl Iterator<Item = T>) -> Option<T> {
        let xs: Vec<T> = xs.collect();
        xs.iter()
            .copied()
            .max_by_key(|x| xs.iter().filter(|y| *y == x).count())
    }
    let r = most_common(adapters.iter().map(|a| a.rank)).unwrap_or(0);
    let alpha = most_common(adapters.iter().map(|a| a.alpha)).unwrap_or(0.0);
    let mut rank_pattern = serde_json::Map::new();
    let mut alpha_pattern = serde_json::Map::new();
    for a in adapters {
        if a.rank != r {
            rank_pattern.insert(a.path.clone(), json!(a.rank));
        }
        if a.alpha != alpha {
            alpha_pattern.insert(a.path.clone(), json!(a.alpha));
        }
    }
    let first = adapters.first();
    json!({
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "target_modules": adapters.iter().map(|a| a.path.clone()).collect::<Vec<_>>(),
        "lora_dropout": first.map_or(0.0, |a| a.dropout),
        "use_rslora": first.is_some_and(|a| a.use_rslora),
        "init_lora_weights": true,
        "bias": "none",
        "fan_in_fan_out": false,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "use_dora": false,
        "lora_bias": false,
    })
}

fn tensors_with_prefix(adapters: Vec<Exported>, prefix: &str) -> BTreeMap<String, F32View> {
    let mut tensors = BTreeMap::new();
    for a in adapters {
        tensors.insert(
            format!("{prefix}{}.lora_A.weight", a.path),
            F32View::new(a.a),
        );
        tensors.insert(
            format!("{prefix}{}.lora_B.weight", a.path),
            F32View::new(a.b),
        );
    }
    tensors
}

pub(crate) fn json_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Json {
        path: path.to_path_buf(),
        what: what.to_string(),
        message: e.to_string(),
    }
}

pub(crate) fn no_adapters() -> Error {
    Error::InvalidConfig("the model carries no LoRA adapter to save".into())
}

/// Save in PEFT's layout into directory `dir`: `adapter_model.safetensors` (keys
/// `base_model.model.<path>.lora_A.weight` / `.lora_B.weight`, f32) and `adapter_config.json`.
/// `PeftModel.from_pretrained(base, dir)` reads it. Returns the weight file's path.
pub fn save_peft<M: LoraContainer>(model: &M, dir: impl AsRef<Path>) -> Result<PathBuf, Error> {
    let dir = dir.as_ref();
    let adapters = export(model);
    if adapters.is_empty() {
        return Err(no_adapters());
    }
    let config = lora_config_json(&adapters);
    let weights = dir.join(PEFT_WEIGHTS);
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_file(
        &weights,
        &tensors_with_prefix(adapters, "base_model.model."),
        meta,
    )?;
    let config_path = dir.join(PEFT_CONFIG);
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| json_err(&config_path, PEFT_CONFIG, e))?;
    crate::write_atomically(&config_path, text.as_bytes())?;
    Ok(weights)
}

/// Save in diffusers' layout: keys `<prefix>.<path>.lora_A.weight` / `.lora_B.weight` (f32),
/// header `lora_adapter_metadata` = the `LoraConfig` kwargs with keys `<prefix>.r`,
/// `<prefix>.lora_alpha`, ... (what `save_lora_weights(..., unet_lora_adapter_metadata=...)`
/// writes; `load_lora_weights` builds its `LoraConfig` from it, so α ≠ r loads with the right
/// scale). `path` is a file, or a directory that gets `pytorch_lora_weights.safetensors`.
/// `prefix` is the pipeline component, `"unet"` for the UNet. Returns the file's path.
pub fn save_diffusers<M: LoraContainer>(
    model: &M,
    path: impl AsRef<Path>,
    prefix: &str,
) -> Result<PathBuf, Error> {
    let path = path.as_ref();
    let file = if path.extension().is_some_and(|e| e == "safetensors") {
        path.to_path_buf()
    } else {
        path.join(DIFFUSERS_WEIGHTS)
    };
    let adapters = export(model);
    if adapters.is_empty() {
        return Err(no_adapters());
    }
    let Value::Object(config) = lora_config_json(&adapters) else {
        unreachable!("lora_config_json builds an object")
    };
    let packed: serde_json::Map<String, Value> = config
        .into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v))
        .collect();
    let meta_text = serde_json::to_string_pretty(&Value::Object(packed))
        .map_err(|e| json_err(&file, METADATA_KEY, e))?;
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (METADATA_KEY.to_string(), meta_text),
    ]);
    write_file(
        &file,
        &tensors_with_prefix(adapters, &format!("{prefix}.")),
        meta,
    )?;
    Ok(file)
}

/// The default save: diffusers' layout for the UNet, which both `load_lora_weights` and
/// [`load_adapters`](crate::load_adapters) read.
pub fn save_adapters<M: LoraContainer>(
    model: &M,
    path: impl AsRef<Path>,
) -> Result<PathBuf, Error> {
    save_diffusers(model, path, "unet")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exported(path: &str, rank: usize, alpha: f64) -> Exported {
        Exported {
            path: path.into(),
            a: TensorData::new(vec![0.0f32; rank], [rank, 1]),
            b: TensorData::new(vec![0.0f32; rank], [1, rank]),
            alpha,
            use_rslora: false,
            dropout: 0.0,
            rank,
        }
    }

    #[test]
    fn config_json_uses_patterns_for_the_exceptions() {
        let v = lora_config_json(&[
            exported("a.to_q", 4, 8.0),
            exported("a.to_k", 4, 8.0),
            exported("a.conv1", 2, 3.0),
        ]);
        assert_eq!(v["r"], 4);
        assert_eq!(v["lora_alpha"], 8.0);
        assert_eq!(v["peft_type"], "LORA");
        assert_eq!(v["rank_pattern"], json!({"a.conv1": 2}));
        assert_eq!(v["alpha_pattern"], json!({"a.conv1": 3.0}));
        assert_eq!(v["target_modules"], json!(["a.to_q", "a.to_k", "a.conv1"]));
    }
}
