//! Keras 3's `MultiHeadAttention` over sequences (batch, T, features), as GRU encoders and
//! decoders use it: query, key and value projected to `num_heads` heads, scaled
//! dot-product attention per head under the mask Keras builds (the query's, value's and
//! key's masks, the causal mask, an `attention_mask` tensor), the heads projected back.
//!
//! Keras takes one of two paths, and they differ where a query sees no value: without
//! dropout and returned scores it calls `dot_product_attention` (masked scores set to
//! `-0.7 * 3.38953e38`, so such a query attends uniformly); otherwise it builds the scores
//! itself (masked scores set to `-1e9`, weights of masked pairs zeroed, so such a query
//! gets zeros before the output projection). Both are reproduced.

use super::build::ChainBuilder;
use super::build_layers::rules;
use super::graph::{Inbound, MaskState, TensorState};
use super::train::{activity_loss, Dropout, WeightRule};
use super::{malformed, unsupported, ModelLayer};
use crate::dtype::autocast;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};
use gru_core::{GruError, Regularizer};
use serde_json::Value;

/// One of the layer's projections (Keras' `EinsumDense` sublayers): `kernel` in Keras'
/// shape ((features, heads, head size) in, (heads, head size, features) out) and its bias.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The kernel, in the shape Keras stores.
    pub kernel: Tensor,
    /// The bias (`use_bias`), in the shape Keras stores.
    pub bias: Option<Tensor>,
}

impl Projection {
    /// `x` (rows, k) times the kernel flattened to (k, rest) (its leading dims hold `k`
    /// elements), plus the bias.
    fn apply(&self, x: &Tensor, dt: DType) -> Result<Tensor> {
        let k = x.dim(1)?;
        let rest = self.kernel.elem_count() / k.max(1);
        let y = x.matmul(&autocast(&self.kernel, dt)?.reshape((k, rest))?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&autocast(b, dt)?.reshape(rest)?)?,
            None => y,
        })
    }
}

/// A `MultiHeadAttention` layer over `[query, value]` or `[query, value, key]`.
#[derive(Debug)]
pub struct MultiHeadAttention {
    /// `query_dense`: (query features, heads, key_dim).
    pub query: Projection,
    /// `key_dense`: (key features, heads, key_dim).
    pub key: Projection,
    /// `value_dense`: (value features, heads, value_dim).
    pub value: Projection,
    /// `output_dense`: (heads, value_dim, output features).
    pub output: Projection,
    /// `num_heads`.
    pub num_heads: usize,
    /// `key_dim`: the size of each head's queries and keys.
    pub key_dim: usize,
    /// `value_dim`: the size of each head's values.
    pub value_dim: usize,
    /// Dropout on the attention weights in training.
    pub dropout: Dropout,
    /// Keras builds the scores itself (`dropout > 0` or returned scores): masked weights
    /// are zeroed.
    pub explicit: bool,
    /// The call's `use_causal_mask`.
    pub causal: bool,
    /// The call's `return_attention_scores`: a second output, the weights
    /// (batch, heads, Tq, Tv).
    pub return_scores: bool,
    /// The dtype it computes in.
    pub compute_dtype: DType,
    /// `activity_regularizer`, which Keras hands to the four projections: each adds its
    /// output's loss.
    pub activity: Option<Regularizer>,
    /// The regularizers and constraints of the projections' kernels and biases.
    pub rules: Vec<WeightRule>,
}

fn shape_error(expected: &str, got: String) -> Error {
    Error::Gru(GruError::Shape {
        what: "multi-head attention inputs".into(),
        expected: expected.into(),
        got,
    })
}

impl MultiHeadAttention {
    /// (batch, heads, T, size) from (batch, T, features) through `p`.
    fn heads(&self, p: &Projection, x: &Tensor, size: usize) -> Result<(Tensor, Tensor)> {
        let (b, t, f) = x.dims3()?;
        let y = p
            .apply(&x.reshape((b * t, f))?, self.compute_dtype)?
            .reshape((b, t, self.num_heads, size))?;
        Ok((y.transpose(1, 2)?.contiguous()?, y))
    }

