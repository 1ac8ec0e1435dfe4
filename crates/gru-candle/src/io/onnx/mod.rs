//! ONNX models' `GRU` nodes on Candle: each node becomes one Keras-exact [`Gru`] per
//! direction, so it runs on every path (cuDNN where the conditions hold, the fused CPU
//! kernels, the loop), with gradients.
//!
//! The file is decoded with prost types generated at build time from the vendored
//! `proto/onnx.proto` by protox (no system `protoc`). The mapping:
//! - `W[d]^T`, `R[d]^T` are Keras' `kernel` and `recurrent_kernel` (both use gate order z,
//!   r, h); `linear_before_reset = 1` is Keras' `reset_after = True` with bias
//!   `[Wb; Rb]`; `linear_before_reset = 0` is Keras' reset-before form with the one bias
//!   `Wb + Rb` (ONNX adds both candidate biases outside the recurrent product, as Keras adds
//!   its one).
//! - `direction = reverse` is Keras' `go_backwards` with the outputs flipped back to time
//!   order; `bidirectional` runs both.
//! - `sequence_lens` is a right-padded mask with `zero_output_for_mask`: `Y` is 0 past a
//!   row's length and `Y_h` is the state at its last valid step; a reverse direction starts
//!   at the row's last valid step.
//! - `activations` with `activation_alpha` / `activation_beta` (ONNX defaults per
//!   operator), `clip` (gru-core's `cell_clip`), `layout` 0 and 1.
//!
//! Only the top-level graph's nodes are read; `W`, `R`, `B` must be initializers or
//! `Constant` outputs. The layers' weights are trainable `Var`s.
//!
//! [`export_gru`] and [`export_bidirectional`] write a layer back as a model with one GRU
//! node.

mod build;
mod export;
mod node;
mod tensor;

pub use export::{export_bidirectional, export_gru};

/// The ONNX protobuf types (generated from the vendored `proto/onnx.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use crate::error::{file_error, Error, FileProblem, Result};
use crate::layer::Gru;
use crate::limits::Limits;
use crate::CallOptions;
use candle_core::{DType, Device, Tensor};
use gru_core::GruError;
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// A GRU node's `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `forward`.
    Forward,
    /// `reverse`.
    Reverse,
    /// `bidirectional`: forward then reverse, concatenated on the direction axis.
    Bidirectional,
}

impl Direction {
    /// The number of directions (ONNX's `num_directions`).
    pub fn count(self) -> usize {
        match self {
            Direction::Bidirectional => 2,
            _ => 1,
        }
    }
}

/// A GRU node's `layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 0: `X` (T, B, I), `Y` (T, D, B, H), `Y_h` (D, B, H).
    SeqMajor,
    /// 1: `X` (B, T, I), `Y` (B, T, D, H), `Y_h` (B, D, H).
    BatchMajor,
}

/// One ONNX `GRU` node as Keras-exact layers.
#[derive(Debug)]
pub struct OnnxGru {
    /// The node's name (its first output's name when it has none).
    pub name: String,
    /// `direction`.
    pub direction: Direction,
    /// `layout`.
    pub layout: Layout,
    /// `linear_before_reset` (Keras' `reset_after`).
    pub linear_before_reset: bool,
    /// `clip`, if any.
    pub clip: Option<f32>,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// The input feature size.
    pub input_size: usize,
    forward: Gru,
    backward: Option<Gru>,
}

/// The GRU nodes of an ONNX model.
#[derive(Debug)]
pub struct OnnxModel {
    /// The model's `GRU` nodes, in graph order.
    pub grus: Vec<OnnxGru>,
}

