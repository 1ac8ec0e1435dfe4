//! Errors of the Candle layer: gru-core's typed errors plus Candle's own.

use gru_core::GruError;
use std::fmt;

/// An error from a [`crate::Gru`] call or constructor.
#[derive(Debug)]
pub enum Error {
    /// Bad input, bad config, a failed cuDNN condition under `Force`: says what was expected
    /// and what came.
    Gru(GruError),
    /// An error raised by Candle itself.
    Candle(candle_core::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Gru(e) => write!(f, "{e}"),
            Error::Candle(e) => write!(f, "candle: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Gru(e) => Some(e),
            Error::Candle(e) => Some(e),
        }
    }
}

impl From<GruError> for Error {
    fn from(e: GruError) -> Self {
        Error::Gru(e)
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            Error::Gru(g) => candle_core::Error::wrap(g),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The typed gru-core error, if this is one.
    pub fn as_gru(&self) -> Option<&GruError> {
        match self {
            Error::Gru(g) => Some(g),
            Error::Candle(_) => None,
        }
    }
}
