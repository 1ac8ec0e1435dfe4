//! Keras 3 model files: `.keras` archives (zip: `config.json` + `model.weights.h5`) and
//! `.weights.h5` files, read with a pure-Rust HDF5 reader (no system library).
//!
//! Keras 3 stores variables by position in the object tree: the k-th layer of a class is
//! `layers/{snake_case(class)}` then `_1`, `_2`... in creation order, a GRU's variables are
//! `cell/vars/0..3` (kernel, recurrent_kernel, bias), a Dense's `vars/0..2`, a
//! Bidirectional's sit under `forward_layer/` and `backward_layer/`.
//!
//! Chains of InputLayer, Masking, GRU, Bidirectional(GRU) and Dense run end to end.

use super::check_shape;
use crate::bidirectional::{Bidirectional, MergeMode};
use crate::call::CallOptions;
use crate::error::{file_error, FileProblem, Result};
use crate::layer::Gru;
use candle_core::{DType, Device, Tensor, D};
use gru_core::{Activation, GruConfig};
use hdf5_reader::Hdf5File;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// A Keras `Dense` layer: `activation(x @ kernel + bias)` on the last axis.
#[derive(Debug)]
pub struct Dense {
    /// (in, out).
    pub kernel: Tensor,
    /// (out,), if `use_bias`.
    pub bias: Option<Tensor>,
    /// The activation.
    pub activation: Activation,
}

impl Dense {
    /// Applies the layer to (..., in).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.broadcast_matmul(&self.kernel)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        Ok(crate::activation::apply(self.activation, &y)?)
    }
}

/// One layer of a loaded model.
#[derive(Debug)]
pub enum ModelLayer {
    /// `InputLayer` (no computation).
    Input,
    /// `Masking(mask_value)`: mask = any feature != mask_value; masked steps are zeroed.
    Masking {
        /// The value that marks padding.
        mask_value: f64,
    },
    /// A GRU.
    Gru(Box<Gru>),
    /// `Bidirectional(GRU)`.
    Bidirectional(Box<Bidirectional>),
    /// `Dense`.
    Dense(Dense),
}

/// A chain of Keras layers loaded from a model file.
#[derive(Debug)]
pub struct KerasModel {
    /// The model's name.
    pub name: String,
    /// `(layer name, layer)` in order.
    pub layers: Vec<(String, ModelLayer)>,
}

/// Reads variables from an HDF5 weights file.
struct Weights {
    file: Hdf5File,
    source: String,
}

impl Weights {
    fn read(&self, path: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let ds = self.file.dataset(path).map_err(|_| {
            file_error(
                &self.source,
                FileProblem::Missing(format!("variable {path}")),
            )
        })?;
        let shape: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
        let bad = |e: hdf5_reader::error::Error| {
            file_error(
                &self.source,
                FileProblem::Unreadable(format!("{path}: {e}")),
            )
        };
        let values: Vec<f64> = match ds.dtype() {
            hdf5_reader::Datatype::FloatingPoint { size: 4, .. } => ds
                .read_array::<f32>()
                .map_err(bad)?
                .iter()
                .map(|&v| v as f64)
                .collect(),
            hdf5_reader::Datatype::FloatingPoint { size: 8, .. } => ds
                .read_array::<f64>()
                .map_err(bad)?
                .iter()
                .copied()
                .collect(),
            other => {
                return Err(file_error(
                    &self.source,
                    FileProblem::Unsupported(format!(
                        "{path}: datatype {other:?} (float32 or float64 expected)"
                    )),
                ))
            }
        };
        Ok((shape, values))
    }

    fn tensor(
        &self,
        path: &str,
        expected: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (shape, values) = self.read(path)?;
        check_shape(&self.source, path, &shape, expected)?;
        super::tensor_from(&self.source, path, values, expected, dtype, device)
    }

