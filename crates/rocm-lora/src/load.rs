//! Loading adapter files (PEFT or diffusers layout, old key spellings, f16/bf16) into a model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use serde_json::Value;

use crate::container::{LoraLayerMut, LoraLayerRef, freeze_all_but_adapters};
use crate::save::{DIFFUSERS_WEIGHTS, METADATA_KEY, PEFT_CONFIG, PEFT_WEIGHTS, json_err};
use crate::st::{Factor, ParsedKey, RawFile, RawTensor, parse_key, read_file};
use crate::{Error, LoraContainer, LoraConv2d, LoraLinear};

/// Where scaling information came from.
#[derive(Debug, Clone, PartialEq)]
struct ScaleInfo {
    alpha: Option<f64>,
    use_rslora: bool,
    dropout: f64,
    alpha_pattern: Vec<(String, f64)>,
}

impl ScaleInfo {
    fn from_config(v: &Value) -> Self {
        let pattern = |name: &str| {
            v.get(name)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            alpha: v.get("lora_alpha").and_then(Value::as_f64),
            use_rslora: v
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            dropout: v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            alpha_pattern: pattern("alpha_pattern"),
        }
    }

    /// α for a module: `alpha_pattern` (suffix match, as PEFT) → per-module `.alpha` key →
    /// `lora_alpha` → `r` (diffusers' default when a file says nothing).
    fn alpha_for(&self, module: &str, key_alpha: Option<f64>, rank: usize) -> f64 {
        let by_pattern = self
            .alpha_pattern
            .iter()
            .find(|(k, _)| module == k || module.ends_with(&format!(".{k}")));
        by_pattern
            .map(|(_, a)| *a)
            .or(key_alpha)
            .or(self.alpha)
            .unwrap_or(rank as f64)
    }
}

/// What [`load_adapters`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// The weight file read.
    pub file: PathBuf,
    /// Module paths that received an adapter, in traversal order.
    pub loaded: Vec<String>,
    /// Keys of other pipeline components (`text_encoder.*`) that were ignored.
    pub skipped_keys: Vec<String>,
}

/// Options of [`load_adapters_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The pipeline component whose keys to take (`"unet"`); keys without it are taken too.
    pub prefix: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            prefix: "unet".into(),
        }
    }
}

/// Load adapters from a PEFT directory/file or a diffusers file into `model` (UNet keys).
/// See [`load_adapters_with`].
pub fn load_adapters<M: Module + LoraContainer>(
    model: &mut M,
    path: impl AsRef<Path>,
) -> Result<LoadReport, Error> {
    load_adapters_with(model, path, &LoadOptions::default())
}

