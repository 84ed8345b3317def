//! Low-level safetensors reading/writing (f32 out; f16/bf16/f64/i64/i32 in, cast to f32) and the
//! adapter key spellings.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use safetensors::{Dtype, SafeTensors, View};

use crate::Error;

/// One tensor read from a file, as f32.
#[derive(Debug, Clone)]
pub(crate) struct RawTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// A whole safetensors file: tensors by key and the header's `__metadata__`.
#[derive(Debug)]
pub(crate) struct RawFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, RawTensor>,
    pub metadata: HashMap<String, String>,
}

fn st_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Read a safetensors file, casting every float (and i64/i32) tensor to f32.
pub(crate) fn read_file(path: &Path) -> Result<RawFile, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| st_err(path, e))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| st_err(path, e))?;
    let mut tensors = BTreeMap::new();
    for (key, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            // kohya `.alpha` scalars are sometimes integers (diffusers' converter writes int64).
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            other => {
                return Err(Error::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key,
                    dtype: format!("{other:?}"),
                });
            }
        };
        let shape = view.shape().to_vec();
        let data = TensorData::from_bytes_vec(view.data().to_vec(), shape.clone(), dtype)
            .convert_dtype(DType::F32);
        tensors.insert(key, RawTensor { shape, data });
    }
    Ok(RawFile {
        path: path.to_path_buf(),
        tensors,
        metadata,
    })
}

/// An f32 tensor ready to be written.
pub(crate) struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl F32View {
    pub(crate) fn new(data: TensorData) -> Self {
        let data = data.convert_dtype(DType::F32);
        let shape = data.shape().to_vec();
        let bytes = data
            .iter::<f32>()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>();
        Self { shape, bytes }
    }

    /// A tensor of `shape` (`[]` for a scalar) holding `values`, row-major.
    pub(crate) fn from_values(shape: Vec<usize>, values: &[f32]) -> Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self { shape, bytes }
    }
}

impl View for &F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Write tensors (sorted by key) with header metadata, atomically and durably
/// ([`crate::publish`]): an interrupted write leaves the previous file or none.
pub(crate) fn write_file(
    path: &Path,
    tensors: &BTreeMap<String, F32View>,
    metadata: HashMap<String, String>,
) -> Result<(), Error> {
    crate::publish::publish(path, |tmp| {
        // safetensors writes through a temporary of its own, created 0600: keep the mode an
        // ordinary new file gets (0666 less the umask).
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::File::create(tmp)
            .and_then(|f| f.metadata())
            .map_err(io)?
            .permissions();
        safetensors::serialize_to_file(tensors.iter(), Some(metadata), tmp)
            .map_err(|e| st_err(path, e))?;
        std::fs::set_permissions(tmp, mode).map_err(io)
    })
}

/// Which factor a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Factor {
    /// `lora_A` / `lora.down`.
    A,
    /// `lora_B` / `lora.up`.
    B,
    /// A per-module `alpha` scalar (kohya / old diffusers `network_alphas`).
    Alpha,
}

/// Suffixes of LoRA keys, new spellings first.
const SUFFIXES: [(&str, Factor); 11] = [
    (".lora_A.weight", Factor::A),
    (".lora_B.weight", Factor::B),
    (".lora_A.default.weight", Factor::A),
    (".lora_B.default.weight", Factor::B),
    (".lora.down.weight", Factor::A),
    (".lora.up.weight", Factor::B),
    (".lora_down.weight", Factor::A),
    (".lora_up.weight", Factor::B),
    (".alpha", Factor::Alpha),
    // diffusers' old attention-processor layout: `<attn>.processor.to_q_lora.down.weight`.
    ("_lora.down.weight", Factor::A),
    ("_lora.up.weight", Factor::B),
];

/// The layer of an attention-processor LoRA (`<attn>.processor.to_q` → `<attn>.to_q`,
/// `<attn>.processor.to_out` → `<attn>.to_out.0`).
fn processor_module(module: &str) -> Option<String> {
    let (attn, proj) = module.rsplit_once(".processor.")?;
    let layer = match proj {
        "to_q" | "to_k" | "to_v" => proj,
        "to_out" => "to_out.0",
        _ => return None,
    };
    Some(format!("{attn}.{layer}"))
}

