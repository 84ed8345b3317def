//! Errors of configuration, training and checkpoint I/O.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, running or checkpointing a ROCM run.
///
/// Every variant names the file, field or training step involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A TOML configuration could not be parsed (the message names the offending field).
    #[error("{path}: {message}")]
    Config {
        /// The configuration file (`<string>` when parsed from memory).
        path: PathBuf,
        /// What the parser said, e.g. ``unknown field `lerning_rate`, expected one of …``.
        message: String,
    },
    /// A [`crate::TrainerBuilder`] was not given a required part.
    #[error("trainer builder: no {0}: call `.{call}`", call = .0.call())]
    MissingPart(crate::MissingPart),
    /// A configuration value is out of range.
    #[error("invalid configuration field `{field}`: {message}")]
    InvalidField {
        /// The field's name in the TOML file.
        field: &'static str,
        /// Why the value is rejected.
        message: String,
    },
    /// A weight, latent, reward, the loss or the gradient norm became NaN or infinite; the run
    /// stopped before updating (the earliest culprit is named: [`crate::NonFiniteValue`]).
    #[error(
        "training step {step}: {what} is not finite ({value}); the last good checkpoint is kept"
    )]
    NonFinite {
        /// The 1-based training iteration that failed.
        step: usize,
        /// Which quantity: a weight (by path), a latent, a reward, the loss, the grad norm.
        what: crate::NonFiniteValue,
        /// Its value.
        value: f64,
    },
    /// The sampler refused the run (bad options or noise).
    #[error("training step {step}: sampler: {source}")]
    Sampler {
        /// The 1-based training iteration.
        step: usize,
        /// What the sampler said.
        #[source]
        source: rocm_sampler::Error,
    },
    /// Writing or reading the LoRA adapter file failed.
    #[error("LoRA adapters: {0}")]
    Lora(#[from] rocm_lora::Error),
    /// Writing or reading a Burn record (adapter parameters or optimizer state) failed.
    #[error("{path}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What burn-store said.
        message: String,
    },
    /// A checkpoint's `state.json` or a metrics line could not be (de)serialised.
    #[error("{path}: JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde_json said.
        message: String,
    },
    /// A checkpoint does not fit the run it is resumed into.
    #[error("{path}: cannot resume: {message}")]
    Resume {
        /// The checkpoint directory.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
    /// A replica of a data-parallel run failed (its error or panic); the run stops.
    #[error("replica {rank}: {message}")]
    Replica {
        /// The rank (0 is the main replica).
        rank: usize,
        /// What went wrong there.
        message: String,
    },
    /// Images that cannot be written as 8-bit RGB.
    #[error("{path}: images of shape {dims:?} are not [B, 3, H, W]")]
    ImageShape {
        /// The file or folder that was to be written.
        path: PathBuf,
        /// The tensor's shape.
        dims: [usize; 4],
    },
}

/// `Error::Io` for `path`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
