//! HPS v2 / v2.1 (Wu et al. 2023): `cos(image, prompt)` under an open_clip ViT-H/14 fine-tuned on
//! human preferences (no logit scale; about 0.2–0.35 on real images).
//!
//! The checkpoints (`HPS_v2_compressed.pt`, `HPS_v2.1_compressed.pt`: `{"state_dict": …}`) use
//! open_clip's key layout; [`open_clip_to_transformers`] converts it to transformers' `CLIPModel`
//! layout so the one CLIP implementation of `rocm-models` runs it: `visual.*` → `vision_model.*`,
//! `transformer.resblocks.N` → `text_model.encoder.layers.N`, fused `attn.in_proj_weight` split into
//! `q_proj`/`k_proj`/`v_proj`, `mlp.c_fc`/`c_proj` → `fc1`/`fc2`, `ln_1`/`ln_2` →
//! `layer_norm1`/`layer_norm2`, `token_embedding`, `positional_embedding`, `ln_final`, and the
//! `x @ P` matrices `text_projection` / `visual.proj` transposed into Linear weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::bridge::to_data;
use burn::store::{
    ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use rocm_models::clip::{CLIPConfig, CLIPTextConfig, CLIPVisionConfig, EosTokenId};
use rocm_models::tokenizer::CLIPTokenizer;

use crate::clip_rewards::ClipBackbone;
use crate::preprocess::ClipPreprocess;
use crate::{Error, RewardModel};

/// open_clip ViT-H/14 (HPS v2, v2.1) as a transformers `CLIPConfig`: exact GELU, projection 1024,
/// argmax pooling (`eos_token_id` 2, the end-of-text id is the largest).
pub fn open_clip_vit_h14() -> CLIPConfig {
    CLIPConfig {
        text_config: CLIPTextConfig {
            eos_token_id: EosTokenId::One(2),
            ..CLIPTextConfig::vit_h14_text()
        },
        vision_config: CLIPVisionConfig::vit_h14(),
        projection_dim: 1024,
        logit_scale_init_value: 2.6592,
    }
}

/// Renames one open_clip key (not the fused attention or the projection matrices).
fn rename(key: &str) -> Option<String> {
    let (tower, rest) = match key.strip_prefix("visual.") {
        Some(rest) => ("vision_model", rest),
        None => ("text_model", key),
    };
    let simple = match (tower, rest) {
        ("text_model", "token_embedding.weight") => "embeddings.token_embedding.weight".to_string(),
        ("text_model", "positional_embedding") => "embeddings.position_embedding.weight".into(),
        ("vision_model", "positional_embedding") => "embeddings.position_embedding.weight".into(),
        ("vision_model", "class_embedding") => "embeddings.class_embedding".into(),
        ("vision_model", "conv1.weight") => "embeddings.patch_embedding.weight".into(),
        _ => String::new(),
    };
    if !simple.is_empty() {
        return Some(format!("{tower}.{simple}"));
    }
    let norms = [
        ("ln_final.", "final_layer_norm."),
        ("ln_pre.", "pre_layrnorm."),
        ("ln_post.", "post_layernorm."),
    ];
    for (from, to) in norms {
        if let Some(p) = rest.strip_prefix(from) {
            return Some(format!("{tower}.{to}{p}"));
        }
    }
    let block = rest.strip_prefix("transformer.resblocks.")?;
    let (n, inner) = block.split_once('.')?;
    let inner = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("attn.out_proj.", "self_attn.out_proj."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ]
    .iter()
    .find_map(|(from, to)| inner.strip_prefix(from).map(|p| format!("{to}{p}")))?;
    Some(format!("{tower}.encoder.layers.{n}.{inner}"))
}

/// Converts an open_clip state dict (f32 [`TensorData`] by key) to transformers' `CLIPModel` keys,
/// in PyTorch's layout (Linear weights `[out, in]`). Unknown keys are errors naming them.
pub fn open_clip_to_transformers(
    tensors: BTreeMap<String, TensorData>,
) -> Result<BTreeMap<String, TensorData>, String> {
    let mut out = BTreeMap::new();
    for (key, data) in tensors {
        let data = data.convert::<f32>();
        if key == "logit_scale" {
            out.insert(key, data);
        } else if key == "text_projection" || key == "visual.proj" {
            let name = if key == "visual.proj" {
                "visual_projection.weight"
            } else {
                "text_projection.weight"
            };
            out.insert(name.to_string(), transpose(data)?);
        } else if let Some(prefix) = key
            .strip_suffix("attn.in_proj_weight")
            .or(key.strip_suffix("attn.in_proj_bias"))
        {
            let kind = if key.ends_with("weight") {
                "weight"
            } else {
                "bias"
            };
            let base = rename(&format!("{prefix}attn.out_proj.{kind}"))
                .ok_or_else(|| format!("unknown key `{key}`"))?;
            let base = base
                .trim_end_matches(&format!("out_proj.{kind}"))
                .to_string();
            for (i, part) in split3(data)?.into_iter().enumerate() {
                out.insert(format!("{base}{}_proj.{kind}", ["q", "k", "v"][i]), part);
            }
        } else {
            let name = rename(&key).ok_or_else(|| format!("unknown open_clip key `{key}`"))?;
            out.insert(name, data);
        }
    }
    Ok(out)
}

fn values(data: &TensorData) -> Result<Vec<f32>, String> {
    data.clone()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}

fn transpose(data: TensorData) -> Result<TensorData, String> {
    let dims = data.shape().to_vec();
    let [r, c] = dims[..] else {
        return Err(format!("projection of shape {dims:?} is not a matrix"));
    };
    let v = values(&data)?;
    let t: Vec<f32> = (0..c * r).map(|k| v[(k % r) * c + k / r]).collect();
    Ok(TensorData::new(t, [c, r]))
}

/// Splits a fused `[3d, …]` tensor into three `[d, …]` tensors (q, k, v).
fn split3(data: TensorData) -> Result<Vec<TensorData>, String> {
    let shape = data.shape().to_vec();
    let rows = shape.first().copied().unwrap_or(0);
    if rows % 3 != 0 {
        return Err(format!(
            "fused in_proj of shape {shape:?} does not split in 3"
        ));
    }
    let v = values(&data)?;
    let chunk = v.len() / 3;
    let mut part_shape = shape.clone();
    part_shape[0] = rows / 3;
    Ok((0..3)
        .map(|i| TensorData::new(v[i * chunk..(i + 1) * chunk].to_vec(), part_shape.clone()))
        .collect())
}

/// A minimal safetensors (f32 only) serialisation, to feed converted tensors to burn-store.
fn safetensors_bytes(tensors: &BTreeMap<String, TensorData>) -> Result<Vec<u8>, String> {
    let mut header = serde_json::Map::new();
    let mut body = Vec::new();
    for (key, data) in tensors {
        let start = body.len();
        for x in values(data)? {
            body.extend_from_slice(&x.to_le_bytes());
        }
        let entry = serde_json::json!({"dtype": "F32", "shape": data.shape().to_vec(), "data_offsets": [start, body.len()]});
        header.insert(key.clone(), entry);
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend(body);
    Ok(bytes)
}

/// Reads an open_clip checkpoint: `.safetensors`, or a PyTorch `.pt`/`.bin` (`{"state_dict": …}` as
/// HPS ships it, or a bare state dict).
fn read_state_dict(path: &Path) -> Result<BTreeMap<String, TensorData>, String> {
    fn collect<S: ModuleStore>(store: &mut S) -> Result<BTreeMap<String, TensorData>, String> {
        let all = store.get_all_tensors().map_err(|e| e.to_string())?;
        all.iter()
            .map(|(k, t)| Ok((k.clone(), to_data(t).map_err(|e| format!("`{k}`: {e}"))?)))
            .collect()
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        return collect(&mut SafetensorsStore::from_file(path));
    }
    let nested = collect(
        &mut PytorchStore::from_file(path)
            .with_top_level_key("state_dict")
            .map_indices_contiguous(false),
    );
    nested.or_else(|_| collect(&mut PytorchStore::from_file(path).map_indices_contiguous(false)))
}

/// HPS v2 / v2.1: `cos(image, prompt)` with an open_clip ViT-H/14 checkpoint.
#[derive(Debug)]
pub struct HpsV2 {
    /// The frozen CLIP model (open_clip weights converted to transformers' layout).
    pub backbone: ClipBackbone,
}

/// Checkpoint file names looked for by [`HpsV2::from_dir`], in order.
pub const HPS_WEIGHT_FILES: [&str; 4] = [
    "HPS_v2.1_compressed.pt",
    "HPS_v2_compressed.pt",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
];

impl HpsV2 {
    /// Loads a folder holding an open_clip checkpoint ([`HPS_WEIGHT_FILES`]), optionally a
    /// tokenizer (`tokenizer.json` or `vocab.json` + `merges.txt`, here or in `tokenizer/`;
    /// default the embedded OpenAI CLIP vocabulary, [`CLIPTokenizer::openai_clip`], which is
    /// open_clip's) and optionally a transformers-style `config.json` (`CLIPConfig`; default
    /// [`open_clip_vit_h14`]).
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = if config_path.is_file() {
            CLIPConfig::from_file(&config_path)?
        } else {
            open_clip_vit_h14()
        };
        let weights = HPS_WEIGHT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Weights {
                path: dir.to_path_buf(),
                message: format!("none of {HPS_WEIGHT_FILES:?} in the folder"),
            })?;
        let tokenizer = crate::clip_rewards::load_tokenizer(dir)?;
        Self::from_file(&weights, &config, tokenizer, device)
    }

    /// Loads the open_clip checkpoint `weights` into a `CLIPModel` built from `config`; strict.
    pub fn from_file(
        weights: &Path,
        config: &CLIPConfig,
        tokenizer: CLIPTokenizer,
        device: &Device,
    ) -> Result<Self, Error> {
        let error = |message: String| Error::Weights {
            path: weights.to_path_buf(),
            message,
        };
        let state = read_state_dict(weights).map_err(error)?;
        let converted = open_clip_to_transformers(state).map_err(error)?;
        let logit_scale = converted
            .get("logit_scale")
            .and_then(|d| values(d).ok()?.first().copied());
        let mut store =
            SafetensorsStore::from_bytes(Some(safetensors_bytes(&converted).map_err(error)?))
                .with_from_adapter(PyTorchToBurnAdapter)
                .allow_partial(true);
        let mut model = config.init(device);
        let result = model
            .load_from(&mut store)
            .map_err(|e| error(e.to_string()))?;
        let unused: Vec<&String> = result
            .unused
            .iter()
            .filter(|k| *k != "logit_scale")
            .collect();
        if !result.missing.is_empty() || !unused.is_empty() || !result.errors.is_empty() {
            let missing: Vec<&String> = result.missing.iter().map(|m| &m.0).collect();
            return Err(error(format!(
                "missing {missing:?}, unused {unused:?}, errors {:?}",
                result.errors
            )));
        }
        model.logit_scale = logit_scale.unwrap_or(config.logit_scale_init_value);
        let preprocess = ClipPreprocess::new(config.vision_config.image_size);
        Ok(Self {
            backbone: ClipBackbone::new(model, tokenizer, preprocess),
        })
    }

    /// The checkpoint folder in the hub cache is not standard (HPS ships from `xswu/HPSv2`);
    /// resolve `name_or_path` by the workspace's one rule ([`rocm_models::hub::model_dir`]: an
    /// existing folder, else an `org/name` id in the Hugging Face cache, else an error naming
    /// the string) and load it with [`HpsV2::from_dir`].
    pub fn from_pretrained(name_or_path: &str, device: &Device) -> Result<Self, Error> {
        let dir: PathBuf = rocm_models::hub::model_dir(name_or_path, &[HPS_WEIGHT_FILES[0]])?;
        Self::from_dir(dir, device)
    }
}

