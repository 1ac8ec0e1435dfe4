//! The builders of the simple layers: reshaping (`Flatten`, `RepeatVector`, `Reshape`,
//! `Permute`, `ZeroPadding1D`, `Cropping1D`, `UpSampling1D`), the activation layers
//! (`LeakyReLU`, `ReLU`, `ELU`, `Softmax`, and `PReLU` with its slopes) and noise
//! (`GaussianNoise`, `GaussianDropout`, `AlphaDropout`); and the shape the chain carries past
//! each layer.

use super::build::ChainBuilder;
use super::{malformed, unsupported};
use super::{LayerActivation, ModelLayer, Noise, NoiseKind, Reshaping};
use crate::error::Result;
use serde_json::Value;

/// A pair of sizes from a config: `n` (both) or `[a, b]`; `default` when absent.
pub(super) fn pair(v: &Value, default: usize) -> Option<(usize, usize)> {
    let size = |v: &Value| v.as_u64().map(|n| n as usize);
    match v {
        Value::Null => Some((default, default)),
        Value::Array(a) if a.len() == 2 => Some((size(&a[0])?, size(&a[1])?)),
        v => size(v).map(|n| (n, n)),
    }
}

/// A number from a config, `default` when absent or null.
fn number(cfg: &Value, key: &str, default: f64) -> f64 {
    cfg[key].as_f64().unwrap_or(default)
}

