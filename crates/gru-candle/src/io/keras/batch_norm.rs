//! Keras' `BatchNormalization` over the last axis: moving statistics at inference, masked
//! batch statistics in training (with the moving statistics updated, as Keras assigns them).

use super::layers::{normalize, wide};
use super::train::WeightRule;
use crate::error::{Error, Result};
use candle_core::{Tensor, Var};
use gru_core::GruError;

/// Keras `BatchNormalization` (last axis): `(x - mean) / sqrt(var + epsilon) * gamma + beta`.
#[derive(Debug)]
pub struct BatchNorm {
    /// (features,), with `scale`.
    pub gamma: Option<Tensor>,
    /// (features,), with `center`.
    pub beta: Option<Tensor>,
    /// (features,): the mean used at inference (a `Var` in a trainable model).
    pub moving_mean: Tensor,
    /// (features,): the variance used at inference (a `Var` in a trainable model).
    pub moving_variance: Tensor,
    /// `momentum` of the moving statistics.
    pub momentum: f64,
    /// Added to the variance.
    pub epsilon: f64,
    /// Keras' `trainable`: a frozen layer runs in inference mode even in training.
    pub trainable: bool,
    /// `gamma` and `beta` with their regularizers and constraints.
    pub rules: Vec<WeightRule>,
}

/// Keras' `backend.epsilon()`, in the masked moments' denominators.
const KERAS_EPSILON: f64 = 1e-7;

impl BatchNorm {
    /// Normalizes (..., features). In training (and `trainable`), with the statistics of
    /// this batch over every axis but the last (the steps a mask keeps only, as Keras), and
    /// moves the moving statistics toward them: `moving * momentum + batch * (1 - momentum)`.
    /// Half types are computed in f32.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, training: bool) -> Result<Tensor> {
        let wide = wide(x.dtype());
        let xw = x.to_dtype(wide)?;
        let (mean, var) = match training && self.trainable {
            true => {
                let (mean, var) = moments(&xw, mask)?;
                self.update(&mean, &var)?;
                (mean, var)
            }
            false => (
                self.moving_mean.detach().to_dtype(wide)?,
                self.moving_variance.detach().to_dtype(wide)?,
            ),
        };
        let (scale, center) = (self.gamma.as_ref(), self.beta.as_ref());
        let y = normalize(&xw, &mean, &var, self.epsilon, scale, center)?;
        Ok(y.to_dtype(x.dtype())?)
    }

    /// Keras' assignment of the moving statistics after a training batch.
    fn update(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        let m = self.momentum;
        for (moving, batch) in [(&self.moving_mean, mean), (&self.moving_variance, var)] {
            if !moving.is_variable() {
                return Err(Error::Gru(GruError::InvalidConfig {
                    key: "BatchNormalization in training".into(),
                    expected: "moving statistics held as Vars (KerasModel::load_trainable)".into(),
                    got: "a model loaded for inference".into(),
                }));
            }
            let batch = batch.detach().to_dtype(moving.dtype())?;
            let next = ((moving.detach() * m)? + (batch * (1.0 - m))?)?;
            Var::from_tensor(moving)?.set(&next)?;
        }
        Ok(())
    }
}

/// The mean and variance of each feature over every other axis; with a (batch, T) mask,
/// over the kept steps only, Keras' weighted form (its epsilon in the denominators).
fn moments(x: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
    let features = x.dims().last().copied().unwrap_or(1);
    let rows = x.reshape(((), features))?;
    let Some(mask) = mask.filter(|_| x.rank() == 3) else {
        let mean = rows.mean(0)?;
        let var = rows.broadcast_sub(&mean)?.sqr()?.mean(0)?;
        return Ok((mean, var));
    };
    let keep = mask.to_dtype(x.dtype())?.reshape(((), 1))?;
    let weight = (keep.sum_all()? + KERAS_EPSILON)?;
    let mean = rows.broadcast_mul(&keep)?.sum(0)?.broadcast_div(&weight)?;
    let diff = rows.broadcast_sub(&mean)?.broadcast_mul(&keep)?;
    let var = diff.sqr()?.sum(0)?.broadcast_div(&weight)?;
    Ok((mean, var))
}