/// Load adapters into `model`, attaching one to every layer named in the file (replacing an
/// unmerged one) and freezing everything else, as [`apply_lora`](crate::apply_lora) does.
///
/// `path`: a `.safetensors` file, or a directory holding `adapter_model.safetensors` (PEFT) or
/// `pytorch_lora_weights.safetensors` (diffusers). Keys may be spelled
/// `[base_model.model.][unet.]<path>.lora_A.weight` / `.lora_B.weight`, or the older
/// `.lora.down.weight` / `.lora.up.weight`; f16/bf16/f64 are cast to f32. The settings
/// (`lora_alpha`, `alpha_pattern`, `use_rslora`, `lora_dropout`) come from `adapter_config.json`
/// next to the file, else from the `lora_adapter_metadata` header; a module's α is its
/// `alpha_pattern` entry, else its `.alpha` key, else `lora_alpha`, else r. Everything is checked before the model is touched: a
/// key naming no LoRA-capable layer, a shape or rank mismatch, a lone factor is an [`Error`]
/// naming the file and key.
pub fn load_adapters_with<M: Module + LoraContainer>(
    model: &mut M,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<LoadReport, Error> {
    let file = resolve_weights(path.as_ref());
    let raw = read_file(&file)?;
    let info = scale_info(&raw, &file, &options.prefix)?;
    let (mut groups, skipped_keys) = group_keys(&raw, &options.prefix)?;
    let plan = plan_against_model(model, &raw.path, &mut groups, &info)?;
    if let Some((module, g)) = groups.into_iter().next() {
        let key = g.a.or(g.b).map_or(module.clone(), |(k, _)| k);
        return Err(Error::UnknownKey {
            path: raw.path,
            key,
            reason: format!("the model has no LoRA-capable layer at `{module}`"),
        });
    }
    let mut loaded = Vec::new();
    freeze_all_but_adapters(model);
    let mut plan = plan;
    model.visit_lora_layers_mut("", &mut |path, layer| {
        let Some(p) = plan.remove(path) else { return };
        match layer {
            LoraLayerMut::Linear(l) => {
                let dev = l.weight.lazy_device();
                l.set_adapter(LoraLinear::from_factors(
                    p.a,
                    p.b,
                    p.alpha,
                    info.use_rslora,
                    info.dropout,
                    &dev,
                ));
            }
            LoraLayerMut::Conv2d(c) => {
                let dev = c.weight.lazy_device();
                c.set_adapter(LoraConv2d::from_factors(
                    p.a,
                    p.b,
                    p.alpha,
                    info.use_rslora,
                    info.dropout,
                    &dev,
                ));
            }
        }
        loaded.push(path.to_string());
    });
    log::info!(
        "loaded {} LoRA adapters from {}",
        loaded.len(),
        file.display()
    );
    Ok(LoadReport {
        file,
        loaded,
        skipped_keys,
    })
}

fn resolve_weights(path: &Path) -> PathBuf {
    if path.is_dir() {
        for name in [PEFT_WEIGHTS, DIFFUSERS_WEIGHTS] {
            if path.join(name).is_file() {
                return path.join(name);
            }
        }
        return path.join(DIFFUSERS_WEIGHTS);
    }
    path.to_path_buf()
}

fn scale_info(raw: &RawFile, file: &Path, prefix: &str) -> Result<ScaleInfo, Error> {
    let config_path = file.with_file_name(PEFT_CONFIG);
    if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| json_err(&config_path, PEFT_CONFIG, e))?;
        return Ok(ScaleInfo::from_config(&v));
    }
    if let Some(text) = raw.metadata.get(METADATA_KEY) {
        let v: Value = serde_json::from_str(text).map_err(|e| json_err(file, METADATA_KEY, e))?;
        let Value::Object(m) = v else {
            return Err(json_err(file, METADATA_KEY, "not a JSON object"));
        };
        let p = format!("{prefix}.");
        let unpacked: serde_json::Map<String, Value> = m
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(&p).map_or(k.clone(), str::to_string), v))
            .collect();
        return Ok(ScaleInfo::from_config(&Value::Object(unpacked)));
    }
    Ok(ScaleInfo {
        alpha: None,
        use_rslora: false,
        dropout: 0.0,
        alpha_pattern: Vec::new(),
    })
}

/// The factors of one module found in the file, with their keys.
#[derive(Default)]
struct Group {
    a: Option<(String, RawTensor)>,
    b: Option<(String, RawTensor)>,
    alpha: Option<f64>,
}

type Groups = BTreeMap<String, Group>;

fn group_keys(raw: &RawFile, prefix: &str) -> Result<(Groups, Vec<String>), Error> {
    let mut groups = Groups::new();
    let mut skipped = Vec::new();
    for (key, t) in &raw.tensors {
        match parse_key(key, prefix) {
            ParsedKey::OtherComponent => skipped.push(key.clone()),
            ParsedKey::NotLora => {
                return Err(Error::UnknownKey {
                    path: raw.path.clone(),
                    key: key.clone(),
                    reason: "not a LoRA key (expected `<module>.lora_A.weight`, \
                             `.lora_B.weight`, `.lora.down.weight`, `.lora.up.weight` or `.alpha`)"
                        .into(),
                });
            }
            ParsedKey::Lora(module, factor) => {
                let g = groups.entry(module).or_default();
                let entry = Some((key.clone(), t.clone()));
                match factor {
                    Factor::A => g.a = entry,
                    Factor::B => g.b = entry,
                    Factor::Alpha => {
                        g.alpha = t
                            .data
                            .clone()
                            .try_into_vec::<f32>()
                            .ok()
                            .and_then(|v| v.first().map(|x| f64::from(*x)))
                    }
                }
            }
        }
    }
    Ok((groups, skipped))
}

/// Factors checked against a layer, in the layer's expected shapes.
struct Planned {
    a: TensorData,
    b: TensorData,
    alpha: f64,
}

