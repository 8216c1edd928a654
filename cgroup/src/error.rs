//! The one error type of the crate: every variant carries the path it concerns.

use std::io;
use std::path::{Path, PathBuf};

/// An error reading or parsing a cgroup or /proc file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or its cgroup does not exist (any more): the cgroup was removed, or the process exited.
    #[error("{path}: vanished")]
    Vanished {
        /// The file that could not be opened.
        path: PathBuf,
    },
    /// Any other I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file's text is not in the format the kernel documents.
    #[error("{path}: cannot parse: {reason}")]
    Parse {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong, naming the line or field.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with its path, recognising "gone" errors (ENOENT, ESRCH, ENODEV) as `Vanished`.
    pub fn io(path: &Path, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV) => Error::Vanished {
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// Attaches a path to a parse failure from one of the pure parsers.
    pub fn parse(path: &Path, err: ParseError) -> Self {
        Error::Parse {
            path: path.to_path_buf(),
            reason: err.0,
        }
    }
}

/// A failure of a pure parser: the reason, without a path (the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    /// Builds a parse error from anything printable.
    pub fn new(reason: impl Into<String>) -> Self {
        ParseError(reason.into())
    }
}

/// Result of the crate's I/O functions.
pub type Result<T> = std::result::Result<T, Error>;