    /// Runs the layer on `[query, value(, key)]` (each (batch, T, features)) with their
    /// (batch, T) masks and an optional (batch, Tq, Tv) `attention_mask`: the output
    /// (batch, Tq, output features), the weights when `return_scores`, and the activity
    /// loss of the projections' outputs.
    pub fn forward(
        &self,
        xs: &[Tensor],
        masks: &[Option<Tensor>],
        attention_mask: Option<&Tensor>,
        training: bool,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let dt = self.compute_dtype;
        let (q, v) = match xs {
            [q, v] | [q, v, _] => (autocast(q, dt)?, autocast(v, dt)?),
            _ => {
                return Err(shape_error(
                    "[query, value(, key)]",
                    format!("{} tensors", xs.len()),
                ))
            }
        };
        let k = match xs.get(2) {
            Some(k) => autocast(k, dt)?,
            None => v.clone(),
        };
        let (b, tq, _) = q.dims3()?;
        let tv = v.dims3()?.1;
        if k.dims3()?.1 != tv {
            let got = format!("keys of {} steps, values of {tv}", k.dims3()?.1);
            return Err(shape_error("keys and values of the same length", got));
        }
        let (qh, qp) = self.heads(&self.query, &q, self.key_dim)?;
        let (kh, kp) = self.heads(&self.key, &k, self.key_dim)?;
        let (vh, vp) = self.heads(&self.value, &v, self.value_dim)?;
        let keep = self.keep(masks, attention_mask, xs.len() == 3, (b, tq, tv))?;
        let scale = 1.0 / (self.key_dim as f64).sqrt();
        let kt = kh.transpose(2, 3)?.contiguous()?;
        let (weights, returned) = match self.explicit {
            false => {
                // dot_product_attention: scores and softmax in at least float32.
                let wide = if dt == DType::F64 {
                    DType::F64
                } else {
                    DType::F32
                };
                let logits = (qh.to_dtype(wide)?.matmul(&kt.to_dtype(wide)?)? * scale)?;
                let big = if dt == DType::F16 {
                    65500.0
                } else {
                    3.38953e38
                };
                let logits = lowered(&logits, keep.as_ref(), -0.7 * big)?;
                (
                    candle_nn::ops::softmax(&logits, D::Minus1)?.to_dtype(dt)?,
                    None,
                )
            }
            true => {
                let scores = (qh * scale)?.matmul(&kt)?;
                let big = if dt == DType::F16 { 3.0e4 } else { 1.0e9 };
                let mut w =
                    candle_nn::ops::softmax(&lowered(&scores, keep.as_ref(), -big)?, D::Minus1)?;
                if let Some(keep) = &keep {
                    w = keep
                        .broadcast_as(w.shape())?
                        .where_cond(&w, &w.zeros_like()?)?;
                }
                (self.dropout.forward(&w, training)?, Some(w))
            }
        };
        let heads = weights.matmul(&vh)?.transpose(1, 2)?; // (b, tq, heads, value_dim)
        let flat = heads.reshape((b * tq, self.num_heads * self.value_dim))?;
        let out = self.output.apply(&flat, dt)?;
        let out = out.reshape((b, tq, out.dim(1)?))?;
        let activity = match &self.activity {
            Some(reg) => activity_loss(reg, &[qp, kp, vp, out.clone()])?,
            None => None,
        };
        let mut outs = vec![out];
        if self.return_scores {
            outs.push(returned.unwrap_or(weights));
        }
        Ok((outs, activity))
    }