impl RewardModel for HpsV2 {
    fn name(&self) -> &str {
        "hpsv2"
    }

    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        self.backbone.cosine(images, prompts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_open_clip_keys() {
        let cases = [
            (
                "visual.conv1.weight",
                "vision_model.embeddings.patch_embedding.weight",
            ),
            ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
            ("ln_final.weight", "text_model.final_layer_norm.weight"),
            (
                "transformer.resblocks.3.mlp.c_fc.weight",
                "text_model.encoder.layers.3.mlp.fc1.weight",
            ),
            (
                "visual.transformer.resblocks.0.ln_2.bias",
                "vision_model.encoder.layers.0.layer_norm2.bias",
            ),
        ];
        for (from, to) in cases {
            assert_eq!(rename(from).as_deref(), Some(to));
        }
        assert_eq!(rename("visual.attnpool.weight"), None);
    }

    #[test]
    fn splits_fused_attention_and_transposes_projections() {
        let mut state = BTreeMap::new();
        let w: Vec<f32> = (0..12).map(|x| x as f32).collect();
        state.insert(
            "transformer.resblocks.0.attn.in_proj_weight".to_string(),
            TensorData::new(w, [6, 2]),
        );
        state.insert(
            "text_projection".to_string(),
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]),
        );
        let out = open_clip_to_transformers(state).expect("convert");
        let k = &out["text_model.encoder.layers.0.self_attn.k_proj.weight"];
        assert_eq!(
            (k.shape().to_vec(), values(k).expect("f32")),
            (vec![2, 2], vec![4.0, 5.0, 6.0, 7.0])
        );
        let p = &out["text_projection.weight"];
        assert_eq!(values(p).expect("f32"), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
