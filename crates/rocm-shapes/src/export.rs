//! Writing Burn modules as PyTorch-layout safetensors files (what diffusers' and transformers'
//! `from_pretrained` read): Linear weights back to `[out, in]`, norm `gamma`/`beta` back to
//! `weight`/`bias`, floats stored as f16 or f32, metadata `{"format": "pt"}`.

use std::collections::HashMap;
use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::Error;

/// How floats are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// IEEE half precision (the shipped models).
    F16,
    /// Single precision (training checkpoints).
    F32,
}

/// An extra tensor written beside a module's own (such as `CLIPModel`'s `logit_scale`).
#[derive(Debug, Clone)]
pub struct ExtraTensor {
    /// The key.
    pub name: String,
    /// The values, row-major.
    pub values: Vec<f32>,
    /// The shape (`[]` for a scalar).
    pub shape: Vec<usize>,
}

/// The safetensors bytes of `module` in PyTorch layout, with `extra` tensors, floats as `storage`,
/// each module key passed through `rename`.
pub fn module_bytes<M: ModuleSnapshot>(
    module: &M,
    extra: &[ExtraTensor],
    storage: Storage,
    rename: &dyn Fn(&str) -> String,
    name: &Path,
) -> Result<Vec<u8>, Error> {
    let err = |message: String| Error::Weights {
        path: name.to_path_buf(),
        message,
    };
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter);
    module
        .save_into(&mut store)
        .map_err(|e| err(format!("collecting the module's tensors: {e}")))?;
    let raw = store
        .get_bytes()
        .map_err(|e| err(format!("serialising: {e}")))?;
    let parsed = SafeTensors::deserialize(&raw).map_err(|e| err(format!("re-reading: {e}")))?;
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, view) in parsed.tensors() {
        let key = rename(&key);
        let shape = view.shape().to_vec();
        if view.dtype() == Dtype::F32 {
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let (dtype, bytes) = encode(&values, storage);
            owned.push((key, dtype, shape, bytes));
        } else {
            owned.push((key, view.dtype(), shape, view.data().to_vec()));
        }
    }
    for t in extra {
        let (dtype, bytes) = encode(&t.values, storage);
        owned.push((t.name.clone(), dtype, t.shape.clone(), bytes));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (key, dtype, shape, bytes) in &owned {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| err(format!("tensor `{key}`: {e}")))?;
        views.push((key.clone(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| err(format!("writing: {e}")))
}

/// Writes `module` (and `extra`) to the safetensors file `path` (see [`module_bytes`]).
pub fn save_module<M: ModuleSnapshot>(
    module: &M,
    extra: &[ExtraTensor],
    storage: Storage,
    path: &Path,
) -> Result<(), Error> {
    let bytes = module_bytes(module, extra, storage, &|k| k.to_string(), path)?;
    crate::io::write(path, &bytes)
}

fn encode(values: &[f32], storage: Storage) -> (Dtype, Vec<u8>) {
    match storage {
        Storage::F32 => (
            Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        Storage::F16 => (
            Dtype::F16,
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    }
}

/// Rounds every value through f16 and back (what a model saved as [`Storage::F16`] computes with).
pub fn round_to_f16(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|v| half::f16::from_f32(*v).to_f32())
        .collect()
}