impl OnnxModel {
    /// Reads every `GRU` node of an `.onnx` file, its layers in `dtype` on `device`.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<OnnxModel> {
        Self::load_with_limits(path, dtype, device, &Limits::default())
    }

    /// [`OnnxModel::load`] under other size limits.
    pub fn load_with_limits(
        path: &Path,
        dtype: DType,
        device: &Device,
        limits: &Limits,
    ) -> Result<OnnxModel> {
        let source = path.display().to_string();
        let meta = std::fs::metadata(path)
            .map_err(|e| file_error(&source, FileProblem::Unreadable(e.to_string())))?;
        if meta.len() > limits.max_member_bytes {
            return Err(Error::Gru(GruError::TooLarge {
                what: source,
                limit: format!(
                    "{} bytes (Limits::max_member_bytes)",
                    limits.max_member_bytes
                ),
                needed: format!("{} bytes", meta.len()),
            }));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| file_error(&source, FileProblem::Unreadable(e.to_string())))?;
        Self::from_bytes(&bytes, &source, dtype, device, limits)
    }

    /// Reads the `GRU` nodes of an ONNX model's bytes; `source` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        source: &str,
        dtype: DType,
        device: &Device,
        limits: &Limits,
    ) -> Result<OnnxModel> {
        let model = proto::ModelProto::decode(bytes).map_err(|e| {
            file_error(
                source,
                FileProblem::Unreadable(format!("not an ONNX model: {e}")),
            )
        })?;
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| file_error(source, FileProblem::Missing("graph".into())))?;
        let mut constants: HashMap<&str, &proto::TensorProto> = HashMap::new();
        for t in &graph.initializer {
            constants.insert(t.name.as_deref().unwrap_or(""), t);
        }
        for n in graph
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("Constant"))
        {
            let value = n
                .attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("value"));
            if let (Some(out), Some(t)) = (n.output.first(), value.and_then(|a| a.t.as_ref())) {
                constants.insert(out.as_str(), t);
            }
        }
        let ctx = node::Context {
            source,
            constants,
            dtype,
            device,
            max_bytes: limits.max_weight_bytes,
        };
        let mut grus = Vec::new();
        for (k, n) in graph.node.iter().enumerate() {
            if n.op_type.as_deref() != Some("GRU")
                || !matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx"))
            {
                continue;
            }
            let name = match (n.name.as_deref(), n.output.first()) {
                (Some(nm), _) if !nm.is_empty() => nm.to_string(),
                (_, Some(out)) if !out.is_empty() => out.clone(),
                _ => format!("GRU_{k}"),
            };
            grus.push(node::read(&ctx, n, name)?);
        }
        if grus.is_empty() {
            return Err(file_error(
                source,
                FileProblem::Missing("a GRU node".into()),
            ));
        }
        Ok(OnnxModel { grus })
    }

    /// The GRU node named `name`.
    pub fn gru(&self, name: &str) -> Option<&OnnxGru> {
        self.grus.iter().find(|g| g.name == name)
    }
}

fn shape_err(what: String, expected: String, got: &Tensor) -> Error {
    Error::Gru(GruError::Shape {
        what,
        expected,
        got: format!("{:?}", got.dims()),
    })
}

impl OnnxGru {
    /// The layer of each direction: forward (or reverse for a reverse node), then the
    /// reverse one of a bidirectional node.
    pub fn layers(&self) -> (&Gru, Option<&Gru>) {
        (&self.forward, self.backward.as_ref())
    }

    /// The same node with its layers on another CPU path (the fused kernels are the
    /// default; the loop is the reference).
    pub fn with_cpu_path(mut self, path: crate::CpuPath) -> OnnxGru {
        self.forward = self.forward.with_cpu_path(path);
        self.backward = self.backward.map(|g| g.with_cpu_path(path));
        self
    }

