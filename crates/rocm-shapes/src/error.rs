//! The crate's error type. Every variant names the file, key or setting at fault.

use std::path::PathBuf;

/// Errors from writing and loading the world's models and from the training stages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file is invalid or lacks a field.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A safetensors file could not be written, or is not what the world's models expect.
    #[error("{path}: {message}")]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What is wrong (the key at fault, or the safetensors or burn-store message).
        message: String,
    },
    /// A model folder failed to load through rocm-models.
    #[error(transparent)]
    Models(#[from] rocm_models::Error),
    /// A pipeline folder failed to load or to sample through rocm-models.
    #[error(transparent)]
    Pipeline(#[from] rocm_models::PipelineError),
    /// A reward failed to load through rocm-rewards.
    #[error(transparent)]
    Rewards(#[from] rocm_rewards::Error),
    /// A setting is out of range or unknown.
    #[error("invalid {name} `{value}`: {reason}")]
    Setting {
        /// The setting.
        name: String,
        /// The offending value.
        value: String,
        /// What is accepted.
        reason: String,
    },
}
