//! PyTorch `nn.GRU` state_dicts (safetensors) as Keras-layout layers.
//!
//! PyTorch's GRU is Keras' `reset_after=True` form: gate rows r, z, n are reordered to Keras'
//! z, r, h and transposed (gru-core's `layout`); `bias_ih`/`bias_hh` become Keras' (2, 3u)
//! bias. Each direction of each layer becomes a [`Gru`] that returns sequences and state;
//! bidirectional layers are [`Bidirectional`] with concat, as `nn.GRU` concatenates.

use super::{check_shape, tensor_from};
use crate::bidirectional::{Bidirectional, MergeMode};
use crate::error::{file_error, FileProblem, Result};
use crate::layer::Gru;
use crate::stack::{GruStack, StackLayer};
use candle_core::{DType, Device, Tensor};
use gru_core::layout::TorchWeights;
use gru_core::GruConfig;
use std::collections::HashMap;
use std::path::Path;

/// A PyTorch `nn.GRU` (batch_first) running on Keras-exact layers.
#[derive(Debug)]
pub struct TorchGru {
    stack: GruStack,
    /// `num_layers`.
    pub num_layers: usize,
    /// `bidirectional`.
    pub bidirectional: bool,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `input_size`.
    pub input_size: usize,
}

impl TorchGru {
    /// Loads a state_dict saved with safetensors (keys `weight_ih_l{k}`, `weight_hh_l{k}`,
    /// `bias_ih_l{k}`, `bias_hh_l{k}`, with `_reverse` for the backward direction; a common
    /// prefix such as `gru.` is allowed).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<TorchGru> {
        let source = path.display().to_string();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| file_error(&source, FileProblem::Unreadable(e.to_string())))?;
        Self::from_tensors(&source, &tensors, dtype, device)
    }

    /// Builds from state_dict tensors already in memory. `source` names them in errors.
    pub fn from_tensors(
        source: &str,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<TorchGru> {
        let prefixes: Vec<&str> = tensors
            .keys()
            .filter_map(|k| k.strip_suffix("weight_ih_l0"))
            .collect();
        let prefix = match prefixes.as_slice() {
            [p] => p.to_string(),
            [] => {
                return Err(file_error(
                    source,
                    FileProblem::Missing("weight_ih_l0".into()),
                ))
            }
            many => {
                return Err(file_error(
                    source,
                    FileProblem::Unsupported(format!(
                        "several GRUs in one file (prefixes {many:?})"
                    )),
                ))
            }
        };
        let get = |name: &str| tensors.get(&format!("{prefix}{name}"));
        let need = |name: &str| {
            get(name)
                .ok_or_else(|| file_error(source, FileProblem::Missing(format!("{prefix}{name}"))))
        };
        let num_layers = (0..)
            .take_while(|l| get(&format!("weight_ih_l{l}")).is_some())
            .count();
        let bidirectional = get("weight_ih_l0_reverse").is_some();
        let dirs = if bidirectional { 2 } else { 1 };
        let hh0 = need("weight_hh_l0")?;
        let hidden = match hh0.dims() {
            [r, h] if *r == 3 * *h && *h > 0 => *h,
            other => {
                return Err(file_error(
                    source,
                    FileProblem::Shape {
                        name: format!("{prefix}weight_hh_l0"),
                        expected: vec![
                            3 * other.get(1).copied().unwrap_or(0),
                            other.get(1).copied().unwrap_or(0),
                        ],
                        got: other.to_vec(),
                    },
                ))
            }
        };
        let input_size = need("weight_ih_l0")?.dims().get(1).copied().unwrap_or(0);
        let has_bias = get("bias_ih_l0").is_some();
        let mut layers = Vec::with_capacity(num_layers);
        for l in 0..num_layers {
            let in_dim = if l == 0 { input_size } else { hidden * dirs };
            let mut directions = Vec::with_capacity(dirs);
            for d in 0..dirs {
                let sfx = if d == 1 {
                    format!("l{l}_reverse")
                } else {
                    format!("l{l}")
                };
                let host = |name: String, shape: &[usize]| -> Result<Vec<f64>> {
                    let t = need(&name)?;
                    check_shape(source, &format!("{prefix}{name}"), t.dims(), shape)?;
                    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
                };
                let bias = |name: String| -> Result<Option<Vec<f64>>> {
                    if has_bias {
                        host(name, &[3 * hidden]).map(Some)
                    } else if get(&name).is_some() {
                        Err(file_error(
                            source,
                            FileProblem::Unsupported(format!(
                                "{prefix}{name} present but bias_ih_l0 absent"
                            )),
                        ))
                    } else {
                        Ok(None)
                    }
                };
                let w = TorchWeights {
                    weight_ih: host(format!("weight_ih_{sfx}"), &[3 * hidden, in_dim])?,
                    weight_hh: host(format!("weight_hh_{sfx}"), &[3 * hidden, hidden])?,
                    bias_ih: bias(format!("bias_ih_{sfx}"))?,
                    bias_hh: bias(format!("bias_hh_{sfx}"))?,
                };
                let k = w.to_keras(in_dim, hidden)?;
                let mut cfg = GruConfig::new(hidden);
                cfg.name = sfx.clone();
                cfg.return_sequences = true;
                cfg.return_state = true;
                cfg.use_bias = has_bias;
                cfg.go_backwards = d == 1;
                let t = |name: &str, v: Vec<f64>, shape: &[usize]| {
                    tensor_from(source, name, v, shape, dtype, device)
                };
                let gru = Gru::from_weights(
                    cfg,
                    t("kernel", k.kernel, &[in_dim, 3 * hidden])?,
                    t(
                        "recurrent_kernel",
                        k.recurrent_kernel,
                        &[hidden, 3 * hidden],
                    )?,
                    k.bias.map(|b| t("bias", b, &[2, 3 * hidden])).transpose()?,
                )?;
                directions.push(gru);
            }
            let layer = if dirs == 2 {
                let bw = directions.pop().expect("two directions");
                let fw = directions.pop().expect("two directions");
                StackLayer::Bidirectional(Box::new(Bidirectional::from_layers(
                    fw,
                    bw,
                    MergeMode::Concat,
                )?))
            } else {
                StackLayer::Gru(Box::new(directions.pop().expect("one direction")))
            };
            layers.push(layer);
        }
        Ok(TorchGru {
            stack: GruStack::new(layers)?,
            num_layers,
            bidirectional,
            hidden_size: hidden,
            input_size,
        })
    }

    /// The layers, as a Keras-style stack.
    pub fn stack(&self) -> &GruStack {
        &self.stack
    }

    /// `nn.GRU(batch_first=True)(x, h0)`: `x` (batch, T, input_size), `h0`
    /// (num_layers * directions, batch, hidden) or zeros. Returns `(output, h_n)`:
    /// output (batch, T, directions * hidden), h_n (num_layers * directions, batch, hidden).
    pub fn forward(&self, x: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let h0: Option<Vec<Tensor>> = match h0 {
            Some(h) => {
                let n = self.num_layers * if self.bidirectional { 2 } else { 1 };
                let b = x.dims().first().copied().unwrap_or(0);
                if h.dims() != [n, b, self.hidden_size] {
                    return Err(crate::Error::Gru(gru_core::GruError::Shape {
                        what: "h0".into(),
                        expected: format!(
                            "(num_layers * directions, batch, hidden) = [{n}, {b}, {}]",
                            self.hidden_size
                        ),
                        got: format!("{:?}", h.dims()),
                    }));
                }
                Some(
                    (0..n)
                        .map(|i| h.get(i))
                        .collect::<candle_core::Result<_>>()?,
                )
            }
            None => None,
        };
        let out = self.stack.call(x, None, h0.as_deref(), false)?;
        let h_n = Tensor::stack(&out.states, 0)?;
        Ok((out.output, h_n))
    }
}
