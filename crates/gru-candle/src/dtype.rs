//! The float dtypes a layer computes in, in Candle's, gru-core's and Keras' terms.

use crate::error::{Error, Result};
use candle_core::DType;
use gru_core::{DTypePolicy, FloatType, GruError};

/// gru-core's name for a Candle dtype.
pub(crate) fn float_type(dtype: DType) -> FloatType {
    match dtype {
        DType::F16 => FloatType::F16,
        DType::BF16 => FloatType::BF16,
        DType::F32 => FloatType::F32,
        DType::F64 => FloatType::F64,
        _ => FloatType::Other,
    }
}

/// `what` must be a float dtype (f16, bf16, f32, f64).
pub(crate) fn require_float(what: &str, dtype: DType) -> Result<()> {
    match float_type(dtype) {
        FloatType::Other => Err(Error::Gru(GruError::DType {
            what: what.to_string(),
            expected: "a float dtype (f16, bf16, f32, f64)".into(),
            got: format!("{dtype:?}"),
        })),
        _ => Ok(()),
    }
}

/// The Candle dtype of a Keras dtype policy's variables (`"float64"` -> F64, mixed policies
/// -> F32).
///
/// ```
/// use gru_core::GruConfig;
/// let cfg = GruConfig::from_keras_str(r#"{"units": 2, "dtype": "float64"}"#)?;
/// assert_eq!(gru_candle::dtype_of_policy(&cfg.dtype)?, candle_core::DType::F64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn dtype_of_policy(policy: &DTypePolicy) -> Result<DType> {
    Ok(match policy.variable_dtype() {
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float32" => DType::F32,
        "float64" => DType::F64,
        other => {
            return Err(Error::Gru(GruError::DType {
                what: "dtype policy".into(),
                expected: "float16, bfloat16, float32 or float64".into(),
                got: other.to_string(),
            }))
        }
    })
}
