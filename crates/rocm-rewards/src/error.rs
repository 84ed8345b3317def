//! The crate's error type: loading reward heads, backbones and tokenizers.

use std::path::PathBuf;

/// Errors from building a reward. Each variant names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model folder, config, tokenizer or weight file of the backbone (see [`rocm_models::Error`]).
    #[error(transparent)]
    Models(#[from] rocm_models::Error),
    /// A weight file could not be read or does not match the module.
    #[error("weights {path}: {message}")]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// burn-store's message, or the missing / unused keys.
        message: String,
    },
    /// A reward name or setting is not known.
    #[error("unknown reward setting `{value}` ({reason})")]
    Setting {
        /// The offending value.
        value: String,
        /// What is accepted.
        reason: String,
    },
}