    fn gru(
        &self,
        group: &str,
        config: GruConfig,
        input_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Gru> {
        let u = config.units;
        let kernel = self.tensor(
            &format!("{group}/cell/vars/0"),
            &[input_dim, 3 * u],
            dtype,
            device,
        )?;
        let recurrent = self.tensor(&format!("{group}/cell/vars/1"), &[u, 3 * u], dtype, device)?;
        let bias = match config.bias_shape() {
            Some(shape) => {
                Some(self.tensor(&format!("{group}/cell/vars/2"), &shape, dtype, device)?)
            }
            None => None,
        };
        Gru::from_weights(config, kernel, recurrent, bias)
    }
}

/// Keras' `to_snake_case` for the class names that occur here.
fn snake(class: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = class.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

fn unsupported(source: &str, what: impl Into<String>) -> crate::Error {
    file_error(source, FileProblem::Unsupported(what.into()))
}

fn malformed(source: &str, what: impl Into<String>) -> crate::Error {
    file_error(source, FileProblem::Unreadable(what.into()))
}

/// The last dimension of a shape list in a config (`batch_shape`, `build_config.input_shape`).
fn last_dim(v: Option<&Value>) -> Option<usize> {
    v?.as_array()?.last()?.as_u64().map(|d| d as usize)
}

impl KerasModel {
    /// Loads a `.keras` archive.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<KerasModel> {
        let source = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| malformed(&source, e.to_string()))?;
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| malformed(&source, format!("not a .keras zip archive: {e}")))?;
        let mut member = |name: &str| -> Result<Vec<u8>> {
            let mut f = zip.by_name(name).map_err(|_| {
                file_error(
                    &source,
                    FileProblem::Missing(format!("archive member {name}")),
                )
            })?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(|e| malformed(&source, format!("{name}: {e}")))?;
            Ok(buf)
        };
        let config_bytes = member("config.json")?;
        let weights = member("model.weights.h5")?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| malformed(&source, format!("config.json: {e}")))?;
        let file = Hdf5File::from_vec(weights)
            .map_err(|e| malformed(&format!("{source}:model.weights.h5"), e.to_string()))?;
        Self::build(
            &config,
            Weights {
                file,
                source: format!("{source}:model.weights.h5"),
            },
            dtype,
            device,
        )
    }

    /// Loads a `.weights.h5` file for the model described by `config` (the `config.json` of
    /// a `.keras` archive, or `model.to_json()`).
    pub fn load_weights_h5(
        config: &Value,
        path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<KerasModel> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| malformed(&source, e.to_string()))?;
        let file = Hdf5File::from_vec(bytes).map_err(|e| malformed(&source, e.to_string()))?;
        Self::build(config, Weights { file, source }, dtype, device)
    }

    /// Reads `config.json` out of a `.keras` archive.
    pub fn archive_config(path: &Path) -> Result<Value> {
        let source = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| malformed(&source, e.to_string()))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| malformed(&source, e.to_string()))?;
        let mut f = zip.by_name("config.json").map_err(|_| {
            file_error(
                &source,
                FileProblem::Missing("archive member config.json".into()),
            )
        })?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| malformed(&source, e.to_string()))?;
        serde_json::from_slice(&buf).map_err(|e| malformed(&source, format!("config.json: {e}")))
    }

    fn build(config: &Value, w: Weights, dtype: DType, device: &Device) -> Result<KerasModel> {
        let source = w.source.clone();
        let class = config["class_name"].as_str().unwrap_or("");
        if !matches!(class, "Sequential" | "Functional" | "Model") {
            return Err(unsupported(
                &source,
                format!("model class {class:?} (Sequential or Functional expected)"),
            ));
        }
        let name = config["config"]["name"]
            .as_str()
            .unwrap_or("model")
            .to_string();
        let layer_list = config["config"]["layers"]
            .as_array()
            .ok_or_else(|| malformed(&source, "config has no layer list"))?;
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut layers = Vec::new();
        let mut features: Option<usize> = None;
        let mut previous: Option<String> = None;
        for (i, l) in layer_list.iter().enumerate() {
            let class = l["class_name"].as_str().unwrap_or("");
            let cfg = &l["config"];
            let lname = cfg["name"]
                .as_str()
                .or(l["name"].as_str())
                .unwrap_or("")
                .to_string();
            // Functional models: only chains, each layer fed by the one before.
            if class_is_functional(config) && i > 0 {
                let nodes = l["inbound_nodes"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let from = nodes
                    .first()
                    .and_then(|n| n["args"][0]["config"]["keras_history"][0].as_str());
                if nodes.len() != 1 || from != previous.as_deref() {
                    return Err(unsupported(
                        &source,
                        format!("layer {lname:?}: only chains of layers are supported"),
                    ));
                }
            }
            let key = snake(class);
            let k = counters.entry(key.clone()).or_insert(0);
            let group = if *k == 0 {
                format!("layers/{key}")
            } else {
                format!("layers/{key}_{k}")
            };
            *k += 1;
            let input_dim = || {
                features
                    .or_else(|| last_dim(l["build_config"].get("input_shape")))
                    .ok_or_else(|| {
                        malformed(&source, format!("layer {lname:?}: unknown input size"))
                    })
            };
            let layer = match class {
                "InputLayer" => {
                    features = last_dim(cfg.get("batch_shape").or(cfg.get("batch_input_shape")));
                    ModelLayer::Input
                }
                "Masking" => ModelLayer::Masking {
                    mask_value: cfg["mask_value"].as_f64().unwrap_or(0.0),
                },
                "GRU" => {
                    let c = GruConfig::from_keras_json(cfg)?;
                    let units = c.units;
                    let g = w.gru(&group, c, input_dim()?, dtype, device)?;
                    features = Some(units);
                    ModelLayer::Gru(Box::new(g))
                }
                "Bidirectional" => {
                    let merge =
                        MergeMode::from_keras_value(cfg.get("merge_mode").unwrap_or(&Value::Null))?;
                    let inner = |key: &str| -> Result<GruConfig> {
                        let v = &cfg[key];
                        match v["class_name"].as_str() {
                            Some("GRU") => Ok(GruConfig::from_keras_json(&v["config"])?),
                            other => Err(unsupported(
                                &source,
                                format!("Bidirectional({other:?}): only GRU"),
                            )),
                        }
                    };
                    let fw_cfg = inner("layer")?;
                    let bw_cfg = if cfg.get("backward_layer").is_some_and(|v| !v.is_null()) {
                        inner("backward_layer")?
                    } else {
                        let mut b = fw_cfg.clone();
                        b.go_backwards = !b.go_backwards;
                        b
                    };
                    let d = input_dim()?;
                    let fw = w.gru(&format!("{group}/forward_layer"), fw_cfg, d, dtype, device)?;
                    let bw = w.gru(&format!("{group}/backward_layer"), bw_cfg, d, dtype, device)?;
                    let b = Bidirectional::from_layers(fw, bw, merge)?;
                    features = Some(b.output_dim());
                    ModelLayer::Bidirectional(Box::new(b))
                }
                "Dense" => {
                    let units = cfg["units"]
                        .as_u64()
                        .ok_or_else(|| malformed(&source, "Dense without units"))?
                        as usize;
                    let d = input_dim()?;
                    let activation = Activation::from_keras_value(
                        "activation",
                        cfg.get("activation").unwrap_or(&Value::Null),
                    )?;
                    let kernel =
                        w.tensor(&format!("{group}/vars/0"), &[d, units], dtype, device)?;
                    let bias = if cfg["use_bias"].as_bool().unwrap_or(true) {
                        Some(w.tensor(&format!("{group}/vars/1"), &[units], dtype, device)?)
                    } else {
                        None
                    };
                    features = Some(units);
                    ModelLayer::Dense(Dense {
                        kernel,
                        bias,
                        activation,
                    })
                }
                other => {
                    return Err(unsupported(
                        &source,
                        format!("layer {lname:?} of class {other}"),
                    ))
                }
            };
            previous = Some(lname.clone());
            layers.push((lname, layer));
        }
        Ok(KerasModel { name, layers })
    }

    /// Runs the chain: `inputs` (batch, T, features), an optional (batch, T) u8 mask. Returns
    /// the last layer's outputs (several with `return_state` or merge_mode None).
    pub fn call(&self, inputs: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        let mut outs = vec![inputs.clone()];
        let mut mask = mask.cloned();
        for (_, layer) in &self.layers {
            let x = &outs[0];
            outs = match layer {
                ModelLayer::Input => outs,
                ModelLayer::Masking { mask_value } => {
                    let keep = x
                        .ne(*mask_value)?
                        .to_dtype(DType::F32)?
                        .max_keepdim(D::Minus1)?;
                    let y = x.broadcast_mul(&keep.to_dtype(x.dtype())?)?;
                    mask = Some(keep.squeeze(D::Minus1)?.to_dtype(DType::U8)?);
                    vec![y]
                }
                ModelLayer::Gru(g) => {
                    let out = g.call(
                        x,
                        CallOptions {
                            mask: mask.as_ref(),
                            ..Default::default()
                        },
                    )?;
                    if !g.config().return_sequences {
                        mask = None;
                    }
                    out.to_vec()
                }
                ModelLayer::Bidirectional(b) => {
                    let out = b.call(x, mask.as_ref(), None, false)?;
                    if !b.forward_layer().config().return_sequences {
                        mask = None;
                    }
                    let mut v = out.outputs;
                    if let Some((f, bw)) = out.states {
                        v.push(f);
                        v.push(bw);
                    }
                    v
                }
                ModelLayer::Dense(d) => vec![d.forward(x)?],
            };
        }
        Ok(outs)
    }
}

fn class_is_functional(config: &Value) -> bool {
    matches!(config["class_name"].as_str(), Some("Functional" | "Model"))
}

#[cfg(test)]
mod tests {
    use super::snake;

    #[test]
    fn keras_snake_case() {
        assert_eq!(snake("GRU"), "gru");
        assert_eq!(snake("Bidirectional"), "bidirectional");
        assert_eq!(snake("InputLayer"), "input_layer");
        assert_eq!(snake("Dense"), "dense");
        assert_eq!(snake("LSTMCell"), "lstm_cell");
    }
}