impl ChainBuilder<'_> {
    /// A reshaping layer; its output shape is checked against the shape the chain carries
    /// when that is known (`Flatten`, `Reshape` and `Permute` need it).
    pub(super) fn reshaping(
        &mut self,
        cfg: &Value,
        class: &str,
        lname: &str,
    ) -> Result<ModelLayer> {
        let src = self.w.source.clone();
        let bad = |what: String| malformed(&src, format!("layer {lname:?}: {what}"));
        let layer = match class {
            "Flatten" => {
                if cfg["data_format"].as_str().unwrap_or("channels_last") != "channels_last" {
                    let what = format!(
                        "layer {lname:?}: Flatten with data_format {}",
                        cfg["data_format"]
                    );
                    return Err(unsupported(&src, what));
                }
                Reshaping::Flatten
            }
            "RepeatVector" => match cfg["n"].as_u64() {
                Some(n) if n > 0 => Reshaping::RepeatVector(n as usize),
                _ => return Err(bad(format!("RepeatVector n = {}", cfg["n"]))),
            },
            "Reshape" => Reshaping::Reshape(self.target_shape(&cfg["target_shape"], lname)?),
            "Permute" => {
                let dims: Option<Vec<usize>> = cfg["dims"]
                    .as_array()
                    .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
                let mut sorted = dims.clone().unwrap_or_default();
                sorted.sort_unstable();
                if dims.is_none() || sorted != (1..=sorted.len()).collect::<Vec<_>>() {
                    return Err(bad(format!(
                        "Permute dims {} (a permutation of 1..n)",
                        cfg["dims"]
                    )));
                }
                Reshaping::Permute(dims.unwrap_or_default().iter().map(|d| d - 1).collect())
            }
            "ZeroPadding1D" | "Cropping1D" => {
                let key = if class == "Cropping1D" {
                    "cropping"
                } else {
                    "padding"
                };
                let (a, b) =
                    pair(&cfg[key], 1).ok_or_else(|| bad(format!("{key} = {}", cfg[key])))?;
                match class {
                    "Cropping1D" => Reshaping::Cropping1D(a, b),
                    _ => Reshaping::ZeroPadding1D(a, b),
                }
            }
            _ => match cfg["size"].as_u64().or(cfg["size"].is_null().then_some(2)) {
                Some(n) if n > 0 => Reshaping::UpSampling1D(n as usize),
                _ => return Err(bad(format!("UpSampling1D size = {}", cfg["size"]))),
            },
        };
        let needs_dims = matches!(layer, Reshaping::Flatten | Reshaping::Permute(_));
        match &self.dims {
            Some(dims) => {
                let out = layer.out_dims(dims)?;
                self.features = out.last().copied();
            }
            None if needs_dims => {
                let what =
                    format!("{class} needs the input's shape, which is not fixed in the config");
                return Err(bad(what));
            }
            None => {
                if let Reshaping::Reshape(t) = &layer {
                    self.features = t.last().copied().flatten();
                }
            }
        }
        Ok(ModelLayer::Reshaping(layer))
    }

    /// `Reshape`'s `target_shape`, a `-1` resolved from the input's shape when the config
    /// fixes it, else left for each call (`None`).
    fn target_shape(&self, v: &Value, lname: &str) -> Result<Vec<Option<usize>>> {
        let src = &self.w.source;
        let bad = || malformed(src, format!("layer {lname:?}: Reshape target_shape {v}"));
        let dims: Vec<i64> = v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect())
            .ok_or_else(bad)?;
        let unknown = dims.iter().filter(|&&d| d == -1).count();
        if dims.is_empty() || unknown > 1 || dims.iter().any(|&d| d == 0 || d < -1) {
            return Err(bad());
        }
        let known: usize = dims
            .iter()
            .filter(|&&d| d > 0)
            .map(|&d| d as usize)
            .product();
        let fill = match (unknown, self.dims.as_ref()) {
            (0, _) => None,
            (_, Some(d)) => {
                let total = d.iter().product::<usize>();
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(bad());
                }
                Some(total / known)
            }
            (_, None) => None,
        };
        Ok(dims
            .iter()
            .map(|&d| if d == -1 { fill } else { Some(d as usize) })
            .collect())
    }

    /// `LeakyReLU`, `ReLU`, `ELU`, `Softmax` (over the last axis).
    pub(super) fn activation_layer(
        &self,
        cfg: &Value,
        class: &str,
        lname: &str,
    ) -> Result<ModelLayer> {
        let act = match class {
            // Keras 3 names it negative_slope, Keras 2 alpha.
            "LeakyReLU" => LayerActivation::LeakyRelu(
                cfg["negative_slope"]
                    .as_f64()
                    .or(cfg["alpha"].as_f64())
                    .unwrap_or(0.3),
            ),
            "ReLU" => {
                let max_value = cfg["max_value"].as_f64();
                if max_value.is_some_and(|m| m < 0.0) {
                    let what = format!(
                        "layer {lname:?}: ReLU max_value {} (>= 0)",
                        cfg["max_value"]
                    );
                    return Err(malformed(&self.w.source, what));
                }
                LayerActivation::Relu {
                    max_value,
                    negative_slope: number(cfg, "negative_slope", 0.0),
                    threshold: number(cfg, "threshold", 0.0),
                }
            }
            "ELU" => LayerActivation::Elu(number(cfg, "alpha", 1.0)),
            _ => {
                let last = self.rank.and_then(|r| i64::try_from(r).ok()).map(|r| r - 1);
                let axis = cfg["axis"].as_i64().unwrap_or(-1);
                if axis != -1 && Some(axis) != last {
                    let what = format!("layer {lname:?}: Softmax over axis {axis} (the last axis)");
                    return Err(unsupported(&self.w.source, what));
                }
                LayerActivation::Softmax
            }
        };
        Ok(ModelLayer::Activation(act))
    }

    /// `PReLU`: `alpha` of the input's shape after the batch, size 1 along `shared_axes`
    /// (1-based, as Keras counts them).
    pub(super) fn prelu(&mut self, cfg: &Value, group: &str, lname: &str) -> Result<ModelLayer> {
        let src = self.w.source.clone();
        let bad = |what: String| unsupported(&src, format!("layer {lname:?}: PReLU {what}"));
        let shared: Vec<u64> = match &cfg["shared_axes"] {
            Value::Null => Vec::new(),
            Value::Array(a) => a.iter().filter_map(Value::as_u64).collect(),
            v => v.as_u64().into_iter().collect(),
        };
        let rank = self
            .rank
            .ok_or_else(|| bad("needs its input's rank".into()))?;
        let shape = (1..rank)
            .map(|axis| match shared.contains(&(axis as u64)) {
                true => Ok(1),
                false if axis == rank - 1 => self.features.ok_or(()),
                false => self
                    .dims
                    .as_ref()
                    .and_then(|d| d.get(axis - 1).copied())
                    .ok_or(()),
            })
            .collect::<std::result::Result<Vec<usize>, ()>>()
            .map_err(|_| {
                bad(format!(
                    "with shared_axes {:?} over an input of unfixed size",
                    shared
                ))
            })?;
        let alpha = self.weight(cfg, &format!("{group}/vars/0"), &shape)?;
        Ok(ModelLayer::PRelu(super::PRelu {
            rules: super::build_layers::rules(cfg, [("alpha", Some(&alpha))])?,
            alpha,
        }))
    }

    /// `GaussianNoise`, `GaussianDropout`, `AlphaDropout`.
    pub(super) fn noise(&self, cfg: &Value, class: &str, lname: &str) -> Result<ModelLayer> {
        if !cfg["noise_shape"].is_null() {
            let what = format!(
                "layer {lname:?}: {class} with noise_shape {}",
                cfg["noise_shape"]
            );
            return Err(unsupported(&self.w.source, what));
        }
        let kind = match class {
            "GaussianNoise" => NoiseKind::Gaussian {
                stddev: number(cfg, "stddev", 0.0),
            },
            "GaussianDropout" => NoiseKind::GaussianDropout {
                rate: number(cfg, "rate", 0.0),
            },
            _ => NoiseKind::AlphaDropout {
                rate: number(cfg, "rate", 0.0),
            },
        };
        Ok(ModelLayer::Noise(Box::new(Noise::new(
            kind,
            cfg["seed"].as_u64(),
        )?)))
    }
}

