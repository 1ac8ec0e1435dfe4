//! The typed errors of gru-core.

use std::fmt;

/// Everything that can go wrong in gru-core: bad configuration, bad shapes, a cuDNN
/// requirement that does not hold. Every variant says what was expected and what came.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GruError {
    /// A configuration value is out of range or of the wrong type.
    InvalidConfig {
        /// The config key (Keras name), e.g. `units`.
        key: String,
        /// What Keras accepts there.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A key Keras' `GRU.from_config` does not accept.
    UnknownConfigKey {
        /// The unknown key.
        key: String,
    },
    /// A required key is missing (e.g. `units`).
    MissingConfigKey {
        /// The missing key.
        key: String,
    },
    /// An identifier (activation, initializer, regularizer, constraint, dtype) that Keras
    /// would not interpret.
    UnknownIdentifier {
        /// What kind of object was being read: "activation", "initializer", ...
        kind: &'static str,
        /// The config key it was read for, e.g. `kernel_initializer`.
        key: String,
        /// The identifier that was not understood.
        got: String,
    },
    /// A tensor or array has the wrong shape.
    Shape {
        /// What the array is, e.g. "inputs" or "initial_state".
        what: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape that came.
        got: String,
    },
    /// A tensor has the wrong dtype.
    DType {
        /// What the tensor is.
        what: String,
        /// The expected dtype.
        expected: String,
        /// The dtype that came.
        got: String,
    },
    /// A stateful layer was called with a batch size other than the one it was built for.
    StatefulBatch {
        /// The batch size the layer keeps state for.
        expected: usize,
        /// The batch size of this call.
        got: usize,
    },
    /// A value is outside the range it must lie in (a sequence length past the sequence,
    /// say).
    OutOfRange {
        /// What the value is.
        what: String,
        /// The range it must lie in.
        expected: String,
        /// What came.
        got: String,
    },
    /// A tensor lives on another device than the layer's weights.
    Device {
        /// What the tensor is.
        what: String,
        /// The device expected.
        expected: String,
        /// The device it is on.
        got: String,
    },
    /// `use_cudnn = Force` but at least one cuDNN condition failed.
    CudnnUnavailable {
        /// Each failed condition with its reason, e.g. "activation: relu is not tanh".
        failed: Vec<String>,
    },
    /// A size (from a config, a file or a call) needs more memory than the limit allows;
    /// nothing was allocated.
    TooLarge {
        /// What would be allocated.
        what: String,
        /// The limit, in words (and how to raise it).
        limit: String,
        /// What it needs.
        needed: String,
    },
    /// An invariant of this crate's own code does not hold (a bug: please report it).
    Internal {
        /// Which invariant, in words.
        what: String,
    },
}

impl fmt::Display for GruError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GruError::InvalidConfig { key, expected, got } => {
                write!(f, "invalid value for `{key}`: expected {expected}, got {got}")
            }
            GruError::UnknownConfigKey { key } => write!(
                f,
                "unrecognized keyword argument passed to GRU: `{key}` (expected one of the GRU constructor arguments)"
            ),
            GruError::MissingConfigKey { key } => {
                write!(f, "missing required GRU argument `{key}`")
            }
            GruError::UnknownIdentifier { kind, key, got } => write!(
                f,
                "could not interpret {kind} identifier for `{key}`: expected a known Keras {kind}, got {got}"
            ),
            GruError::Shape {
                what,
                expected,
                got,
            } => write!(f, "bad shape for {what}: expected {expected}, got {got}"),
            GruError::DType {
                what,
                expected,
                got,
            } => write!(f, "bad dtype for {what}: expected {expected}, got {got}"),
            GruError::StatefulBatch { expected, got } => write!(
                f,
                "stateful GRU keeps state for batch size {expected}, got a batch of {got} (call reset_states on a new layer or use the same batch size)"
            ),
            GruError::OutOfRange {
                what,
                expected,
                got,
            } => write!(f, "{what} out of range: expected {expected}, got {got}"),
            GruError::Device {
                what,
                expected,
                got,
            } => write!(f, "{what} is on the wrong device: expected {expected}, got {got}"),
            GruError::CudnnUnavailable { failed } => write!(
                f,
                "use_cudnn=Force but cuDNN cannot run this call; failed condition(s): {}",
                failed.join("; ")
            ),
            GruError::TooLarge {
                what,
                limit,
                needed,
            } => write!(f, "{what} is too large: expected at most {limit}, got {needed}"),
            GruError::Internal { what } => write!(f, "internal error (a bug): {what}"),
        }
    }
}

impl std::error::Error for GruError {}

/// Shorthand for results in gru-core.
pub type Result<T> = std::result::Result<T, GruError>;

/// Builds an [`GruError::InvalidConfig`].
pub(crate) fn invalid(key: &str, expected: &str, got: impl fmt::Display) -> GruError {
    GruError::InvalidConfig {
        key: key.to_string(),
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

/// A length check: `got` values where `shape` (= `want` values) was expected.
pub(crate) fn check_len(what: &str, got: usize, want: usize, shape: &str) -> Result<()> {
    if got != want {
        return Err(GruError::Shape {
            what: what.to_string(),
            expected: format!("{shape} = {want} values"),
            got: format!("{got} values"),
        });
    }
    Ok(())
}