/// How a file key relates to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParsedKey {
    /// A factor of the layer at this module path.
    Lora(String, Factor),
    /// A key of another pipeline component (`text_encoder.*`), not ours to load.
    OtherComponent,
    /// Not a LoRA key at all.
    NotLora,
}

/// Parse a key: strip `base_model.model.` and `<prefix>.` (e.g. `unet.`), then the factor suffix.
pub(crate) fn parse_key(key: &str, prefix: &str) -> ParsedKey {
    let k = key.strip_prefix("base_model.model.").unwrap_or(key);
    let k = match k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
        Some(rest) if !prefix.is_empty() => rest,
        _ if k.starts_with("text_encoder") => return ParsedKey::OtherComponent,
        _ => k,
    };
    for (suffix, factor) in SUFFIXES {
        let Some(module) = k.strip_suffix(suffix).filter(|m| !m.is_empty()) else {
            continue;
        };
        if suffix.starts_with("_lora.") {
            return processor_module(module)
                .map_or(ParsedKey::NotLora, |m| ParsedKey::Lora(m, factor));
        }
        return ParsedKey::Lora(module.to_string(), factor);
    }
    ParsedKey::NotLora
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_spellings() {
        let p = |k| parse_key(k, "unet");
        let a = |m: &str| ParsedKey::Lora(m.into(), Factor::A);
        let b = |m: &str| ParsedKey::Lora(m.into(), Factor::B);
        assert_eq!(p("unet.attn1.to_q.lora_A.weight"), a("attn1.to_q"));
        assert_eq!(
            p("base_model.model.attn1.to_out.0.lora_B.weight"),
            b("attn1.to_out.0")
        );
        assert_eq!(p("attn1.to_q.lora.down.weight"), a("attn1.to_q"));
        assert_eq!(p("unet.attn1.to_q.lora.up.weight"), b("attn1.to_q"));
        assert_eq!(p("attn1.to_q.lora_A.default.weight"), a("attn1.to_q"));
        assert_eq!(
            p("unet.conv1.alpha"),
            ParsedKey::Lora("conv1".into(), Factor::Alpha)
        );
        assert_eq!(
            p("text_encoder.layers.0.q_proj.lora_A.weight"),
            ParsedKey::OtherComponent
        );
        assert_eq!(p("unet.attn1.to_q.weight"), ParsedKey::NotLora);
        assert_eq!(
            p("unet.mid.attn1.processor.to_q_lora.down.weight"),
            a("mid.attn1.to_q")
        );
        assert_eq!(
            p("mid.attn2.processor.to_out_lora.up.weight"),
            b("mid.attn2.to_out.0")
        );
        assert_eq!(
            p("mid.attn2.processor.add_q_lora.up.weight"),
            ParsedKey::NotLora
        );
        assert_eq!(p("mid.to_q_lora.up.weight"), ParsedKey::NotLora);
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = std::env::temp_dir().join(format!("rocm-lora-st-{}", std::process::id()));
        let path = dir.join("t.safetensors");
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "x".to_string(),
            F32View::new(TensorData::new(vec![1.0f32, -2.5, 3.25], [3, 1])),
        );
        tensors.insert(
            "h".to_string(),
            F32View::new(TensorData::new(vec![0.5f32, 2.0], [2]).convert_dtype(DType::F16)),
        );
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_file(&path, &tensors, meta).unwrap();
        let file = read_file(&path).unwrap();
        assert_eq!(file.metadata.get("format").map(String::as_str), Some("pt"));
        let x = &file.tensors["x"];
        assert_eq!(x.shape, [3, 1]);
        assert_eq!(
            x.data.clone().try_into_vec::<f32>().unwrap(),
            [1.0, -2.5, 3.25]
        );
        assert_eq!(
            file.tensors["h"]
                .data
                .clone()
                .try_into_vec::<f32>()
                .unwrap(),
            [0.5, 2.0]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
