//! Keras' numeric preprocessing layers that time-series models put before their GRUs:
//! `Normalization` (adapted to data: its `mean`, `variance` and `count` variables; or given
//! its mean and variance in the config, over any kept axes, inverted or not) and
//! `Rescaling` (`x * scale + offset`, scalars or per-feature lists). Both keep the mask.

use super::build::ChainBuilder;
use super::{malformed, unsupported, ModelLayer};
use crate::dtype::autocast;
use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// Keras' `backend.epsilon()`, the least standard deviation `Normalization` divides by.
const EPSILON: f64 = 1e-7;

/// `Normalization`: `(x - mean) / max(sqrt(variance), 1e-7)`, or with `invert`
/// `mean + x * max(sqrt(variance), 1e-7)`.
#[derive(Debug, Clone)]
pub struct Normalization {
    /// The mean, broadcastable to the input (size 1 on the batch and reduced axes).
    pub mean: Tensor,
    /// The variance, shaped as `mean`.
    pub variance: Tensor,
    /// `invert`: undo the normalization.
    pub invert: bool,
    /// The dtype it computes in.
    pub compute_dtype: DType,
}

impl Normalization {
    /// The layer on `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = self.compute_dtype;
        let x = autocast(x, dt)?;
        let mean = autocast(&self.mean, dt)?;
        let std = autocast(&self.variance, dt)?.sqrt()?.maximum(EPSILON)?;
        Ok(match self.invert {
            true => x.broadcast_mul(&std)?.broadcast_add(&mean)?,
            false => x.broadcast_sub(&mean)?.broadcast_div(&std)?,
        })
    }
}

/// `Rescaling`: `x * scale + offset`.
#[derive(Debug, Clone)]
pub struct Rescaling {
    /// The scale, a scalar or broadcastable from the right.
    pub scale: Tensor,
    /// The offset, likewise.
    pub offset: Tensor,
    /// The dtype it computes in.
    pub compute_dtype: DType,
}

impl Rescaling {
    /// The layer on `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = self.compute_dtype;
        let x = autocast(x, dt)?;
        let scale = autocast(&self.scale, dt)?;
        Ok(x.broadcast_mul(&scale)?
            .broadcast_add(&autocast(&self.offset, dt)?)?)
    }
}

/// A number or nested list of numbers from a config: its values and shape.
fn numbers(v: &Value) -> Option<(Vec<f64>, Vec<usize>)> {
    match v {
        Value::Array(items) => {
            let parts: Vec<(Vec<f64>, Vec<usize>)> =
                items.iter().map(numbers).collect::<Option<_>>()?;
            let inner = parts.first().map(|p| p.1.clone()).unwrap_or_default();
            if parts.iter().any(|p| p.1 != inner) {
                return None;
            }
            let shape = [vec![items.len()], inner].concat();
            Some((parts.into_iter().flat_map(|p| p.0).collect(), shape))
        }
        v => v.as_f64().map(|x| (vec![x], Vec::new())),
    }
}

fn tensor_of(values: Vec<f64>, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?)
}

impl ChainBuilder<'_> {
    /// A `Normalization` layer over the tensor the chain carries: its kept axes (`axis`)
    /// must have known sizes; the mean and variance come from its variables (adapted) or
    /// its config.
    pub(super) fn normalization(
        &mut self,
        cfg: &Value,
        group: &str,
        lname: &str,
    ) -> Result<ModelLayer> {
        let src = self.w.source.clone();
        let refuse =
            |what: String| unsupported(&src, format!("layer {lname:?}: Normalization {what}"));
        let rank = self
            .rank
            .ok_or_else(|| refuse("over a tensor of unknown rank".into()))?;
        let axes: Vec<i64> = match &cfg["axis"] {
            Value::Null => Vec::new(),
            Value::Array(a) => a.iter().map(|x| x.as_i64().unwrap_or(i64::MAX)).collect(),
            v => vec![v.as_i64().unwrap_or(i64::MAX)],
        };
        let r = i64::try_from(rank).unwrap_or(i64::MAX);
        let mut keep: Vec<usize> = Vec::new();
        for a in axes {
            let d = if a < 0 { a + r } else { a };
            if d < 1 || d >= r {
                return Err(refuse(format!(
                    "axis {a} of a rank-{rank} input (the batch, or out of range)"
                )));
            }
            keep.push(d as usize);
        }
        keep.sort_unstable();
        keep.dedup();
        let size = |d: usize| match (d + 1 == rank, &self.dims) {
            (true, _) if self.features.is_some() => self.features,
            (_, Some(dims)) => dims.get(d - 1).copied(),
            _ => None,
        };
        let sizes: Vec<usize> = keep
            .iter()
            .map(|&d| size(d).ok_or_else(|| refuse(format!("over axis {d} of unknown size"))))
            .collect::<Result<_>>()?;
        let broadcast: Vec<usize> = (0..rank)
            .map(|d| keep.iter().position(|&k| k == d).map_or(1, |i| sizes[i]))
            .collect();
        let (dt, dev) = (self.dtype, self.device);
        let (mean, variance) = match (&cfg["mean"], &cfg["variance"]) {
            (Value::Null, _) | (_, Value::Null) => {
                let var = |k: usize| format!("{group}/vars/{k}");
                let mean = self.w.tensor(&var(0), &sizes, dt, dev)?.detach();
                let variance = self.w.tensor(&var(1), &sizes, dt, dev)?.detach();
                self.w.int_tensor(&var(2), &[], dev)?;
                (
                    mean.reshape(broadcast.as_slice())?,
                    variance.reshape(broadcast.as_slice())?,
                )
            }
            (m, v) => {
                let given = |v: &Value, what: &str| -> Result<Tensor> {
                    let (values, shape) = numbers(v)
                        .ok_or_else(|| malformed(&src, format!("layer {lname:?}: {what} {v}")))?;
                    // Keras aligns the given dims with the kept axes from the right.
                    if shape.len() > keep.len() {
                        return Err(refuse(format!(
                            "{what} of shape {shape:?} for axes {keep:?}"
                        )));
                    }
                    let mut expanded = vec![1; rank];
                    for (i, &n) in shape.iter().rev().enumerate() {
                        expanded[keep[keep.len() - 1 - i]] = n;
                    }
                    let t = tensor_of(values, &shape, dt, dev)?.reshape(expanded.as_slice())?;
                    Ok(t.broadcast_as(broadcast.as_slice())?.contiguous()?)
                };
                (given(m, "mean")?, given(v, "variance")?)
            }
        };
        Ok(ModelLayer::Normalization(Normalization {
            mean,
            variance,
            invert: cfg["invert"].as_bool().unwrap_or(false),
            compute_dtype: self.compute_dtype(cfg)?,
        }))
    }

    /// A `Rescaling` layer.
    pub(super) fn rescaling(&mut self, cfg: &Value, lname: &str) -> Result<ModelLayer> {
        let (dt, dev) = (self.dtype, self.device);
        let src = self.w.source.clone();
        let value = |key: &str, default: f64| -> Result<Tensor> {
            let v = match &cfg[key] {
                Value::Null => Value::from(default),
                v => v.clone(),
            };
            let (values, shape) = numbers(&v)
                .ok_or_else(|| malformed(&src, format!("layer {lname:?}: Rescaling {key} {v}")))?;
            tensor_of(values, &shape, dt, dev)
        };
        Ok(ModelLayer::Rescaling(Rescaling {
            scale: value("scale", 1.0)?,
            offset: value("offset", 0.0)?,
            compute_dtype: self.compute_dtype(cfg)?,
        }))
    }
}
