//! Loading adapter files (PEFT or diffusers layout, old key spellings, f16/bf16) into a model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use serde_json::Value;

use crate::container::{LoraLayerMut, LoraLayerRef, freeze_all_but_adapters};
use crate::kohya::{KOHYA_TEXT_ENCODER_PREFIXES, KOHYA_UNET_PREFIX, KOHYA_WEIGHTS, KohyaNames};
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

    /// Refuses settings a layer cannot take (a dropout of 1 would panic in Burn's `Dropout`).
    fn checked(self, path: &Path, what: &str) -> Result<Self, Error> {
        if !(0.0..1.0).contains(&self.dropout) {
            let message = format!("lora_dropout = {} is not in [0, 1)", self.dropout);
            return Err(json_err(path, what, message));
        }
        Ok(self)
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
    /// Text-encoder keys that were skipped ([`TextEncoderKeys::Skip`]).
    pub skipped_keys: Vec<String>,
}

/// What [`load_adapters_with`] does with a file's text-encoder adapters (`text_encoder.*`,
/// kohya's `lora_te_*`, `lora_te1_*`, `lora_te2_*`): only UNet adapters load here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextEncoderKeys {
    /// Refuse the file with [`Error::TextEncoderAdapters`]: applying only its UNet part would
    /// silently change what the LoRA does.
    #[default]
    Refuse,
    /// Load the UNet's adapters and list the text encoder's keys in
    /// [`LoadReport::skipped_keys`].
    Skip,
}

/// Options of [`load_adapters_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The pipeline component whose keys to take (`"unet"`); keys without it are taken too.
    pub prefix: String,
    /// Refuse (the default) or skip text-encoder adapters.
    pub text_encoder: TextEncoderKeys,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            prefix: "unet".into(),
            text_encoder: TextEncoderKeys::Refuse,
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
/// `path`: a `.safetensors` file, or a directory holding `adapter_model.safetensors` (PEFT),
/// `pytorch_lora_weights.safetensors` (diffusers) or `lora_kohya.safetensors` (kohya). Keys may
/// be spelled `[base_model.model.][unet.]<path>.lora_A.weight` / `.lora_B.weight`, the older
/// `.lora.down.weight` / `.lora.up.weight` or attention-processor
/// `<attn>.processor.to_q_lora.down.weight` (… `to_out_lora` → `<attn>.to_out.0`), or kohya's
/// `lora_unet_<path with _>.lora_down.weight` / `.lora_up.weight` / `.alpha`, the path in
/// diffusers' or in the LDM/SGM naming (`lora_unet_input_blocks_4_1_…`, see
/// [`kohya`](crate::save_kohya)); f16/bf16/f64 are cast to f32. Text-encoder keys are refused
/// or skipped as [`LoadOptions::text_encoder`] says. The settings
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
    let file = adapter_weights_file(path.as_ref());
    let raw = read_file(&file)?;
    let info = scale_info(&raw, &file, &options.prefix)?;
    let (mut groups, skipped_keys) = group_keys(&raw, &options.prefix, &KohyaNames::of(model))?;
    if let Some(key) = skipped_keys.first()
        && options.text_encoder == TextEncoderKeys::Refuse
    {
        return Err(Error::TextEncoderAdapters {
            path: raw.path,
            count: skipped_keys.len(),
            key: key.clone(),
        });
    }
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

/// The weight file [`load_adapters`] reads for `path`: `path` itself, or in a folder the first
/// of [`PEFT_WEIGHTS`], [`DIFFUSERS_WEIGHTS`] and [`KOHYA_WEIGHTS`] present (else the diffusers
/// name, which then fails to open). Its `adapter_config.json` sibling, if any, holds α.
pub fn adapter_weights_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        for name in [PEFT_WEIGHTS, DIFFUSERS_WEIGHTS, KOHYA_WEIGHTS] {
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
        return ScaleInfo::from_config(&v).checked(&config_path, PEFT_CONFIG);
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
        return ScaleInfo::from_config(&Value::Object(unpacked)).checked(file, METADATA_KEY);
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

/// A kohya key (`lora_unet_<name>.<factor>`) as a factor of the layer the name resolves to.
fn parse_kohya(file: &Path, key: &str, names: &KohyaNames) -> Result<ParsedKey, Error> {
    let unknown = |reason: String| Error::UnknownKey {
        path: file.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let (name, suffix) = key.split_once('.').unwrap_or((key, ""));
    let factor = match suffix {
        "lora_down.weight" => Factor::A,
        "lora_up.weight" => Factor::B,
        "alpha" => Factor::Alpha,
        other => {
            return Err(unknown(format!(
                "`.{other}` is not a factor of a plain LoRA (kohya's `.lora_down.weight`, \
                 `.lora_up.weight`, `.alpha`); DoRA, LoHa and LoKr files are not supported"
            )));
        }
    };
    let module = names.resolve(name).map_err(unknown)?;
    Ok(ParsedKey::Lora(module.to_string(), factor))
}

fn group_keys(
    raw: &RawFile,
    prefix: &str,
    kohya: &KohyaNames,
) -> Result<(Groups, Vec<String>), Error> {
    let mut groups = Groups::new();
    let mut skipped = Vec::new();
    for (key, t) in &raw.tensors {
        let parsed = if key.starts_with(KOHYA_UNET_PREFIX) {
            parse_kohya(&raw.path, key, kohya)?
        } else if KOHYA_TEXT_ENCODER_PREFIXES
            .iter()
            .any(|p| key.starts_with(p))
        {
            ParsedKey::OtherComponent
        } else {
            parse_key(key, prefix)
        };
        match parsed {
            ParsedKey::OtherComponent => skipped.push(key.clone()),
            ParsedKey::NotLora => {
                return Err(Error::UnknownKey {
                    path: raw.path.clone(),
                    key: key.clone(),
                    reason: "not a LoRA key (expected `<module>.lora_A.weight`, \
                             `.lora_B.weight`, `.lora.down.weight`, `.lora.up.weight`, `.alpha` \
                             or kohya's `lora_unet_<module>.lora_down.weight`)"
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
    let alpha = info.alpha_for(module, g.alpha, rank);
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::UnknownKey {
            path: file.to_path_buf(),
            key: module.to_string(),
            reason: format!("alpha {alpha} is not finite and > 0"),
        });
    }
    Ok(Planned {
        a: fit(key_a, a, want_a)?,
        b: fit(key_b, b, want_b)?,
        alpha,
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
        let err = group_keys(&raw, "unet", &KohyaNames::of(&Vec::<crate::Linear>::new()))
            .err()
            .unwrap();
        assert!(matches!(err, Error::UnknownKey { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("bad.safetensors") && msg.contains("unet.to_q.weight"),
            "{msg}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
