//! Pure parsers, one per kernel file format: `&str -> Result<T, ParseError>`. No I/O here; every
//! parser is tested on fixture text captured from real v1 and v2 kernels and must never panic.

pub mod cgroupfs;
pub mod cpulist;
pub mod host;
pub mod mountinfo;
pub mod proc_pid;

use crate::error::ParseError;

/// Result of a pure parser.
pub type ParseResult<T> = Result<T, ParseError>;

/// Parses one unsigned decimal number, naming `what` in the error.
pub(crate) fn number(token: &str, what: &str) -> ParseResult<u64> {
    token.parse::<u64>().map_err(|_| {
        ParseError::new(format!(
            "{what}: expected an unsigned number, got {token:?}"
        ))
    })
}
