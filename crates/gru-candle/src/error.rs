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
    /// A model or weight file that cannot be used.
    File {
        /// The file (or archive member).
        path: String,
        /// What is wrong with it.
        problem: FileProblem,
    },
}

/// What is wrong with a model or weight file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileProblem {
    /// It cannot be read (missing, permissions, truncated, not the expected format).
    Unreadable(String),
    /// A variable or member the model needs is absent.
    Missing(String),
    /// A variable has the wrong shape.
    Shape {
        /// The variable.
        name: String,
        /// Its expected shape.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A layer, class or structure this crate does not run.
    Unsupported(String),
    /// It cannot be written (the folder, permissions, a full disk, an encoder's refusal).
    Unwritable(String),
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Unreadable(why) => write!(f, "cannot be read: {why}"),
            FileProblem::Unwritable(why) => write!(f, "cannot be written: {why}"),
            FileProblem::Missing(what) => write!(f, "missing {what}"),
            FileProblem::Shape {
                name,
                expected,
                got,
            } => write!(
                f,
                "variable {name}: expected shape {expected:?}, got {got:?}"
            ),
            FileProblem::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Gru(e) => write!(f, "{e}"),
            Error::Candle(e) => write!(f, "candle: {e}"),
            Error::File { path, problem } => write!(f, "{path}: {problem}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Gru(e) => Some(e),
            Error::Candle(e) => Some(e),
            Error::File { .. } => None,
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
            file @ Error::File { .. } => candle_core::Error::msg(file),
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
            _ => None,
        }
    }
}

/// Builds an [`Error::File`].
pub(crate) fn file_error(path: impl Into<String>, problem: FileProblem) -> Error {
    Error::File {
        path: path.into(),
        problem,
    }
}
