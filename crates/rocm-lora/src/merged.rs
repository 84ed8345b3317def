//! A base weight file with the adapters fused in: what `fuse_lora` + `save_pretrained` write.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::container::LoraLayerRef;
use crate::st::{F32View, read_file, write_file};
use crate::{Error, LoraContainer};

/// Write the tensors of `base_weights` (a safetensors file of `model`'s base weights under
/// their upstream names, `<module path>.weight` in PyTorch's layout) to `out` with every
/// adapter of `model` fused in, `W' = W + scale · B A` (for a `Linear` `[out, in]`, for a
/// `Conv2d` `[out, in, kh, kw]`), all as f32. Other tensors are copied unchanged (cast to
/// f32). For a diffusers UNet the result, beside the model's `config.json`, is a model folder
/// that `UNet2DConditionModel.from_pretrained` loads with the LoRA baked in.
///
/// The adapters are read from `model` whether or not they are merged into its weights; the
/// base weights always come from the file. A layer with an adapter whose weight is missing in
/// the file, or has another shape, is an [`Error`] naming the file and key. Returns `out`.
pub fn save_merged_weights<M: LoraContainer>(
    model: &M,
    base_weights: impl AsRef<Path>,
    out: impl AsRef<Path>,
) -> Result<PathBuf, Error> {
    let raw = read_file(base_weights.as_ref())?;
    let mut deltas: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    model.visit_lora_layers("", &mut |path, layer| {
        let delta = match layer {
            LoraLayerRef::Linear(l) => l
                .lora
                .as_ref()
                .map(|a| a.delta_weight().transpose().into_data()),
            LoraLayerRef::Conv2d(c) => c.lora.as_ref().map(|a| a.delta_weight().into_data()),
        };
        if let Some(d) = delta {
            let shape = d.shape().to_vec();
            let values = d.convert::<f32>().iter::<f32>().collect();
            deltas.insert(format!("{path}.weight"), (shape, values));
        }
    });
    if deltas.is_empty() {
        return Err(crate::save::no_adapters());
    }
    let mut tensors = BTreeMap::new();
    for (key, t) in &raw.tensors {
        let mut values: Vec<f32> = t.data.iter::<f32>().collect();
        if let Some((shape, delta)) = deltas.remove(key) {
            if shape != t.shape {
                return Err(Error::ShapeMismatch {
                    path: raw.path.clone(),
                    key: key.clone(),
                    expected: shape,
                    found: t.shape.clone(),
                });
            }
            for (w, d) in values.iter_mut().zip(delta) {
                *w += d;
            }
        }
        tensors.insert(key.clone(), F32View::from_values(t.shape.clone(), &values));
    }
    if let Some(key) = deltas.into_keys().next() {
        return Err(Error::UnknownKey {
            path: raw.path,
            key,
            reason: "the model has an adapter on this layer but the base weight file has no \
                     such weight"
                .into(),
        });
    }
    let out = out.as_ref();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_file(out, &tensors, meta)?;
    Ok(out.to_path_buf())
}
