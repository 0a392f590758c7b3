//! The crate's one error type. `python.rs` maps each variant to a Python
//! exception, so every failure reaches the user as an exception, never a panic.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// Bad data or arguments from the caller (Python: `fer.FerValueError`, a ValueError).
    InvalidInput(String),
    /// A model file or spec that cannot be read (Python: `fer.ModelFileError`, a ValueError).
    Format(String),
    /// A tensor operation failed inside candle.
    Candle(candle_core::Error),
    Io(std::io::Error),
    /// A worker thread panicked; caught so it never crosses into Python.
    Panic(String),
    /// The user pressed Ctrl-C; the bindings re-raise the pending KeyboardInterrupt.
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
    pub fn format(msg: impl Into<String>) -> Self {
        Error::Format(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) | Error::Format(m) => f.write_str(m),
            Error::Candle(e) => write!(f, "tensor error: {e}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Panic(m) => write!(f, "internal error (panic): {m}"),
            Error::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for Error {}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
