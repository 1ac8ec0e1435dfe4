//! The typed errors of the cuDNN path.

use std::fmt;

/// What went wrong on the cuDNN path. It reaches callers inside a `candle_core::Error::Cuda`
/// (the path runs as a Candle custom op); use [`CudnnError::find`] to get it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudnnError {
    /// A cuDNN call returned a status other than `CUDNN_STATUS_SUCCESS`.
    Status {
        /// The C function, e.g. `cudnnRNNForward`.
        call: &'static str,
        /// The status name, e.g. `CUDNN_STATUS_BAD_PARAM`.
        status: String,
        /// cuDNN's own last error message, when it gave one.
        message: String,
    },
    /// cuDNN reported a weight-space layout other than the one the path was written for.
    Layout {
        /// What was looked at (e.g. `linear layer 3 matrix`).
        what: String,
        /// What the path expects.
        expected: String,
        /// What cuDNN said.
        got: String,
    },
    /// A tensor given to the op does not have the shape, dtype, device or layout it needs.
    Input {
        /// Which input.
        what: String,
        /// What was expected.
        expected: String,
        /// What came.
        got: String,
    },
    /// A mask row is all False: cuDNN cannot run a sequence of length 0.
    EmptyRow {
        /// The first such row.
        row: usize,
    },
}

impl CudnnError {
    /// Finds a `CudnnError` inside a Candle error (through `Wrapped` and `Context` layers).
    pub fn find(err: &candle_core::Error) -> Option<&CudnnError> {
        match err {
            candle_core::Error::Cuda(inner) => inner.downcast_ref::<CudnnError>(),
            candle_core::Error::WrappedContext { wrapped, .. } => {
                wrapped.downcast_ref::<CudnnError>()
            }
            candle_core::Error::WithBacktrace { inner, .. } => Self::find(inner),
            candle_core::Error::Context { inner, .. } => Self::find(inner),
            _ => None,
        }
    }
}

impl fmt::Display for CudnnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudnnError::Status {
                call,
                status,
                message,
            } => {
                write!(f, "{call} failed with {status}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            CudnnError::Layout {
                what,
                expected,
                got,
            } => write!(
                f,
                "cuDNN weight space: {what}: expected {expected}, cuDNN reports {got}"
            ),
            CudnnError::Input {
                what,
                expected,
                got,
            } => write!(f, "cuDNN GRU op: {what}: expected {expected}, got {got}"),
            CudnnError::EmptyRow { row } => write!(
                f,
                "mask row {row} is all False: cuDNN needs every sequence length >= 1"
            ),
        }
    }
}

impl std::error::Error for CudnnError {}

impl From<CudnnError> for candle_core::Error {
    fn from(e: CudnnError) -> Self {
        candle_core::Error::Cuda(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_through_candle_wrapping_and_context() {
        let e: candle_core::Error = CudnnError::EmptyRow { row: 3 }.into();
        assert_eq!(CudnnError::find(&e), Some(&CudnnError::EmptyRow { row: 3 }));
        let e = e.context("while running the GRU");
        assert_eq!(CudnnError::find(&e), Some(&CudnnError::EmptyRow { row: 3 }));
        assert!(e.to_string().contains("mask row 3 is all False"), "{e}");
        let other = candle_core::Error::Msg("x".into());
        assert_eq!(CudnnError::find(&other), None);
    }

    #[test]
    fn status_message_names_the_call() {
        let e = CudnnError::Status {
            call: "cudnnRNNForward",
            status: "CUDNN_STATUS_BAD_PARAM".into(),
            message: "seqLengthArray[2] = 0".into(),
        };
        assert_eq!(
            e.to_string(),
            "cudnnRNNForward failed with CUDNN_STATUS_BAD_PARAM: seqLengthArray[2] = 0"
        );
    }
}
