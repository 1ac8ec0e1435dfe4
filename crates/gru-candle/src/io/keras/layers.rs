//! The Keras layers around the GRUs of a loaded model: `Dense`, `Embedding`, and the
//! activation of a `Dense` or `Activation` layer (elementwise, or softmax over the last axis).

use super::train::WeightRule;
use crate::dtype::autocast;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};
use gru_core::{Activation, GruError};
use serde_json::Value;

/// The activation of a `Dense` or `Activation` layer: an elementwise one, or Keras'
/// `softmax` / `log_softmax` over the last axis (their default axis).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerActivation {
    /// An elementwise activation (`linear` for none).
    Elementwise(Activation),
    /// `softmax` over the last axis.
    Softmax,
    /// `log_softmax` over the last axis.
    LogSoftmax,
    /// The `LeakyReLU` layer: `x` above 0, else `slope * x` (Keras 3's `negative_slope`,
    /// Keras 2's `alpha`; default 0.3).
    LeakyRelu(f64),
    /// The `ReLU` layer, Keras' `relu(x, negative_slope, max_value, threshold)`: `x` above
    /// `threshold` (else 0), clipped to `[0, max_value]`, minus
    /// `negative_slope * relu(threshold - x)`.
    Relu {
        /// The most it returns (`None`: no limit).
        max_value: Option<f64>,
        /// The slope below the threshold.
        negative_slope: f64,
        /// Where the identity starts.
        threshold: f64,
    },
    /// The `ELU` layer: `x` above 0, else `alpha * (exp(x) - 1)`.
    Elu(f64),
}

impl LayerActivation {
    /// Reads a layer config's `activation` entry (a name, a serialized function, or null).
    ///
    /// ```
    /// use gru_candle::io::keras::LayerActivation;
    /// let a = LayerActivation::from_keras_value(&serde_json::json!("softmax"))?;
    /// assert_eq!(a, LayerActivation::Softmax);
    /// # Ok::<(), gru_candle::Error>(())
    /// ```
    pub fn from_keras_value(v: &Value) -> Result<LayerActivation> {
        let name = match v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(m) => m.get("config").and_then(Value::as_str),
            _ => None,
        };
        Ok(match name {
            Some("softmax") => LayerActivation::Softmax,
            Some("log_softmax") => LayerActivation::LogSoftmax,
            _ => LayerActivation::Elementwise(Activation::from_keras_value("activation", v)?),
        })
    }

    /// Applies the activation (differentiable).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            LayerActivation::Elementwise(a) => crate::activation::apply(*a, x)?,
            // Composed of differentiable ops (candle-nn's `softmax_last_dim` kernel has no
            // backward: a training loss through it would give no gradient upstream).
            LayerActivation::Softmax => candle_nn::ops::softmax(x, D::Minus1)?,
            LayerActivation::LogSoftmax => candle_nn::ops::log_softmax(x, D::Minus1)?,
            LayerActivation::LeakyRelu(slope) => leaky(x, *slope)?,
            LayerActivation::Elu(alpha) => x.elu(*alpha)?,
            LayerActivation::Relu {
                max_value,
                negative_slope,
                threshold,
            } => relu(x, *max_value, *negative_slope, *threshold)?,
        })
    }
}

/// TensorFlow's `leaky_relu`: `x > 0 ? x : slope * x`.
fn leaky(x: &Tensor, slope: f64) -> candle_core::Result<Tensor> {
    x.gt(0.0)?.where_cond(x, &(x * slope)?)
}