    /// Where a query may see a value, (batch, 1, Tq, Tv) u8, as Keras'
    /// `_compute_attention_mask` builds it: the query's mask, the value's, the key's (when
    /// a key is given), the causal mask and `attention_mask`, all ANDed; `None` when none.
    fn keep(
        &self,
        masks: &[Option<Tensor>],
        attention_mask: Option<&Tensor>,
        has_key: bool,
        (b, tq, tv): (usize, usize, usize),
    ) -> Result<Option<Tensor>> {
        let mut parts: Vec<Tensor> = Vec::new();
        let as_u8 = |m: &Tensor| -> Result<Tensor> { Ok(m.ne(0f64)?.to_dtype(DType::U8)?) };
        if let Some(Some(m)) = masks.first() {
            parts.push(as_u8(m)?.reshape((b, tq, 1))?);
        }
        if let Some(Some(m)) = masks.get(1) {
            parts.push(as_u8(m)?.reshape((b, 1, tv))?);
        }
        if let (true, Some(Some(m))) = (has_key, masks.get(2)) {
            parts.push(as_u8(m)?.reshape((b, 1, tv))?);
        }
        if self.causal {
            let dev = masks.iter().flatten().next().map(Tensor::device);
            let dev = dev.unwrap_or(&candle_core::Device::Cpu);
            let dev = attention_mask.map(Tensor::device).unwrap_or(dev);
            let rows = Tensor::arange(0u32, tq as u32, dev)?.reshape((1, tq, 1))?;
            let cols = Tensor::arange(0u32, tv as u32, dev)?.reshape((1, 1, tv))?;
            parts.push(rows.broadcast_ge(&cols)?);
        }
        if let Some(m) = attention_mask {
            if m.dims() != [b, tq, tv] {
                let got = format!("an attention_mask of shape {:?}", m.dims());
                return Err(shape_error(&format!("({b}, {tq}, {tv})"), got));
            }
            parts.push(as_u8(m)?);
        }
        let Some((first, rest)) = parts.split_first() else {
            return Ok(None);
        };
        let mut keep = first.broadcast_as((b, tq, tv))?;
        for p in rest {
            keep = keep.broadcast_minimum(p)?;
        }
        Ok(Some(keep.unsqueeze(1)?))
    }
}

/// `x` where `keep`, `low` elsewhere.
fn lowered(x: &Tensor, keep: Option<&Tensor>, low: f64) -> Result<Tensor> {
    Ok(match keep {
        Some(keep) => {
            let low = Tensor::full(low, x.shape(), x.device())?.to_dtype(x.dtype())?;
            keep.broadcast_as(x.shape())?.where_cond(x, &low)?
        }
        None => x.clone(),
    })
}

