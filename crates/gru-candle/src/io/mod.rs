//! Model and weight files: Keras (`.keras` archives, `.weights.h5`), PyTorch `nn.GRU` and
//! `nn.GRUCell` state_dicts (safetensors), ONNX `GRU` nodes, and export of a layer's weights under Keras
//! names.

pub mod export;
pub mod keras;
pub mod onnx;
pub mod torch;
pub mod torch_cell;

use crate::error::{file_error, FileProblem, Result};
use candle_core::{DType, Device, Tensor};

/// Makes a tensor of `dtype` on `device` from f64 values, checking the element count.
pub(crate) fn tensor_from(
    source: &str,
    name: &str,
    values: Vec<f64>,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let want: usize = shape.iter().product();
    if values.len() != want {
        return Err(file_error(
            source,
            FileProblem::Unreadable(format!(
                "{name}: {} values for shape {shape:?}",
                values.len()
            )),
        ));
    }
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// The shape check every loader does before building a layer.
pub(crate) fn check_shape(
    source: &str,
    name: &str,
    got: &[usize],
    expected: &[usize],
) -> Result<()> {
    if got != expected {
        return Err(file_error(
            source,
            FileProblem::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: got.to_vec(),
            },
        ));
    }
    Ok(())
}

/// Registers a weight in `vars` under `path` as a `Var`, and returns the Var's tensor.
pub(crate) fn register_var(vars: &candle_nn::VarMap, path: &str, t: Tensor) -> Result<Tensor> {
    let mut data = vars.data().lock().map_err(|_| {
        crate::Error::Candle(candle_core::Error::Msg("VarMap lock poisoned".into()))
    })?;
    if data.contains_key(path) {
        return Err(crate::Error::Gru(gru_core::GruError::InvalidConfig {
            key: path.to_string(),
            expected: "a VarMap that does not hold this variable yet".into(),
            got: "a VarMap that already holds it".into(),
        }));
    }
    let var = candle_core::Var::from_tensor(&t)?;
    let tensor = var.as_tensor().clone();
    data.insert(path.to_string(), var);
    Ok(tensor)
}
