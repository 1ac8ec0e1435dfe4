//! A layer's weights to safetensors under Keras' names (`kernel`, `recurrent_kernel`,
//! `bias`) and back; its config travels as Keras JSON (`GruConfig::to_keras_json`). GRU
//! layers as a PyTorch `nn.GRU` state_dict (`save_torch`).

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

/// Writes GRU layers as the state_dict of one PyTorch `nn.GRU` (safetensors; keys
/// `{prefix}weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`, with
/// `_reverse` for a backward direction), which `nn.GRU(...).load_state_dict` takes and
/// [`crate::io::torch::TorchGru`] reads. `layers` holds each layer's forward GRU and, for a
/// bidirectional layer, its backward one (PyTorch concatenates the two).
///
/// PyTorch's GRU is one form of Keras': `reset_after`, tanh and sigmoid, one hidden size
/// and one bias setting for all layers, every layer or none bidirectional, the backward
/// direction `go_backwards`; anything else is an `InvalidConfig` error naming the setting.
pub fn save_torch(layers: &[(&Gru, Option<&Gru>)], prefix: &str, path: &Path) -> Result<()> {
    let Some(((first, first_bw), _)) = layers.split_first() else {
        return Err(torch_form("layers", "at least one layer", "none".into()));
    };
    let (units, bias, bidirectional) = (
        first.config().units,
        first.config().use_bias,
        first_bw.is_some(),
    );
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (k, (fw, bw)) in layers.iter().enumerate() {
        if bw.is_some() != bidirectional {
            return Err(torch_form(
                "bidirectional",
                "the same for every layer",
                format!("layer {k} differs"),
            ));
        }
        let directions = std::iter::once((*fw, false, "")).chain(bw.map(|b| (b, true, "_reverse")));
        for (gru, backward, sfx) in directions {
            let c = gru.config();
            let checks = [
                ("reset_after", c.reset_after, "true (PyTorch's form)"),
                (
                    "activation",
                    c.activation == gru_core::Activation::Tanh,
                    "tanh",
                ),
                (
                    "recurrent_activation",
                    c.recurrent_activation == gru_core::Activation::Sigmoid,
                    "sigmoid",
                ),
                (
                    "units",
                    c.units == units,
                    "the same for every layer (hidden_size)",
                ),
                (
                    "use_bias",
                    c.use_bias == bias,
                    "the same for every layer (bias)",
                ),
                (
                    "go_backwards",
                    c.go_backwards == backward,
                    "true on the backward direction only",
                ),
            ];
            if let Some((key, _, expected)) = checks.iter().find(|c| !c.1) {
                return Err(torch_form(
                    key,
                    expected,
                    format!("layer {k}{sfx}: {}", c.to_keras_json()[*key]),
                ));
            }
            let values = |t: &Tensor| -> Result<Vec<f64>> {
                Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
            };
            let w = gru_core::layout::KerasWeights {
                kernel: values(gru.kernel())?,
                recurrent_kernel: values(gru.recurrent_kernel())?,
                bias: gru.bias().map(values).transpose()?,
                input_dim: gru.input_dim(),
                units,
            }
            .to_torch()?;
            let dtype = gru.kernel().dtype();
            let mut put = |name: &str, v: Vec<f64>, shape: (usize, usize)| -> Result<()> {
                let t = Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?;
                let t = if shape.1 == 0 { t.flatten_all()? } else { t };
                map.insert(format!("{prefix}{name}_l{k}{sfx}"), t);
                Ok(())
            };
            put("weight_ih", w.weight_ih, (3 * units, gru.input_dim()))?;
            put("weight_hh", w.weight_hh, (3 * units, units))?;
            if let (Some(bi), Some(bh)) = (w.bias_ih, w.bias_hh) {
                let bias = |v: Vec<f64>| Tensor::from_vec(v, 3 * units, &Device::Cpu);
                map.insert(
                    format!("{prefix}bias_ih_l{k}{sfx}"),
                    bias(bi)?.to_dtype(dtype)?,
                );
                map.insert(
                    format!("{prefix}bias_hh_l{k}{sfx}"),
                    bias(bh)?.to_dtype(dtype)?,
                );
            }
        }
    }
    candle_core::safetensors::save(&map, path).map_err(|e| {
        file_error(
            path.display().to_string(),
            FileProblem::Unwritable(e.to_string()),
        )
    })
}

/// [`save_torch`] of a stack's layers (a [`crate::GruStack`] or a loaded
/// [`crate::io::torch::TorchGru`]'s).
pub fn save_torch_stack(stack: &crate::stack::GruStack, prefix: &str, path: &Path) -> Result<()> {
    let mut layers: Vec<(&Gru, Option<&Gru>)> = Vec::new();
    for l in stack.layers() {
        layers.push(match l {
            crate::stack::StackLayer::Gru(g) => (&**g, None),
            crate::stack::StackLayer::Bidirectional(b) => {
                if b.merge_mode() != crate::bidirectional::MergeMode::Concat {
                    let got = format!("{:?}", b.merge_mode());
                    return Err(torch_form(
                        "merge_mode",
                        "concat (nn.GRU concatenates)",
                        got,
                    ));
                }
                (b.forward_layer(), Some(b.backward_layer()))
            }
        });
    }
    save_torch(&layers, prefix, path)
}

fn torch_form(key: &str, expected: &str, got: String) -> crate::Error {
    crate::Error::Gru(gru_core::GruError::InvalidConfig {
        key: key.into(),
        expected: format!("{expected}, to be written as a PyTorch nn.GRU"),
        got,
    })
}
