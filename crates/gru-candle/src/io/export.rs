//! A layer's weights to safetensors under Keras' names (`kernel`, `recurrent_kernel`,
//! `bias`) and back; its config travels as Keras JSON (`GruConfig::to_keras_json`).

use crate::error::{file_error, FileProblem, Result};
use crate::layer::Gru;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use gru_core::GruConfig;
use std::collections::HashMap;
use std::path::Path;

/// Writes the layer's weights to a safetensors file under Keras' names.
pub fn save_safetensors(gru: &Gru, path: &Path) -> Result<()> {
    let mut map: HashMap<String, Tensor> = HashMap::new();
    map.insert("kernel".into(), gru.kernel().clone());
    map.insert("recurrent_kernel".into(), gru.recurrent_kernel().clone());
    if let Some(b) = gru.bias() {
        map.insert("bias".into(), b.clone());
    }
    candle_core::safetensors::save(&map, path).map_err(|e| {
        file_error(
            path.display().to_string(),
            FileProblem::Unwritable(e.to_string()),
        )
    })
}

/// Builds a layer from a config and a safetensors file written by [`save_safetensors`] (or
/// any file with Keras-named, Keras-shaped `kernel`, `recurrent_kernel`, `bias`).
pub fn load_safetensors(
    config: GruConfig,
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<Gru> {
    let source = path.display().to_string();
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| file_error(&source, FileProblem::Unreadable(e.to_string())))?;
    let input_dim = match tensors.get("kernel").map(|k| k.dims().to_vec()) {
        Some(d) if d.len() == 2 => d[0],
        Some(d) => {
            return Err(file_error(
                &source,
                FileProblem::Shape {
                    name: "kernel".into(),
                    expected: vec![0, 3 * config.units],
                    got: d,
                },
            ))
        }
        None => return Err(file_error(&source, FileProblem::Missing("kernel".into()))),
    };
    for name in ["recurrent_kernel", "bias"] {
        if name == "bias" && !config.use_bias {
            continue;
        }
        if !tensors.contains_key(name) {
            return Err(file_error(&source, FileProblem::Missing(name.into())));
        }
    }
    Gru::new(
        config,
        input_dim,
        VarBuilder::from_tensors(tensors, dtype, device),
    )
}
