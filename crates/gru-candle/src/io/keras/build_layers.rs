//! The builders of the layers around the GRUs: Conv1D, pooling, LayerNormalization,
//! Embedding, and the config helpers they share (sizes, padding, weight rules).

use super::build::ChainBuilder;
use super::train::WeightRule;
use super::{malformed, unsupported};
use super::{BatchNorm, Conv1D, Embedding, LayerActivation, LayerNorm, ModelLayer};
use super::{Padding1D, Pooling1D};
use crate::error::{Error, Result};
use candle_core::Tensor;
use serde_json::Value;

impl ChainBuilder<'_> {
    pub(super) fn conv1d(
        &mut self,
        cfg: &Value,
        group: &str,
        lname: &str,
        d: usize,
    ) -> Result<ModelLayer> {
        let src = self.w.source.clone();
        let size = |key: &str, default: u64| -> Result<usize> {
            match one_size(cfg.get(key).unwrap_or(&Value::Null), default) {
                Some(n) => Ok(n),
                None => Err(malformed(
                    &src,
                    format!("layer {lname:?}: {key} = {} (a positive size)", cfg[key]),
                )),
            }
        };
        let (filters, k) = (size("filters", 0)?, size("kernel_size", 0)?);
        let (stride, dilation) = (size("strides", 1)?, size("dilation_rate", 1)?);
        let groups = size("groups", 1)?;
        let padding = padding(cfg, lname, &src, true)?;
        let channels_last =
            cfg["data_format"].as_str().unwrap_or("channels_last") == "channels_last";
        if !channels_last || !d.is_multiple_of(groups) || !filters.is_multiple_of(groups) {
            let what = format!(
                "layer {lname:?}: Conv1D with data_format {}, {groups} groups of {d} inputs and {filters} filters (channels_last, groups dividing both)",
                cfg["data_format"]
            );
            return Err(unsupported(&src, what));
        }
        let w = self.conv_weights(cfg, group, &[k, d / groups, filters])?;
        Ok(ModelLayer::Conv1D(Conv1D {
            rules: w.rules,
            kernel: w.kernel,
            bias: w.bias,
            stride,
            dilation,
            groups,
            padding,
            activation: w.activation,
            compute_dtype: self.compute_dtype(cfg)?,
        }))
    }

    /// A convolution's kernel of `shape` (its last dim the filters), its bias with
    /// `use_bias`, its activation and its weights' rules; the chain's features become the
    /// filters.
    pub(super) fn conv_weights(
        &mut self,
        cfg: &Value,
        group: &str,
        shape: &[usize],
    ) -> Result<ConvWeights> {
        let filters = shape.last().copied().unwrap_or(0);
        let kernel = self.weight(cfg, &format!("{group}/vars/0"), shape)?;
        let bias = match cfg["use_bias"].as_bool().unwrap_or(true) {
            true => Some(self.weight(cfg, &format!("{group}/vars/1"), &[filters])?),
            false => None,
        };
        let activation =
            LayerActivation::from_keras_value(cfg.get("activation").unwrap_or(&Value::Null))?;
        self.features = Some(filters);
        Ok(ConvWeights {
            rules: rules(cfg, [("kernel", Some(&kernel)), ("bias", bias.as_ref())])?,
            kernel,
            bias,
            activation,
        })
    }

    pub(super) fn pooling(&self, cfg: &Value, class: &str, lname: &str) -> Result<ModelLayer> {
        let src = &self.w.source;
        let pool = one_size(&cfg["pool_size"], 2);
        let stride = match &cfg["strides"] {
            Value::Null => pool,
            v => one_size(v, 0),
        };
        let channels_last =
            cfg["data_format"].as_str().unwrap_or("channels_last") == "channels_last";
        let (Some(size), Some(stride), true) = (pool, stride, channels_last) else {
            return Err(pooling_refused(src, lname, class, cfg));
        };
        Ok(ModelLayer::Pooling(Pooling1D {
            max: class == "MaxPooling1D",
            size,
            stride,
            padding: padding(cfg, lname, src, false)?,
        }))
    }

    pub(super) fn layer_norm(&mut self, cfg: &Value, group: &str, d: usize) -> Result<ModelLayer> {
        self.norm_supported(cfg, "", "LayerNormalization", "rms_scaling")?;
        let (gamma, beta, _) = self.scale_center(cfg, group, d)?;
        Ok(ModelLayer::LayerNorm(LayerNorm {
            rules: rules(cfg, [("gamma", gamma.as_ref()), ("beta", beta.as_ref())])?,
            gamma,
            beta,
            epsilon: cfg["epsilon"].as_f64().unwrap_or(1e-3),
        }))
    }

    pub(super) fn batch_norm(
        &mut self,
        cfg: &Value,
        group: &str,
        lname: &str,
        d: usize,
    ) -> Result<ModelLayer> {
        let prefix = format!("layer {lname:?}: ");
        self.norm_supported(cfg, &prefix, "BatchNormalization", "renorm")?;
        // After gamma and beta, Keras creates the moving mean and variance.
        let (gamma, beta, k) = self.scale_center(cfg, group, d)?;
        let var = |k: usize| self.weight(cfg, &format!("{group}/vars/{k}"), &[d]);
        let (moving_mean, moving_variance) = (var(k)?, var(k + 1)?);
        Ok(ModelLayer::BatchNorm(BatchNorm {
            rules: rules(cfg, [("gamma", gamma.as_ref()), ("beta", beta.as_ref())])?,
            gamma,
            beta,
            moving_mean,
            moving_variance,
            momentum: cfg["momentum"].as_f64().unwrap_or(0.99),
            epsilon: cfg["epsilon"].as_f64().unwrap_or(1e-3),
            trainable: cfg["trainable"].as_bool().unwrap_or(true),
        }))
    }

    /// A normalization runs here over the last axis, without its `flag` (`rms_scaling`,
    /// `renorm`); otherwise the refusal names both.
    fn norm_supported(&self, cfg: &Value, prefix: &str, class: &str, flag: &str) -> Result<()> {
        if last_axis(&cfg["axis"], self.rank) && cfg[flag].as_bool() != Some(true) {
            return Ok(());
        }
        let what = format!(
            "{prefix}{class} with axis {} and {flag} {} (the last axis, no {flag})",
            cfg["axis"], cfg[flag]
        );
        Err(unsupported(&self.w.source, what))
    }

    /// A normalization's `gamma` (with `scale`) and `beta` (with `center`), in the order
    /// Keras creates them, and the index of the variable after them.
    fn scale_center(
        &self,
        cfg: &Value,
        group: &str,
        d: usize,
    ) -> Result<(Option<Tensor>, Option<Tensor>, usize)> {
        let (scale, center) = (
            cfg["scale"].as_bool().unwrap_or(true),
            cfg["center"].as_bool().unwrap_or(true),
        );
        let var = |k: usize| self.weight(cfg, &format!("{group}/vars/{k}"), &[d]);
        let gamma = scale.then(|| var(0)).transpose()?;
        let beta = center.then(|| var(usize::from(scale))).transpose()?;
        Ok((gamma, beta, usize::from(scale) + usize::from(center)))
    }

    pub(super) fn embedding(&mut self, cfg: &Value, group: &str) -> Result<ModelLayer> {
        let dim = |key: &str| {
            cfg[key]
                .as_u64()
                .map(|d| d as usize)
                .ok_or_else(|| malformed(&self.w.source, format!("Embedding without {key}")))
        };
        let (rows, width) = (dim("input_dim")?, dim("output_dim")?);
        let embeddings = self.weight(cfg, &format!("{group}/vars/0"), &[rows, width])?;
        self.features = Some(width);
        Ok(ModelLayer::Embedding(Embedding {
            rules: rules(cfg, [("embeddings", Some(&embeddings))])?,
            embeddings,
            mask_zero: cfg["mask_zero"].as_bool().unwrap_or(false),
            compute_dtype: self.compute_dtype(cfg)?,
        }))
    }
}