/// Keras 3's `relu` (`activations.ReLU.static_call`), step by step.
fn relu(x: &Tensor, max: Option<f64>, slope: f64, threshold: f64) -> candle_core::Result<Tensor> {
    if slope != 0.0 && max.is_none() && threshold == 0.0 {
        return leaky(x, slope);
    }
    let mut clip = max;
    let mut y = if threshold != 0.0 {
        x.gt(threshold)?.where_cond(x, &x.zeros_like()?)?
    } else if max == Some(6.0) {
        clip = None;
        x.clamp(0.0, 6.0)?
    } else {
        x.relu()?
    };
    if let Some(m) = clip {
        y = y.clamp(0.0, m)?;
    }
    if slope != 0.0 {
        let negative = x.affine(-1.0, threshold)?.relu()?;
        y = (y - (negative * slope)?)?;
    }
    Ok(y)
}

/// A Keras `Dense` layer: `activation(x @ kernel + bias)` on the last axis.
#[derive(Debug)]
pub struct Dense {
    /// (in, out).
    pub kernel: Tensor,
    /// (out,), if `use_bias`.
    pub bias: Option<Tensor>,
    /// The activation.
    pub activation: LayerActivation,
    /// The dtype it computes in: the weights', or a mixed precision policy's half type (the
    /// input and the weights are cast to it, as Keras' autocasting does).
    pub compute_dtype: DType,
    /// `kernel` and `bias` with their regularizers and constraints.
    pub rules: Vec<WeightRule>,
}

impl Dense {
    /// Applies the layer to (..., in).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = autocast(x, self.compute_dtype)?;
        let mut y = x.broadcast_matmul(&autocast(&self.kernel, self.compute_dtype)?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&autocast(b, self.compute_dtype)?)?;
        }
        self.activation.apply(&y)
    }
}

/// A Keras `Embedding` layer: token ids (batch, T) -> rows of `embeddings`
/// (batch, T, output_dim).
#[derive(Debug)]
pub struct Embedding {
    /// (input_dim, output_dim): one row per token id.
    pub embeddings: Tensor,
    /// Keras' `mask_zero`: id 0 is padding, and the layers after it get the mask `ids != 0`.
    pub mask_zero: bool,
    /// The dtype of its output: the weights', or a mixed precision policy's half type.
    pub compute_dtype: DType,
    /// `embeddings` with its regularizer and constraint.
    pub rules: Vec<WeightRule>,
}

impl Embedding {
    /// The rows of the ids (batch, T). The ids come as integers (U8, U32, I64) or as floats
    /// holding whole numbers (Keras casts those to int32); each must lie in
    /// `0..input_dim`: anything else is a typed error, not a silent cast or a wrong row.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = match ids.dims() {
            [b, t] => (*b, *t),
            other => {
                return Err(Error::Gru(GruError::Shape {
                    what: "token ids".into(),
                    expected: "(batch, timesteps)".into(),
                    got: format!("{other:?}"),
                }))
            }
        };
        let rows = self.embeddings.dim(0)?;
        let values: Vec<f64> = ids.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        if let Some(bad) = values
            .iter()
            .find(|v| v.fract() != 0.0 || **v < 0.0 || **v >= rows as f64)
        {
            return Err(Error::Gru(GruError::OutOfRange {
                what: "token id".into(),
                expected: format!("a whole number in 0..{rows} (the Embedding's input_dim)"),
                got: bad.to_string(),
            }));
        }
        let index = Tensor::from_vec(
            values.iter().map(|&v| v as u32).collect::<Vec<u32>>(),
            b * t,
            ids.device(),
        )?;
        let d = self.embeddings.dim(1)?;
        let rows = self
            .embeddings
            .index_select(&index, 0)?
            .reshape((b, t, d))?;
        autocast(&rows, self.compute_dtype)
    }

    /// The mask the layers after it get: `ids != 0` (U8) with `mask_zero`, else none (Keras'
    /// `Embedding.compute_mask`).
    pub fn mask(&self, ids: &Tensor) -> Result<Option<Tensor>> {
        match self.mask_zero {
            true => Ok(Some(ids.ne(0f64)?.to_dtype(DType::U8)?)),
            false => Ok(None),
        }
    }
}

