//! The errors of reading, planning and summarising a grid.

use std::path::PathBuf;

/// What can go wrong with a grid file, its output folders or its runs' files; every variant
/// names the file and, where there is one, the key or run.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML (or JSON) is malformed or has an unknown key (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The file (`<string>` when parsed from memory).
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A key of the grid file has a value that does not fit.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        /// The grid file.
        path: PathBuf,
        /// The key, e.g. `axes[1].values` or `quick.axes.seed`.
        key: String,
        /// Why.
        message: String,
    },
    /// `--shard` is not `i/N` with `1 ≤ i ≤ N`.
    #[error("shard `{given}`: {message}")]
    Shard {
        /// What was given.
        given: String,
        /// Why it is refused.
        message: String,
    },
    /// Output folders merged together belong to different grids.
    #[error("{path}: {message}")]
    Mismatch {
        /// The folder whose plan differs.
        path: PathBuf,
        /// How.
        message: String,
    },
}

/// Maps an I/O error to [`GridError::Io`] naming `path`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> GridError {
    let path = path.into();
    move |source| GridError::Io { path, source }
}