/// The dims after the batch of a layer's (first) output, from its input's and the feature
/// size the layer leaves: `None` where a size is not fixed.
pub(super) fn dims_after(
    dims: Vec<usize>,
    layer: &ModelLayer,
    features: Option<usize>,
) -> Option<Vec<usize>> {
    let f = features?;
    let steps = |t: usize, size: usize, stride: usize, pad: super::Padding1D| {
        let (l, r) = pad.amounts(t, size, stride);
        (t + l + r).checked_sub(size).map(|n| n / stride + 1)
    };
    let sequence = |seq: bool| match (seq, dims.first()) {
        (true, Some(&t)) => Some(vec![t, f]),
        (false, _) => Some(vec![f]),
        (true, None) => None,
    };
    match layer {
        ModelLayer::Embedding(_) => Some([dims.as_slice(), &[f]].concat()),
        ModelLayer::Gru(g) => sequence(g.config().return_sequences),
        ModelLayer::Bidirectional(b) => sequence(b.forward_layer().config().return_sequences),
        ModelLayer::StackedGru(s) => sequence(s.last()?.return_sequences),
        ModelLayer::GlobalPooling(p) => Some(if p.keepdims { vec![1, f] } else { vec![f] }),
        ModelLayer::Conv1D(c) => {
            let span = c.dilation * (c.kernel.dims().first()? - 1) + 1;
            Some(vec![steps(*dims.first()?, span, c.stride, c.padding)?, f])
        }
        ModelLayer::Pooling(p) => {
            Some(vec![steps(*dims.first()?, p.size, p.stride, p.padding)?, f])
        }
        ModelLayer::Conv2D(c) => match dims[..] {
            [h, w, _] => c.out_size((h, w)).map(|(h, w)| vec![h, w, f]),
            _ => None,
        },
        ModelLayer::Pooling2D(p) => match dims[..] {
            [h, w, _] => p.out_size((h, w)).map(|(h, w)| vec![h, w, f]),
            _ => None,
        },
        ModelLayer::Reshaping(r) => r.out_dims(&dims).ok(),
        _ => {
            let mut d = dims;
            *d.last_mut()? = f;
            Some(d)
        }
    }
}
