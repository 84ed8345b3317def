//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong in a study: the database, the server, or a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed on the database file.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file (`:memory:` for an in-memory one).
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer or unknown schema.
    #[error("{path}: schema version {found}, this build reads version {expected}")]
    Schema {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The version this build writes.
        expected: i64,
    },
    /// The database holds a different study than the one asked for.
    #[error(
        "{path}: holds another study ({field}: {stored} here, {asked} asked); use another --db"
    )]
    StudyMismatch {
        /// The database file.
        path: PathBuf,
        /// The first field that differs.
        field: &'static str,
        /// Its value in the database.
        stored: String,
        /// Its value in the new specification.
        asked: String,
    },
    /// The database has no study yet.
    #[error("{path}: no study in this database yet (give --a and --b to create one)")]
    NoStudy {
        /// The database file.
        path: PathBuf,
    },
    /// A study without prompts or seeds.
    #[error("a study needs at least one prompt and one seed")]
    EmptyStudy,
    /// Images are still missing for some pairs.
    #[error("{missing} images are not generated yet")]
    MissingImages {
        /// How many.
        missing: usize,
    },
    /// The database's contents break an invariant (a value outside its domain).
    #[error("{path}: corrupt row: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found.
        what: String,
    },
    /// A request that is refused: the status and a message for the page.
    #[error("{message}")]
    Request {
        /// The HTTP status (4xx).
        status: u16,
        /// Why.
        message: String,
    },
    /// Reading or writing a file, or the network.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (the address or file).
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing the CSV export.
    #[error("CSV export: {0}")]
    Csv(#[from] csv::Error),
}

impl Error {
    /// A refused request with `status`.
    pub(crate) fn request(status: u16, message: impl Into<String>) -> Self {
        Self::Request {
            status,
            message: message.into(),
        }
    }
}