/// The refusal of a pooling layer's sizes or data format, naming them.
pub(super) fn pooling_refused(src: &str, lname: &str, class: &str, cfg: &Value) -> Error {
    let what = format!(
        "layer {lname:?}: {class} with pool_size {}, strides {}, data_format {} (positive sizes, channels_last)",
        cfg["pool_size"], cfg["strides"], cfg["data_format"]
    );
    unsupported(src, what)
}

/// What [`ChainBuilder::conv_weights`] reads.
pub(super) struct ConvWeights {
    pub(super) kernel: Tensor,
    pub(super) bias: Option<Tensor>,
    pub(super) activation: LayerActivation,
    pub(super) rules: Vec<WeightRule>,
}

/// A 1-D size from a config: `n`, `[n]`, or null for `default`; `None` unless positive and
/// at most `i32::MAX`.
fn one_size(v: &Value, default: u64) -> Option<usize> {
    let n = match v {
        Value::Null => Some(default),
        Value::Array(a) if a.len() == 1 => a[0].as_u64(),
        v => v.as_u64(),
    };
    // At most i32::MAX, as TensorFlow takes sizes (so that spans cannot overflow).
    n.filter(|&n| n > 0 && n <= i32::MAX as u64)
        .map(|n| n as usize)
}

/// A layer's `padding`: `valid`, `same`, and (for `Conv1D`) `causal`.
pub(super) fn padding(
    cfg: &Value,
    lname: &str,
    source: &str,
    causal_ok: bool,
) -> Result<Padding1D> {
    match cfg["padding"]
        .as_str()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("valid") => Ok(Padding1D::Valid),
        Some("same") => Ok(Padding1D::Same),
        Some("causal") if causal_ok => Ok(Padding1D::Causal),
        _ => {
            let what = format!("layer {lname:?}: padding {}", cfg["padding"]);
            Err(unsupported(source, what))
        }
    }
}

/// The regularizers and constraints of a layer's weights (`{name}_regularizer`,
/// `{name}_constraint`), for the weights it has.
pub(super) fn rules<'a>(
    cfg: &Value,
    weights: impl IntoIterator<Item = (&'a str, Option<&'a Tensor>)>,
) -> Result<Vec<WeightRule>> {
    weights
        .into_iter()
        .filter_map(|(name, w)| w.map(|w| WeightRule::of(cfg, name, w)))
        .collect()
}

/// Whether a normalization's `axis` is the last one of an input of rank `rank`: `-1`,
/// `[-1]`, unset, or `rank - 1` (`[rank - 1]`) when the rank is known (Keras 2 writes
/// positive axes).
fn last_axis(v: &Value, rank: Option<usize>) -> bool {
    let axis = match v {
        Value::Null => return true,
        Value::Array(a) if a.len() == 1 => a[0].as_i64(),
        v => v.as_i64(),
    };
    axis == Some(-1)
        || (axis.is_some() && axis == rank.and_then(|r| i64::try_from(r).ok()).map(|r| r - 1))
}