    /// Runs the node: `x` in the node's layout, `sequence_lens` (batch) int32/int64/u32,
    /// `initial_h` (D, B, H) or (B, D, H). Returns ONNX's `(Y, Y_h)` in the node's layout.
    pub fn forward(
        &self,
        x: &Tensor,
        sequence_lens: Option<&Tensor>,
        initial_h: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let xb = match (self.layout, x.rank()) {
            (Layout::SeqMajor, 3) => x.transpose(0, 1)?.contiguous()?,
            (Layout::BatchMajor, 3) => x.clone(),
            _ => {
                return Err(shape_err(
                    format!("GRU node {:?}: X", self.name),
                    "rank 3".into(),
                    x,
                ))
            }
        };
        let (b, t, i) = xb.dims3()?;
        if i != self.input_size {
            let expected = format!("{} input features", self.input_size);
            return Err(shape_err(
                format!("GRU node {:?}: X", self.name),
                expected,
                x,
            ));
        }
        let mask = self.mask(sequence_lens, b, t, xb.device())?;
        let h0 = self.initial_states(initial_h, b)?;
        let (mut ys, mut hs) = (Vec::new(), Vec::new());
        for (k, g) in std::iter::once(&self.forward)
            .chain(&self.backward)
            .enumerate()
        {
            let opts = CallOptions {
                mask: mask.as_ref(),
                initial_state: h0.get(k),
                training: false,
            };
            let out = g.call(&xb, opts)?;
            let seq = match g.config().go_backwards {
                true => flip_time(&out.output)?,
                false => out.output,
            };
            ys.push(seq);
            hs.push(
                out.state
                    .ok_or_else(|| internal("a direction returned no state"))?,
            );
        }
        Ok(match self.layout {
            Layout::SeqMajor => {
                let ys: Vec<Tensor> = ys
                    .iter()
                    .map(|y| y.transpose(0, 1))
                    .collect::<candle_core::Result<_>>()?;
                (Tensor::stack(&ys, 1)?, Tensor::stack(&hs, 0)?)
            }
            Layout::BatchMajor => (Tensor::stack(&ys, 2)?, Tensor::stack(&hs, 1)?),
        })
    }

    /// The right-padded mask of `sequence_lens` (none when every row is full).
    fn mask(
        &self,
        lens: Option<&Tensor>,
        b: usize,
        t: usize,
        dev: &Device,
    ) -> Result<Option<Tensor>> {
        let Some(lens) = lens else {
            return Ok(None);
        };
        let what = format!("GRU node {:?}: sequence_lens", self.name);
        if lens.dims() != [b] {
            return Err(shape_err(what, format!("[{b}] (the batch)"), lens));
        }
        let values: Vec<i64> = match lens.dtype() {
            DType::I64 | DType::U32 | DType::U8 => lens.to_dtype(DType::I64)?.to_vec1()?,
            DType::I32 => lens.to_dtype(DType::I64)?.to_vec1()?,
            other => {
                let got = format!("{other:?}");
                return Err(Error::Gru(GruError::DType {
                    what,
                    expected: "int32 or int64".into(),
                    got,
                }));
            }
        };
        if let Some(bad) = values.iter().find(|&&l| l < 0 || l as usize > t) {
            let expected = format!("lengths in 0..={t} (the sequence length)");
            return Err(Error::Gru(GruError::OutOfRange {
                what,
                expected,
                got: bad.to_string(),
            }));
        }
        if values.iter().all(|&l| l as usize == t) {
            return Ok(None);
        }
        let m: Vec<u8> = (0..b * t)
            .map(|n| ((n % t) < values[n / t] as usize) as u8)
            .collect();
        Ok(Some(Tensor::from_vec(m, (b, t), dev)?))
    }

    /// Each direction's initial state (B, H) from `initial_h`.
    fn initial_states(&self, h: Option<&Tensor>, b: usize) -> Result<Vec<Tensor>> {
        let Some(h) = h else {
            return Ok(Vec::new());
        };
        let (d, hs) = (self.direction.count(), self.hidden_size);
        let want: Vec<usize> = match self.layout {
            Layout::SeqMajor => vec![d, b, hs],
            Layout::BatchMajor => vec![b, d, hs],
        };
        if h.dims() != want.as_slice() {
            return Err(shape_err(
                format!("GRU node {:?}: initial_h", self.name),
                format!("{want:?}"),
                h,
            ));
        }
        let axis = match self.layout {
            Layout::SeqMajor => 0,
            Layout::BatchMajor => 1,
        };
        (0..d)
            .map(|k| Ok(h.narrow(axis, k, 1)?.squeeze(axis)?.contiguous()?))
            .collect()
    }
}

fn internal(what: &str) -> Error {
    Error::Gru(GruError::Internal { what: what.into() })
}

/// Reverses the time axis (1) of (B, T, H).
fn flip_time(y: &Tensor) -> Result<Tensor> {
    let t = y.dim(1)?;
    let idx: Vec<u32> = (0..t as u32).rev().collect();
    Ok(y.index_select(&Tensor::from_vec(idx, t, y.device())?, 1)?)
}
