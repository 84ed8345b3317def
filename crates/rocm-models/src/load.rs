//! Strict weight loading through burn-store, shared by the models of this crate.

use std::path::Path;

use burn::store::SafetensorsStore;
use burn::store::{FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter};
use burn::tensor::DType;

use crate::Error;

/// Regex rules from diffusers' key names to Burn field paths where a PyTorch `ModuleList` holds
/// modules of different types (`ff.net = [GEGLU, Dropout, Linear]`).
pub(crate) const DIFFUSERS_REMAP: [(&str, &str); 2] = [
    (r"^(.*)\.ff\.net\.0\.(.+)$", "$1.ff.net_0.$2"),
    (r"^(.*)\.ff\.net\.2\.(.+)$", "$1.ff.net_2.$2"),
];

/// Loads a PyTorch/diffusers safetensors file into `module`: Linear weights transposed, norm
/// `weight`/`bias` renamed `gamma`/`beta`, every float cast to `f32` (fp16 files load), enum
/// variants skipped, `remap` rules applied to the file's keys. Strict: any missing key, unused key
/// or shape error is an [`Error::WeightsMismatch`] naming them.
pub(crate) fn load_safetensors_strict<M: ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    remap: &[(&str, &str)],
) -> Result<(), Error> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .skip_enum_variants(true)
        .allow_partial(true);
    for &(from, to) in remap {
        store = store.with_key_remapping(from, to);
    }
    let result = module.load_from(&mut store).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if result.missing.is_empty() && result.unused.is_empty() && result.errors.is_empty() {
        return Ok(());
    }
    Err(Error::WeightsMismatch {
        path: path.to_path_buf(),
        missing: result.missing.into_iter().map(|(p, _)| p).collect(),
        unused: result.unused,
        errors: result.errors.iter().map(|e| format!("{e:?}")).collect(),
    })
}

/// Reads a file to a string, naming it on failure.
pub(crate) fn read_to_string(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses JSON text into `T`; `path` names the source in errors.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    json: &str,
    path: &Path,
) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|source| Error::ConfigJson {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and parses a JSON file into `T`, naming it on failure.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    parse_json(&read_to_string(path)?, path)
}

/// The weight file of a diffusers model folder: the first of
/// [`DIFFUSERS_WEIGHT_FILES`](crate::DIFFUSERS_WEIGHT_FILES) that exists.
pub(crate) fn find_weights(dir: &Path) -> Result<std::path::PathBuf, Error> {
    crate::DIFFUSERS_WEIGHT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Io {
            path: dir.join(crate::DIFFUSERS_WEIGHT_FILES[0]),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no diffusers weight file"),
        })
}
