//! Keras' `Attention` (Luong: dot-product, or `score_mode="concat"`) and `AdditiveAttention`
//! (Bahdanau) layers, as GRU encoder-decoders and classifiers use them over a GRU's
//! sequence: `[query, value]` or `[query, value, key]` in, `softmax(scores) @ value` out,
//! with Keras 3's masking (padded values get `-1e9` added to their scores, padded queries
//! give zeros), its causal mask, and dropout on the attention weights in training.

use super::build::ChainBuilder;
use super::graph::{Inbound, MaskState, TensorState};
use super::train::Dropout;
use super::{malformed, unsupported, ModelLayer};
use crate::dtype::autocast;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};
use gru_core::GruError;
use serde_json::Value;

/// How the scores are computed.
#[derive(Debug, Clone)]
pub enum Scores {
    /// `Attention(score_mode="dot")`: `query @ key^T`, times `scale` (a scalar, with
    /// `use_scale`).
    Dot {
        /// The learned scalar scale.
        scale: Option<Tensor>,
    },
    /// `Attention(score_mode="concat")`: `weight * sum(tanh(scale * (q + k)))`.
    Concat {
        /// The learned scalar scale (`use_scale`).
        scale: Option<Tensor>,
        /// `concat_score_weight`, a scalar.
        weight: Tensor,
    },
    /// `AdditiveAttention`: `sum(scale * tanh(q + k))`, `scale` of the feature size
    /// (`use_scale`).
    Additive {
        /// The learned per-feature scale.
        scale: Option<Tensor>,
    },
}

/// An attention layer.
#[derive(Debug)]
pub struct Attention {
    /// The scores.
    pub scores: Scores,
    /// Dropout on the attention weights in training.
    pub dropout: Dropout,
    /// The call's `use_causal_mask`: query step `i` sees value steps `<= i`.
    pub causal: bool,
    /// The call's `return_attention_scores`: a second output, the weights.
    pub return_scores: bool,
    /// The dtype it computes in.
    pub compute_dtype: DType,
}

fn scaled(x: &Tensor, s: &Option<Tensor>, dtype: DType) -> Result<Tensor> {
    Ok(match s {
        Some(s) => x.broadcast_mul(&autocast(s, dtype)?)?,
        None => x.clone(),
    })
}

impl Attention {
    /// (batch, Tq, Tv) scores of `query` (batch, Tq, d) against `key` (batch, Tv, d).
    fn scores(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        let dt = self.compute_dtype;
        let pairs = || -> Result<Tensor> {
            // (batch, Tq, 1, d) + (batch, 1, Tv, d).
            Ok(q.unsqueeze(2)?.broadcast_add(&k.unsqueeze(1)?)?)
        };
        Ok(match &self.scores {
            Scores::Dot { scale } => {
                scaled(&q.matmul(&k.transpose(1, 2)?.contiguous()?)?, scale, dt)?
            }
            Scores::Concat { scale, weight } => {
                let t = scaled(&pairs()?, scale, dt)?.tanh()?.sum(D::Minus1)?;
                t.broadcast_mul(&autocast(weight, dt)?)?
            }
            Scores::Additive { scale } => scaled(&pairs()?.tanh()?, scale, dt)?.sum(D::Minus1)?,
        })
    }

    /// Runs the layer on `[query, value]` or `[query, value, key]` (each (batch, T, d)) with
    /// their (batch, T) masks: the output (batch, Tq, d_value), and the attention weights
    /// (batch, Tq, Tv) when `return_scores`.
    pub fn forward(
        &self,
        xs: &[Tensor],
        masks: &[Option<Tensor>],
        training: bool,
    ) -> Result<Vec<Tensor>> {
        let dt = self.compute_dtype;
        let (q, v) = match xs {
            [q, v] | [q, v, _] => (autocast(q, dt)?, autocast(v, dt)?),
            _ => {
                return Err(Error::Gru(GruError::Shape {
                    what: "attention inputs".into(),
                    expected: "[query, value] or [query, value, key]".into(),
                    got: format!("{} tensors", xs.len()),
                }))
            }
        };
        let k = match xs.get(2) {
            Some(k) => autocast(k, dt)?,
            None => v.clone(),
        };
        let mut scores = self.scores(&q, &k)?;
        if let Some(keep) = self.score_mask(&scores, masks.get(1).cloned().flatten())? {
            let big = if dt == DType::F16 { 65504.0 } else { 1.0e9 };
            let lowered = (&scores - big)?;
            scores = keep
                .broadcast_as(scores.shape())?
                .where_cond(&scores, &lowered)?;
        }
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let weights = self.dropout.forward(&weights, training)?;
        let mut out = weights.matmul(&v.contiguous()?)?;
        if let Some(Some(qm)) = masks.first() {
            let keep = qm.unsqueeze(2)?.broadcast_as(out.shape())?;
            out = keep.where_cond(&out, &out.zeros_like()?)?;
        }
        Ok(match self.return_scores {
            true => vec![out, weights],
            false => vec![out],
        })
    }

