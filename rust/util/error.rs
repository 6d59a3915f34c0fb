//! The one error type of the core. The Python binding maps each variant to one exception class.

use std::fmt;

/// Everything that can go wrong in the core, with a message that names the problem.
#[derive(Debug)]
pub enum Error {
    /// A caller passed something invalid (shape, value, parameter).
    InvalidArgument(String),
    /// An id that the index does not hold.
    UnknownId(i64),
    /// A file that is not a rankfunnel index, is truncated, or fails its checksum.
    CorruptFile(String),
    /// A rankfunnel file written by a newer format version.
    UnsupportedVersion { found: u32, supported: u32 },
    /// An operating-system I/O error.
    Io(std::io::Error),
}

/// Result with the core [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => f.write_str(m),
            Error::UnknownId(id) => write!(f, "unknown id {id}: the index does not hold it"),
            Error::CorruptFile(m) => write!(f, "corrupt or foreign index file: {m}"),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "index file format version {found} is newer than this rankfunnel supports \
                 (up to {supported}); upgrade rankfunnel to read it"
            ),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// Shorthand for an [`Error::InvalidArgument`] built with `format!`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::util::error::Error::InvalidArgument(format!($($arg)*)) };
}