/// A Keras `LayerNormalization` over the last axis: `(x - mean) / sqrt(var + epsilon) *
/// gamma + beta`, the statistics over the features of each step, computed in f32 at least
/// (as Keras does for the half types).
#[derive(Debug)]
pub struct LayerNorm {
    /// (features,), with `scale`.
    pub gamma: Option<Tensor>,
    /// (features,), with `center`.
    pub beta: Option<Tensor>,
    /// Added to the variance.
    pub epsilon: f64,
    /// `gamma` and `beta` with their regularizers and constraints.
    pub rules: Vec<WeightRule>,
}

impl LayerNorm {
    /// Normalizes (..., features) over its last axis.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let xw = x.to_dtype(wide(x.dtype()))?;
        let mean = xw.mean_keepdim(D::Minus1)?;
        let var = xw.broadcast_sub(&mean)?.sqr()?.mean_keepdim(D::Minus1)?;
        let (scale, center) = (self.gamma.as_ref(), self.beta.as_ref());
        Ok(normalize(&xw, &mean, &var, self.epsilon, scale, center)?.to_dtype(x.dtype())?)
    }
}

/// The dtype a normalization computes in: f32 for the half types (as Keras upcasts them),
/// else the input's own.
pub(super) fn wide(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// Keras' (TensorFlow's) normalization given the statistics, in `x`'s dtype:
/// `x * inv + (beta - mean * inv)` with `inv = gamma / sqrt(var + epsilon)`.
pub(super) fn normalize(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    epsilon: f64,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
) -> Result<Tensor> {
    let mut inv = (var + epsilon)?.sqrt()?.recip()?;
    if let Some(g) = gamma {
        inv = inv.broadcast_mul(&g.to_dtype(x.dtype())?)?;
    }
    let mut shift = mean.broadcast_mul(&inv)?.neg()?;
    if let Some(b) = beta {
        shift = shift.broadcast_add(&b.to_dtype(x.dtype())?)?;
    }
    Ok(x.broadcast_mul(&inv)?.broadcast_add(&shift)?)
}

/// Keras' `GlobalAveragePooling1D` and `GlobalMaxPooling1D` (channels_last): (batch, T, f)
/// -> (batch, f), or (batch, 1, f) with `keepdims`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalPooling1D {
    /// Max (`GlobalMaxPooling1D`) or mean (`GlobalAveragePooling1D`).
    pub max: bool,
    /// Keep the time axis (length 1).
    pub keepdims: bool,
}

impl GlobalPooling1D {
    /// Pools over time. The average skips masked steps (the mean over the steps the mask
    /// keeps, as Keras computes it; a row with none gives NaN, as Keras' 0/0); the max
    /// ignores the mask, as Keras' does.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let y = match (self.max, mask) {
            (true, _) => x.max_keepdim(1)?,
            (false, None) => x.mean_keepdim(1)?,
            (false, Some(m)) => {
                let keep = m.to_dtype(x.dtype())?.unsqueeze(2)?;
                let total = x.broadcast_mul(&keep)?.sum_keepdim(1)?;
                total.broadcast_div(&keep.sum_keepdim(1)?)?
            }
        };
        Ok(match self.keepdims {
            true => y,
            false => y.squeeze(1)?,
        })
    }
}

/// Keras' `PReLU`: `x` above 0, else `alpha * x`, with a learned `alpha` of the input's shape
/// after the batch (size 1 along `shared_axes`).
#[derive(Debug)]
pub struct PRelu {
    /// The slopes, broadcast over the batch (and the shared axes).
    pub alpha: Tensor,
    /// `alpha` with its regularizer and constraint.
    pub rules: Vec<WeightRule>,
}

impl PRelu {
    /// Keras' `relu(x) - alpha * relu(-x)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let alpha = autocast(&self.alpha, x.dtype())?;
        let negative = x.neg()?.relu()?.broadcast_mul(&alpha)?;
        Ok((x.relu()? - negative)?)
    }
}
