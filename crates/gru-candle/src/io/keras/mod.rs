//! Keras 3 model files: `.keras` archives (zip: `config.json` + `model.weights.h5`) and
//! `.weights.h5` files, read with a pure-Rust HDF5 reader (no system library).
//!
//! Keras 3 stores variables by position in the object tree: the k-th layer of a class is
//! `layers/{snake_case(class)}` then `_1`, `_2`... in creation order, a GRU's variables are
//! `cell/vars/0..3` (kernel, recurrent_kernel, bias), a Dense's `vars/0..2`, a
//! Bidirectional's sit under `forward_layer/` and `backward_layer/`.
//!
//! Chains of InputLayer, Masking, GRU, Bidirectional(GRU) and Dense run end to end.

mod build;
mod weights;

use crate::bidirectional::Bidirectional;
use crate::call::CallOptions;
use crate::error::{file_error, FileProblem, Result};
use crate::layer::Gru;
use candle_core::{DType, Device, Tensor, D};
use gru_core::Activation;
use hdf5_reader::Hdf5File;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use weights::Weights;

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
        build::build(
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
        build::build(config, Weights { file, source }, dtype, device)
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