    /// Where the scores count (u8, broadcastable to (batch, Tq, Tv)): the value mask, and
    /// the causal mask with `causal`.
    fn score_mask(&self, scores: &Tensor, value_mask: Option<Tensor>) -> Result<Option<Tensor>> {
        let vm = value_mask.map(|m| m.unsqueeze(1)).transpose()?;
        if !self.causal {
            return Ok(vm);
        }
        let (_, tq, tv) = scores.dims3()?;
        let rows = Tensor::arange(0u32, tq as u32, scores.device())?.reshape((1, tq, 1))?;
        let cols = Tensor::arange(0u32, tv as u32, scores.device())?.reshape((1, 1, tv))?;
        let causal = rows.broadcast_ge(&cols)?;
        Ok(Some(match vm {
            Some(vm) => vm.broadcast_minimum(&causal)?,
            None => causal,
        }))
    }
}

/// An `Attention` or `AdditiveAttention` layer over `[query, value(, key)]`, with its
/// call's `use_causal_mask` and `return_attention_scores`.
pub(super) fn build(
    b: &mut ChainBuilder,
    l: &Value,
    lname: &str,
    group: &str,
    inputs: &[TensorState],
    inbound: &Inbound,
) -> Result<(ModelLayer, TensorState)> {
    let source = b.w.source.clone();
    let class = l["class_name"].as_str().unwrap_or("");
    let (cfg, call) = (&l["config"], &l["inbound_nodes"][0]["kwargs"]);
    let (Some(q), Some(v), true) = (inputs.first(), inputs.get(1), inputs.len() <= 3) else {
        let what = format!("layer {lname:?}: {class} of {} inputs", inputs.len());
        return Err(unsupported(&source, what));
    };
    let var = |b: &ChainBuilder, k: usize, shape: &[usize]| {
        b.weight(cfg, &format!("{group}/vars/{k}"), shape)
    };
    let use_scale = cfg["use_scale"].as_bool().unwrap_or(false);
    let scale = |b: &ChainBuilder, shape: &[usize]| use_scale.then(|| var(b, 0, shape)).transpose();
    let scores = match (class, cfg["score_mode"].as_str().unwrap_or("dot")) {
        ("AdditiveAttention", _) => {
            let d = q.features.ok_or_else(|| {
                malformed(&source, format!("layer {lname:?}: unknown query size"))
            })?;
            Scores::Additive {
                scale: scale(b, &[d])?,
            }
        }
        (_, "dot") => Scores::Dot {
            scale: scale(b, &[])?,
        },
        (_, "concat") => Scores::Concat {
            scale: scale(b, &[])?,
            weight: var(b, usize::from(use_scale), &[])?,
        },
        (_, other) => {
            let what = format!("layer {lname:?}: score_mode {other:?}");
            return Err(unsupported(&source, what));
        }
    };
    let attention = Attention {
        scores,
        dropout: Dropout::new(
            cfg["dropout"].as_f64().unwrap_or(0.0),
            false,
            cfg["seed"].as_u64(),
        )?,
        causal: call["use_causal_mask"].as_bool().unwrap_or(false),
        return_scores: call["return_attention_scores"].as_bool().unwrap_or(false),
        compute_dtype: b.compute_dtype(cfg)?,
    };
    let dims = match (&q.dims, v.features) {
        (Some(d), Some(f)) => Some([&d[..d.len().saturating_sub(1)], &[f]].concat()),
        _ => None,
    };
    let state = TensorState {
        features: v.features,
        rank: q.rank,
        dims,
        mask: match inbound.masks.first() {
            Some(Some(_)) => MaskState::Masking,
            _ => q.mask,
        },
    };
    Ok((ModelLayer::Attention(Box::new(attention)), state))
}
