//! Model and weight files: Keras (`.keras` archives, `.weights.h5`), PyTorch `nn.GRU`
//! state_dicts (safetensors), ONNX `GRU` nodes, and export of a layer's weights under Keras
//! names.

pub mod export;
pub mod keras;
pub mod onnx;
pub mod torch;

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
