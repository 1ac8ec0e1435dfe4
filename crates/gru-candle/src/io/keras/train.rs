//! Training a loaded model: the weight regularizers and constraints of the layers around
//! the GRUs (the GRUs keep their own), Keras' `Dropout` and `SpatialDropout1D`, and what a
//! model call takes and returns.

use super::ModelLayer;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use gru_core::{Constraint, GruError, Regularizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::sync::Mutex;

/// A weight of a `Dense`, `Conv1D`, `Embedding`, `LayerNormalization` or
/// `BatchNormalization` layer with its Keras regularizer and constraint
/// (`kernel_regularizer`, `bias_constraint`, ...).
#[derive(Debug, Clone)]
pub struct WeightRule {
    /// The weight's Keras name (`kernel`, `bias`, `embeddings`, `gamma`, `beta`).
    pub name: String,
    /// The weight (the layer's own tensor: a `Var` in a trainable model).
    pub weight: Tensor,
    /// `{name}_regularizer`.
    pub regularizer: Option<Regularizer>,
    /// `{name}_constraint`.
    pub constraint: Option<Constraint>,
}

impl WeightRule {
    /// Reads `{name}_regularizer` and `{name}_constraint` from a layer config.
    pub(super) fn of(cfg: &Value, name: &str, weight: &Tensor) -> Result<WeightRule> {
        let key = |what: &str| format!("{name}_{what}");
        let get = |k: &str| cfg.get(k).cloned().unwrap_or(Value::Null);
        let rk = key("regularizer");
        let ck = key("constraint");
        Ok(WeightRule {
            name: name.to_string(),
            weight: weight.clone(),
            regularizer: Regularizer::from_keras_value(&rk, &get(&rk))?,
            constraint: Constraint::from_keras_value(&ck, &get(&ck))?,
        })
    }

    /// The regularization loss of the weight, if it has a regularizer.
    pub fn loss(&self) -> Result<Option<Tensor>> {
        match &self.regularizer {
            Some(r) => Ok(Some(crate::regularizer::loss(r, &self.weight)?)),
            None => Ok(None),
        }
    }

    /// Applies the constraint in place (the weight must be a `Var`: a trainable model).
    pub fn constrain(&self) -> Result<()> {
        match &self.constraint {
            Some(c) => crate::layer::apply_constraint(&self.name, c, &self.weight),
            None => Ok(()),
        }
    }
}

/// Keras' `Dropout` and `SpatialDropout1D`: the identity outside training; in training each
/// entry (`Dropout`) or each feature of each sample over all steps (`SpatialDropout1D`) is
/// zeroed with probability `rate` and the rest scaled by `1 / (1 - rate)`.
#[derive(Debug)]
pub struct Dropout {
    /// The rate.
    pub rate: f64,
    /// `SpatialDropout1D`: one draw per (sample, feature), shared over time.
    pub spatial: bool,
    rng: Mutex<StdRng>,
}

impl Dropout {
    /// A dropout layer. A `seed` makes its draws reproducible (the stream is not
    /// TensorFlow's); without one they differ per layer and run.
    pub fn new(rate: f64, spatial: bool, seed: Option<u64>) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::Gru(GruError::OutOfRange {
                what: "Dropout rate".into(),
                expected: "0 <= rate <= 1".into(),
                got: rate.to_string(),
            }));
        }
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::seed_from_u64(rand::rng().random()),
        };
        Ok(Dropout {
            rate,
            spatial,
            rng: Mutex::new(rng),
        })
    }

    /// Restarts the layer's random stream at `seed` (as a `seed` in its config).
    pub fn reseed(&self, seed: u64) -> Result<()> {
        crate::dropout::reseed(&self.rng, seed)
    }

    /// Applies the layer to (batch, T, f) or (batch, f).
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        if !training || self.rate == 0.0 {
            return Ok(x.clone());
        }
        if self.rate >= 1.0 {
            return Ok(x.zeros_like()?);
        }
        let dims = x.dims().to_vec();
        let width = dims.last().copied().unwrap_or(1).max(1);
        let rows = match (self.spatial, dims.as_slice()) {
            (true, [b, _, _]) => *b,
            (true, _) => {
                return Err(Error::Gru(GruError::Shape {
                    what: "SpatialDropout1D input".into(),
                    expected: "(batch, timesteps, features)".into(),
                    got: format!("{dims:?}"),
                }))
            }
            (false, _) => x.elem_count() / width,
        };
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| Error::Candle(candle_core::Error::Msg("dropout rng poisoned".into())))?;
        let dev = x.device();
        let mask = crate::dropout::masks(&mut rng, 1, rows, width, self.rate, x.dtype(), dev)?
            .pop()
            .ok_or_else(|| Error::Candle(candle_core::Error::Msg("no dropout mask".into())))?;
        let mask = match self.spatial {
            true => mask.unsqueeze(1)?,
            false => mask.reshape(dims.as_slice())?,
        };
        Ok(x.broadcast_mul(&mask)?)
    }
}

/// The optional arguments of a model call.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelCall<'a> {
    /// (batch, timesteps) u8 mask, when the model's input has no mask of its own.
    pub mask: Option<&'a Tensor>,
    /// Training mode: the GRUs' dropout and the `Dropout` layers act, and trainable
    /// `BatchNormalization` layers use and record the batch's statistics.
    pub training: bool,
}

/// What a model call returns.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// The last layer's outputs.
    pub outputs: Vec<Tensor>,
    /// Every layer's activity regularization loss of this call (Keras: each output's
    /// regularizer divided by its batch size), summed, when any layer has one.
    pub activity_loss: Option<Tensor>,
}

/// The activity loss of a layer's outputs: the regularizer of each, divided by its batch
/// size, summed (Keras' `Layer.__call__`).
pub(super) fn activity_loss(reg: &Regularizer, outputs: &[Tensor]) -> Result<Option<Tensor>> {
    let mut losses = Vec::with_capacity(outputs.len());
    for o in outputs {
        let batch = o.dims().first().copied().unwrap_or(1).max(1) as f64;
        losses.push(Some((crate::regularizer::loss(reg, o)? / batch)?));
    }
    crate::call::sum_losses(losses)
}

/// A zero scalar loss.
pub(super) fn zero_loss(like: &Tensor) -> Result<Tensor> {
    let dtype = match like.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    Ok(Tensor::zeros((), dtype, like.device())?)
}

/// The activity regularizer Keras adds for a layer other than a GRU (a GRU computes its
/// own), a MultiHeadAttention (its projections add theirs) or a nested model (its layers
/// add theirs); `ActivityRegularization`'s is
/// `l1 * sum|x| + l2 * sum x^2`.
pub(super) fn activity_regularizer(l: &Value, layer: &ModelLayer) -> Result<Option<Regularizer>> {
    if matches!(
        layer,
        ModelLayer::Gru(_) | ModelLayer::Model(_) | ModelLayer::MultiHeadAttention(_)
    ) {
        return Ok(None);
    }
    let reg = match l["class_name"].as_str() {
        Some("ActivityRegularization") => serde_json::json!({"class_name": "L1L2", "config": {
            "l1": l["config"]["l1"].as_f64().unwrap_or(0.0),
            "l2": l["config"]["l2"].as_f64().unwrap_or(0.0)}}),
        _ => l["config"]
            .get("activity_regularizer")
            .cloned()
            .unwrap_or(Value::Null),
    };
    Ok(Regularizer::from_keras_value("activity_regularizer", &reg)?)
}
