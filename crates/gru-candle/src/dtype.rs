//! The float dtypes a layer computes in, in Candle's, gru-core's and Keras' terms.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
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
    candle_dtype(policy.variable_dtype())
}

/// The dtype a layer with this policy and variables of dtype `variables` computes in: the
/// policy's compute dtype for a mixed policy (`mixed_float16` -> F16, `mixed_bfloat16` ->
/// BF16), otherwise the variables' own dtype.
///
/// ```
/// use candle_core::{DType, Tensor};
/// use gru_core::GruConfig;
/// let mixed = GruConfig::from_keras_str(r#"{"units": 2, "dtype": "mixed_float16"}"#)?;
/// assert_eq!(gru_candle::compute_dtype_of_policy(&mixed.dtype, DType::F32)?, DType::F16);
/// let plain = GruConfig::new(2);
/// assert_eq!(gru_candle::compute_dtype_of_policy(&plain.dtype, DType::F64)?, DType::F64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compute_dtype_of_policy(policy: &DTypePolicy, variables: DType) -> Result<DType> {
    match policy.is_mixed() {
        true => candle_dtype(policy.compute_dtype()),
        false => Ok(variables),
    }
}

/// The Candle dtype of a Keras float dtype name.
fn candle_dtype(name: &str) -> Result<DType> {
    Ok(match name {
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

/// Keras' autocasting of a layer's input inside a model: a float tensor in another dtype is
/// cast to the layer's compute dtype (differentiably); other tensors pass unchanged.
pub(crate) fn autocast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    match x.dtype() == dtype || !x.dtype().is_float() {
        true => Ok(x.clone()),
        false => Ok(x.to_dtype(dtype)?),
    }
}
