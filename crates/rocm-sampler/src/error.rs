//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong before a tensor is touched: bad options, bad noise, bad configs.
///
/// The sampler validates its inputs up front and returns one of these instead of panicking inside
/// a tensor operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step count of zero.
    #[error("the number of inference steps must be at least 1, got 0")]
    ZeroSteps,
    /// More inference steps than the distillation schedule has.
    #[error(
        "{steps} inference steps requested, but the LCM schedule only has \
         original_inference_steps = {original} timesteps to choose from"
    )]
    TooManySteps {
        /// Requested steps `K`.
        steps: usize,
        /// `original_inference_steps` of the scheduler.
        original: usize,
    },
    /// `original_inference_steps` is zero or above `num_train_timesteps`.
    #[error(
        "original_inference_steps = {original} must be in 1..={num_train_timesteps} (num_train_timesteps)"
    )]
    BadOriginalSteps {
        /// `original_inference_steps`.
        original: usize,
        /// `num_train_timesteps`.
        num_train_timesteps: usize,
    },
    /// A custom timestep list that is empty, not strictly descending, or out of range.
    #[error("invalid custom timesteps {timesteps:?}: {reason}")]
    BadTimesteps {
        /// The list as given.
        timesteps: Vec<usize>,
        /// What is wrong with it.
        reason: String,
    },
    /// A noise schedule that cannot be built.
    #[error("invalid noise schedule: {0}")]
    BadSchedule(String),
    /// Noise whose shapes or count do not match the run.
    #[error("invalid sampler noise: {0}")]
    BadNoise(String),
    /// Options that contradict each other or the model.
    #[error("invalid sampler options: {0}")]
    BadOptions(String),
    /// A gradient path was asked for on tensors without autodiff.
    #[error(
        "gradients need autodiff tensors: create the model and the noise on `device.autodiff()` ({0})"
    )]
    NotAutodiff(String),
    /// A scheduler config file could not be read.
    #[error("cannot read scheduler config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A scheduler config value that is out of range or unsupported.
    #[error("scheduler config {origin}: `{key}` {reason}")]
    BadConfig {
        /// The file name, or `<string>` / `<config>`.
        origin: String,
        /// The offending key, as in `scheduler_config.json`.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A scheduler config could not be parsed.
    #[error("cannot parse scheduler config {origin}: {source}")]
    Json {
        /// The file name, or `<string>`.
        origin: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_values() {
        let e = Error::TooManySteps {
            steps: 60,
            original: 50,
        };
        let msg = e.to_string();
        assert!(msg.contains("60") && msg.contains("50"), "{msg}");
        let e = Error::BadTimesteps {
            timesteps: vec![5, 7],
            reason: "not descending".into(),
        };
        assert!(e.to_string().contains("[5, 7]"));
    }
}