/// A `MultiHeadAttention` layer over `inputs` (query, value, key), with its call's
/// `use_causal_mask` and `return_attention_scores`, its variables at `group`.
pub(super) fn build(
    b: &mut ChainBuilder,
    l: &Value,
    lname: &str,
    group: &str,
    inputs: &[TensorState],
    inbound: &Inbound,
) -> Result<(ModelLayer, TensorState)> {
    let source = b.w.source.clone();
    let (cfg, call) = (&l["config"], &l["inbound_nodes"][0]["kwargs"]);
    let refuse = |what: String| Err(unsupported(&source, format!("layer {lname:?}: {what}")));
    let (Some(q), Some(v), true) = (inputs.first(), inputs.get(1), inputs.len() <= 3) else {
        return refuse(format!("MultiHeadAttention of {} inputs", inputs.len()));
    };
    let k = inputs.get(2).unwrap_or(v);
    if [q, v, k].iter().any(|s| s.rank.is_some_and(|r| r != 3)) {
        return refuse("MultiHeadAttention over tensors of rank other than 3".into());
    }
    let axes_ok = match &cfg["attention_axes"] {
        Value::Null => true,
        Value::Array(a) => a.len() == 1 && matches!(a[0].as_i64(), Some(1 | -2)),
        other => matches!(other.as_i64(), Some(1 | -2)),
    };
    for (key, set) in [
        ("attention_axes", !axes_ok),
        ("use_gate", cfg["use_gate"].as_bool().unwrap_or(false)),
        ("sliding_window", !cfg["sliding_window"].is_null()),
    ] {
        if set {
            return refuse(format!("MultiHeadAttention with {key} {}", cfg[key]));
        }
    }
    let size = |key: &str| cfg[key].as_u64().filter(|&n| n > 0).map(|n| n as usize);
    let (Some(heads), Some(key_dim)) = (size("num_heads"), size("key_dim")) else {
        return Err(malformed(
            &source,
            format!("layer {lname:?}: num_heads, key_dim"),
        ));
    };
    let value_dim = size("value_dim").unwrap_or(key_dim);
    let features = |s: &TensorState, what: &str| {
        s.features
            .ok_or_else(|| malformed(&source, format!("layer {lname:?}: unknown {what} size")))
    };
    let (dq, dv, dk) = (
        features(q, "query")?,
        features(v, "value")?,
        features(k, "key")?,
    );
    let out_dim = match &cfg["output_shape"] {
        Value::Null => dq,
        Value::Array(a) if a.len() == 1 && a[0].as_u64().is_some_and(|n| n > 0) => {
            a[0].as_u64().unwrap_or(1) as usize
        }
        other if other.as_u64().is_some_and(|n| n > 0) => other.as_u64().unwrap_or(1) as usize,
        other => return refuse(format!("MultiHeadAttention with output_shape {other}")),
    };
    let use_bias = cfg["use_bias"].as_bool().unwrap_or(true);
    let proj = |name: &str, kernel: &[usize], bias: &[usize]| -> Result<Projection> {
        let path = |k: usize| format!("{group}/{name}/vars/{k}");
        Ok(Projection {
            kernel: b.weight(cfg, &path(0), kernel)?,
            bias: use_bias
                .then(|| b.weight(cfg, &path(1), bias))
                .transpose()?,
        })
    };
    let query = proj("query_dense", &[dq, heads, key_dim], &[heads, key_dim])?;
    let key = proj("key_dense", &[dk, heads, key_dim], &[heads, key_dim])?;
    let value = proj("value_dense", &[dv, heads, value_dim], &[heads, value_dim])?;
    let output = proj("output_dense", &[heads, value_dim, out_dim], &[out_dim])?;
    let weights = [&query, &key, &value, &output]
        .into_iter()
        .flat_map(|p| [("kernel", Some(&p.kernel)), ("bias", p.bias.as_ref())]);
    let dropout = cfg["dropout"].as_f64().unwrap_or(0.0);
    let return_scores = call["return_attention_scores"].as_bool().unwrap_or(false);
    let activity = Regularizer::from_keras_value(
        "activity_regularizer",
        cfg.get("activity_regularizer").unwrap_or(&Value::Null),
    )?;
    let layer = MultiHeadAttention {
        rules: rules(cfg, weights)?,
        query,
        key,
        value,
        output,
        num_heads: heads,
        key_dim,
        value_dim,
        dropout: Dropout::new(dropout, false, cfg["seed"].as_u64())?,
        explicit: dropout > 0.0 || return_scores,
        causal: call["use_causal_mask"].as_bool().unwrap_or(false),
        return_scores,
        compute_dtype: b.compute_dtype(cfg)?,
        activity,
    };
    let state = TensorState {
        features: Some(out_dim),
        rank: q.rank,
        dims: q
            .dims
            .as_ref()
            .map(|d| [&d[..d.len().saturating_sub(1)], &[out_dim]].concat()),
        mask: match inbound.masks.first() {
            Some(Some(_)) => MaskState::Masking,
            _ => q.mask,
        },
    };
    b.features = Some(out_dim);
    Ok((ModelLayer::MultiHeadAttention(Box::new(layer)), state))
}
