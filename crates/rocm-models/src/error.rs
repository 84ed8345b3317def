//! The crate's error type: everything that can go wrong reading model folders, configs and weights.

use std::path::PathBuf;

/// Errors from loading configs and weights. Each variant names the file, key or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `config.json` is not valid JSON or does not have the expected fields.
    #[error("invalid config {path}: {source}")]
    ConfigJson {
        /// The file (or `<string>` for in-memory JSON).
        path: PathBuf,
        /// The parse error (names the line, column and field).
        source: serde_json::Error,
    },
    /// A config field has a value this port does not support.
    #[error("unsupported config value in {path}: field `{field}` = {value} ({reason})")]
    UnsupportedConfig {
        /// The file (or `<string>`).
        path: PathBuf,
        /// The upstream field name.
        field: String,
        /// The offending value.
        value: String,
        /// What is supported instead.
        reason: String,
    },
    /// A weight file does not match the model: keys missing from the file, keys of the file that
    /// the model has no parameter for, or tensors that could not be applied (shape mismatch).
    #[error(
        "weights {path} do not match the model: missing {missing:?}, unused {unused:?}, errors {errors:?}"
    )]
    WeightsMismatch {
        /// The weight file.
        path: PathBuf,
        /// Model parameters not found in the file.
        missing: Vec<String>,
        /// File keys the model has no parameter for.
        unused: Vec<String>,
        /// Tensors that were found but could not be applied (shape or dtype).
        errors: Vec<String>,
    },
    /// The weight file could not be opened or parsed by burn-store.
    #[error("cannot load weights {path}: {message}")]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// burn-store's message.
        message: String,
    },
    /// A tokenizer folder or file could not be loaded, or a text could not be encoded.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file or folder (`<memory>` for in-memory data).
        path: PathBuf,
        /// What went wrong (the tokenizers crate's message, or the missing file or token).
        message: String,
    },
    /// Files of a Hugging Face hub repository are not in the local cache (and were not downloaded).
    #[error(
        "{repo_id} (revision {revision}): {files:?} not found in the Hugging Face cache {cache}; \
         download them with:\n  {command}"
    )]
    HubFilesMissing {
        /// The repository id, `Org/Name`.
        repo_id: String,
        /// The revision looked up (`main` by default).
        revision: String,
        /// The hub cache root (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`).
        cache: PathBuf,
        /// The repository-relative paths that are missing.
        files: Vec<String>,
        /// A `huggingface-cli download` command that fetches exactly these files into the cache.
        command: String,
    },
    /// A "name or path" ([`crate::hub::model_dir`]) that is neither an existing folder nor a hub
    /// repository id (`org/name`, [`crate::hub::is_repo_id`]).
    #[error(
        "`{name}` is neither an existing folder (no such directory) nor a Hugging Face hub \
         repository id (`org/name`)"
    )]
    NotFolderOrRepoId {
        /// The string as given.
        name: String,
    },
    /// A string given as a hub repository id ([`crate::hub::resolve`]) that is not `org/name`.
    #[error("`{repo_id}` is not a Hugging Face hub repository id (`org/name`)")]
    InvalidRepoId {
        /// The string as given.
        repo_id: String,
    },
    /// Downloading a file from the hub failed (only with the `download` feature).
    #[error("downloading {file} from {repo_id}: {message}")]
    HubDownload {
        /// The repository id.
        repo_id: String,
        /// The repository-relative path.
        file: String,
        /// hf-hub's message.
        message: String,
    },
}
