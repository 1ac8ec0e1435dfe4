//! A [`Gru`] or a [`Bidirectional`] as an ONNX model with one `GRU` node (opset 14,
//! layout 0): inputs `X` (T, B, I) and `initial_h` (D, B, H), outputs `Y` (T, D, B, H) and
//! `Y_h` (D, B, H), weights as float32 initializers.
//!
//! The node computes the layer's function with ONNX's conventions: `Y` is in time order (a
//! `go_backwards` layer is a `reverse` node, whose `Y` is the layer's sequence flipped back),
//! and ONNX has no masks (only right-padding `sequence_lens`, with zeros past each length).
//! Keras' reset-before form is `linear_before_reset = 0` with `B = [bias; 0]`.

use super::proto::{
    tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::bidirectional::Bidirectional;
use crate::error::{Error, Result};
use crate::layer::Gru;
use candle_core::{DType, Tensor};
use gru_core::activation::onnx::to_onnx;
use gru_core::GruError;
use prost::Message;

fn unsupported(what: String) -> Error {
    Error::Gru(GruError::InvalidConfig {
        key: "onnx export".into(),
        expected: "a GRU ONNX's GRU operator can express".into(),
        got: what,
    })
}

/// An ONNX model computing `gru`.
pub fn export_gru(gru: &Gru) -> Result<Vec<u8>> {
    let direction = if gru.config().go_backwards {
        "reverse"
    } else {
        "forward"
    };
    model(&[gru], direction)
}

/// An ONNX model computing both directions of `b` (one `bidirectional` node; the merge mode
/// is for the caller to apply to `Y`'s direction axis).
pub fn export_bidirectional(b: &Bidirectional) -> Result<Vec<u8>> {
    let (fw, bw) = (b.forward_layer(), b.backward_layer());
    let (cf, cb) = (fw.config(), bw.config());
    if cf.go_backwards || !cb.go_backwards {
        return Err(unsupported(
            "a backward layer that does not go backwards".into(),
        ));
    }
    if (cf.units, cf.reset_after, cf.use_bias, cf.cell_clip)
        != (cb.units, cb.reset_after, cb.use_bias, cb.cell_clip)
        || fw.input_dim() != bw.input_dim()
    {
        return Err(unsupported(
            "directions of different units, forms, biases or clips".into(),
        ));
    }
    model(&[fw, bw], "bidirectional")
}

/// One direction's ONNX weights, row-major float32.
struct OnnxWeights {
    w: Vec<f32>,
    r: Vec<f32>,
    b: Option<Vec<f32>>,
}

/// `W = kernel^T`, `R = recurrent^T`, `B = [Wb; Rb]` (reset-before: `[bias; 0]`).
fn weights(g: &Gru) -> Result<OnnxWeights> {
    let host = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.t()?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    };
    let (w, r) = (host(g.kernel())?, host(g.recurrent_kernel())?);
    let b = match g.bias() {
        None => None,
        Some(b) => {
            let v: Vec<f32> = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            Some(match g.config().reset_after {
                true => v,
                false => [v, vec![0.0; 3 * g.config().units]].concat(),
            })
        }
    };
    Ok(OnnxWeights { w, r, b })
}

fn model(dirs: &[&Gru], direction: &str) -> Result<Vec<u8>> {
    let first = dirs[0].config();
    let (d, h, i) = (dirs.len(), first.units, dirs[0].input_dim());
    let (mut w, mut r, mut b) = (Vec::new(), Vec::new(), Vec::new());
    let (mut names, mut alphas, mut betas) = (Vec::new(), Vec::new(), Vec::new());
    for g in dirs {
        let gw = weights(g)?;
        w.extend(gw.w);
        r.extend(gw.r);
        b.extend(gw.b.unwrap_or_default());
        for act in [g.config().recurrent_activation, g.config().activation] {
            let (name, alpha, beta) =
                to_onnx(act).ok_or_else(|| unsupported(format!("activation {}", act.name())))?;
            names.push(name);
            alphas.extend(alpha);
            betas.extend(beta);
        }
    }
    let mut inits = vec![
        TensorProto::float32("W", &[d, 3 * h, i], &w),
        TensorProto::float32("R", &[d, 3 * h, h], &r),
    ];
    let mut inputs = vec![
        "X".to_string(),
        "W".into(),
        "R".into(),
        String::new(),
        String::new(),
        "initial_h".into(),
    ];
    if first.use_bias {
        inits.push(TensorProto::float32("B", &[d, 6 * h], &b));
        inputs[3] = "B".into();
    }
    let mut attrs = vec![
        AttributeProto::int("hidden_size", h as i64),
        AttributeProto::int("linear_before_reset", first.reset_after as i64),
        AttributeProto::string("direction", direction),
        AttributeProto::strings("activations", &names),
        AttributeProto::floats("activation_alpha", alphas),
        AttributeProto::floats("activation_beta", betas),
    ];
    if let Some(c) = first.cell_clip {
        attrs.push(AttributeProto::float("clip", c as f32));
    }
    let node = NodeProto {
        name: Some(first.name.clone()),
        op_type: Some("GRU".into()),
        input: inputs,
        output: vec!["Y".into(), "Y_h".into()],
        attribute: attrs,
        ..Default::default()
    };
    let graph = GraphProto {
        name: Some("candle_gru".into()),
        node: vec![node],
        initializer: inits,
        input: vec![
            value_info("X", &["T", "B"], &[i]),
            value_info("initial_h", &[], &[d, 0, h]),
        ],
        output: vec![
            value_info("Y", &["T"], &[d, 0, h]),
            value_info("Y_h", &[], &[d, 0, h]),
        ],
        ..Default::default()
    };
    let opset = OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(14),
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![opset],
        producer_name: Some("candle-gru".into()),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

/// A float32 value of shape `[symbols..., dims...]` (a symbol for each named dim, a 0 dim
/// for the batch "B").
fn value_info(name: &str, symbols: &[&str], dims: &[usize]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    let mut shape: Vec<Dimension> = symbols
        .iter()
        .map(|s| Dimension {
            value: Some(Value::DimParam(s.to_string())),
            ..Default::default()
        })
        .collect();
    shape.extend(dims.iter().map(|&d| Dimension {
        value: Some(match d {
            0 => Value::DimParam("B".into()),
            d => Value::DimValue(d as i64),
        }),
        ..Default::default()
    }));
    let tensor_type = type_proto::Tensor {
        elem_type: Some(DataType::Float as i32),
        shape: Some(TensorShapeProto { dim: shape }),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor_type)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