fn plan_against_model<M: LoraContainer>(
    model: &M,
    file: &Path,
    groups: &mut Groups,
    info: &ScaleInfo,
) -> Result<HashMap<String, Planned>, Error> {
    let mut plan = HashMap::new();
    let mut first_error = None;
    model.visit_lora_layers("", &mut |path, layer| {
        if first_error.is_some() {
            return;
        }
        let Some(g) = groups.remove(path) else { return };
        match plan_one(file, path, g, layer, info) {
            Ok(p) => {
                plan.insert(path.to_string(), p);
            }
            Err(e) => first_error = Some(e),
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(plan),
    }
}

fn plan_one(
    file: &Path,
    module: &str,
    g: Group,
    layer: LoraLayerRef<'_>,
    info: &ScaleInfo,
) -> Result<Planned, Error> {
    let incomplete = |present, missing| Error::IncompleteAdapter {
        path: file.to_path_buf(),
        key: module.to_string(),
        present,
        missing,
    };
    let (key_a, a) = match (g.a, &g.b) {
        (Some(a), _) => a,
        (None, Some(_)) => return Err(incomplete("lora_B", "lora_A")),
        (None, None) => return Err(incomplete("alpha", "lora_A and lora_B")),
    };
    let (key_b, b) = g.b.ok_or_else(|| incomplete("lora_A", "lora_B"))?;
    if layer.is_merged() {
        return Err(Error::Unsupported {
            path: module.to_string(),
            reason: "the layer's adapter is merged; unmerge before loading".into(),
        });
    }
    if let LoraLayerRef::Conv2d(c) = layer
        && let Err(reason) = c.check_adaptable()
    {
        return Err(Error::Unsupported {
            path: module.to_string(),
            reason,
        });
    }
    let rank = a.shape.first().copied().unwrap_or(0);
    let rank_b = b.shape.get(1).copied().unwrap_or(0);
    if rank != rank_b {
        return Err(Error::RankMismatch {
            path: file.to_path_buf(),
            key: module.to_string(),
            rank_a: rank,
            rank_b,
        });
    }
    let (want_a, want_b): (Vec<usize>, Vec<usize>) = match layer {
        LoraLayerRef::Linear(l) => (vec![rank, l.d_input()], vec![l.d_output(), rank]),
        LoraLayerRef::Conv2d(c) => {
            let [out, cin, kh, kw] = c.weight_dims();
            (vec![rank, cin, kh, kw], vec![out, rank, 1, 1])
        }
    };
    let fit = |key: String, t: RawTensor, want: Vec<usize>| {
        // A conv factor may be stored flat ([r, in] for a 1x1 kernel, [out, r]): same elements.
        let same_count = t.shape.iter().product::<usize>() == want.iter().product::<usize>();
        let same_rank_dims = t.shape.first() == want.first();
        if t.shape == want || (same_count && same_rank_dims && t.shape.len() < want.len()) {
            Ok(TensorData::new(
                t.data.iter::<f32>().collect::<Vec<_>>(),
                want,
            ))
        } else {
            Err(Error::ShapeMismatch {
                path: file.to_path_buf(),
                key,
                expected: want,
                found: t.shape,
            })
        }
    };
    Ok(Planned {
        a: fit(key_a, a, want_a)?,
        b: fit(key_b, b, want_b)?,
        alpha: info.alpha_for(module, g.alpha, rank),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::st::{F32View, write_file};
    use serde_json::json;

    #[test]
    fn alpha_resolution_order() {
        let info = ScaleInfo::from_config(&json!({
            "lora_alpha": 8, "alpha_pattern": {"conv1": 2.0}, "use_rslora": true
        }));
        assert!(info.use_rslora);
        assert_eq!(info.alpha_for("down.0.conv1", Some(5.0), 4), 2.0);
        assert_eq!(info.alpha_for("down.0.to_q", Some(5.0), 4), 5.0);
        assert_eq!(info.alpha_for("down.0.to_q", None, 4), 8.0);
        let empty = ScaleInfo::from_config(&json!({}));
        assert_eq!(
            empty.alpha_for("x", None, 4),
            4.0,
            "diffusers' default alpha = r"
        );
    }

    #[test]
    fn a_non_lora_key_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("rocm-lora-files-{}", std::process::id()));
        let path = dir.join("bad.safetensors");
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "unet.to_q.weight".to_string(),
            F32View::new(TensorData::new(vec![0.0f32; 4], [2, 2])),
        );
        write_file(&path, &tensors, HashMap::new()).unwrap();
        let raw = read_file(&path).unwrap();
        let err = group_keys(&raw, "unet").err().unwrap();
        assert!(matches!(err, Error::UnknownKey { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("bad.safetensors") && msg.contains("unet.to_q.weight"),
            "{msg}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
