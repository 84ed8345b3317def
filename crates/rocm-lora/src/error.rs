//! Errors of target selection and adapter-file I/O.

use std::path::PathBuf;

/// Everything that can go wrong while attaching adapters or reading/writing adapter files.
///
/// Every variant names the file and/or key involved, so a message alone tells what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The safetensors container could not be parsed or written.
    #[error("{path}: safetensors: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors crate said.
        message: String,
    },
    /// A JSON file or header entry could not be parsed or written.
    #[error("{path}: JSON ({what}): {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Which document: `adapter_config.json`, the `lora_adapter_metadata` header, ...
        what: String,
        /// What serde_json said.
        message: String,
    },
    /// A key in an adapter file does not name a LoRA factor of a layer of the model.
    #[error("{path}: key `{key}`: {reason}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written in the file.
        key: String,
        /// Why it does not fit (no such layer, not a LoRA key, ...).
        reason: String,
    },
    /// A tensor in a file has the wrong shape for the layer it belongs to.
    #[error("{path}: key `{key}`: shape {found:?} in the file, the model expects {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The key as written in the file.
        key: String,
        /// The shape the layer needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The `lora_A` and `lora_B` of one layer disagree on the rank.
    #[error("{path}: `{key}`: lora_A has rank {rank_a} but lora_B has rank {rank_b}")]
    RankMismatch {
        /// The file.
        path: PathBuf,
        /// The module path.
        key: String,
        /// Rank of `lora_A` (its first dimension).
        rank_a: usize,
        /// Rank of `lora_B` (its second dimension).
        rank_b: usize,
    },
    /// A layer has `lora_A` without `lora_B` or the reverse.
    #[error("{path}: `{key}`: {present} present but {missing} missing")]
    IncompleteAdapter {
        /// The file.
        path: PathBuf,
        /// The module path.
        key: String,
        /// The factor that was found.
        present: &'static str,
        /// The factor that was not.
        missing: &'static str,
    },
    /// A tensor has a dtype that cannot be read as a float.
    #[error("{path}: key `{key}`: unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The dtype in the file.
        dtype: String,
    },
    /// `target_modules` matched no LoRA-capable layer.
    #[error("no layer matches target_modules {targets}; LoRA-capable layers are: {available}")]
    NoTargetMatched {
        /// The targets, as given.
        targets: String,
        /// The first few module paths that could have been chosen.
        available: String,
    },
    /// The regular expression given as target is invalid.
    #[error("invalid target_modules regex `{pattern}`: {message}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// What the regex crate said.
        message: String,
    },
    /// A layer cannot carry a LoRA adapter (e.g. a grouped convolution).
    #[error("`{path}`: {reason}")]
    Unsupported {
        /// The module path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file holds text-encoder adapters, which are not loaded (only the UNet's are).
    #[error(
        "{path}: {count} text-encoder LoRA key(s) such as `{key}`: only UNet adapters load (ROCM keeps \
         the text encoder frozen); load the UNet part alone with TextEncoderKeys::Skip \
         (`--skip-text-encoder`)"
    )]
    TextEncoderAdapters {
        /// The file.
        path: PathBuf,
        /// How many text-encoder keys it has.
        count: usize,
        /// The first of them.
        key: String,
    },
    /// A configuration value is out of range.
    #[error("invalid LoRA configuration: {0}")]
    InvalidConfig(String),
}
