//! A Keras 3 model made of layers built in Rust ([`KerasModel::from_layers`]): the config
//! Keras 3 writes for `keras.Model(inputs, outputs)` over those layers in a chain, and
//! their variables at Keras 3's object-tree paths. The model is built from that config
//! and those variables by the same reader as a file, so what [`KerasModel::save`] writes
//! is what this crate reads.

use super::save::weights_h5_bytes;
use super::weights::Weights;
use super::{malformed, snake, KerasModel};
use crate::bidirectional::Bidirectional;
use crate::error::{Error, Result};
use crate::layer::Gru;
use crate::stack::StackLayer;
use candle_core::{DType, Device, Tensor};
use gru_core::GruError;
use hdf5_reader::Hdf5File;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A layer built in Rust, as one layer of [`KerasModel::from_layers`].
#[derive(Debug, Clone, Copy)]
pub enum KerasLayer<'a> {
    /// `keras.layers.GRU`.
    Gru(&'a Gru),
    /// `keras.layers.Bidirectional(GRU)`.
    Bidirectional(&'a Bidirectional),
}

impl<'a> From<&'a StackLayer> for KerasLayer<'a> {
    /// A layer of a [`crate::GruStack`]: `stack.layers().iter().map(KerasLayer::from)`.
    fn from(layer: &'a StackLayer) -> Self {
        match layer {
            StackLayer::Gru(g) => KerasLayer::Gru(g),
            StackLayer::Bidirectional(b) => KerasLayer::Bidirectional(b),
        }
    }
}

impl KerasLayer<'_> {
    /// The layer's GRU config (a Bidirectional's forward layer's).
    fn gru_config(&self) -> &gru_core::GruConfig {
        self.gru().config()
    }

    /// The layer's (forward) GRU.
    fn gru(&self) -> &Gru {
        match self {
            KerasLayer::Gru(g) => g,
            KerasLayer::Bidirectional(b) => b.forward_layer(),
        }
    }

    fn class(&self) -> &'static str {
        match self {
            KerasLayer::Gru(_) => "GRU",
            KerasLayer::Bidirectional(_) => "Bidirectional",
        }
    }

    fn input_dim(&self) -> usize {
        self.gru().input_dim()
    }

    /// The feature size of output 0 (the tensor the next layer takes).
    fn output_dim(&self) -> usize {
        match self {
            KerasLayer::Gru(g) => g.config().units,
            KerasLayer::Bidirectional(b) => b.output_dim(),
        }
    }

    /// How many tensors a call returns (Keras' order: outputs, then states).
    fn outputs(&self) -> usize {
        match self {
            KerasLayer::Gru(g) => 1 + usize::from(g.config().return_state),
            KerasLayer::Bidirectional(b) => {
                let merged = match b.merge_mode() {
                    crate::bidirectional::MergeMode::None => 2,
                    _ => 1,
                };
                merged + 2 * usize::from(b.forward_layer().config().return_state)
            }
        }
    }

    /// The layer's own name (Keras' default for a Bidirectional).
    fn name(&self) -> String {
        match self {
            KerasLayer::Gru(g) => g.config().name.clone(),
            KerasLayer::Bidirectional(_) => "bidirectional".into(),
        }
    }
}

/// `[None, None, dim]`: any batch, any number of steps.
fn sequence_shape(dim: usize) -> Value {
    json!([null, null, dim])
}

/// A GRU's entry of a config (`get_config()` plus what `serialize_keras_object` adds).
fn gru_entry(g: &Gru, name: &str) -> Value {
    let mut config = g.config().to_keras_json();
    config["name"] = json!(name);
    json!({
        "module": "keras.layers",
        "class_name": "GRU",
        "config": config,
        "registered_name": null,
        "build_config": {"input_shape": sequence_shape(g.input_dim())},
    })
}

fn layer_entry(layer: KerasLayer, name: &str) -> Value {
    match layer {
        KerasLayer::Gru(g) => gru_entry(g, name),
        KerasLayer::Bidirectional(b) => {
            let (f, bw) = (b.forward_layer(), b.backward_layer());
            json!({
                "module": "keras.layers",
                "class_name": "Bidirectional",
                "config": {
                    "name": name,
                    "trainable": f.config().trainable,
                    "dtype": f.config().to_keras_json()["dtype"].clone(),
                    "merge_mode": b.merge_mode().to_keras_value(),
                    "layer": gru_entry(f, &f.config().name),
                    "backward_layer": gru_entry(bw, &bw.config().name),
                },
                "registered_name": null,
                "build_config": {"input_shape": sequence_shape(f.input_dim())},
            })
        }
    }
}

/// The layer's variables under `group` (its object-tree path), in Keras' order.
fn layer_variables(layer: KerasLayer, group: &str, out: &mut Vec<(String, Tensor)>) {
    let mut gru = |g: &Gru, at: String| {
        for (k, t) in g.weights().into_iter().enumerate() {
            out.push((format!("{at}/cell/vars/{k}"), t.clone()));
        }
    };
    match layer {
        KerasLayer::Gru(g) => gru(g, group.to_string()),
        KerasLayer::Bidirectional(b) => {
            gru(b.forward_layer(), format!("{group}/forward_layer"));
            gru(b.backward_layer(), format!("{group}/backward_layer"));
        }
    }
}

/// `name`, or `name_1`, `name_2`, ... if taken.
fn unique(name: &str, taken: &mut HashMap<String, usize>) -> String {
    let mut candidate = name.to_string();
    while taken.contains_key(&candidate) {
        let n = taken.entry(name.to_string()).or_insert(0);
        *n += 1;
        candidate = format!("{name}_{n}");
    }
    taken.insert(candidate.clone(), 0);
    candidate
}

fn keras_tensor(dim: usize, from: &str, dtype: &str) -> Value {
    json!({"class_name": "__keras_tensor__", "config": {
        "shape": sequence_shape(dim), "dtype": dtype, "keras_history": [from, 0, 0]}})
}

/// Layer `k` fits the chain: its input size is `prev_dim`, a layer before it returns
/// sequences, and it is not stateful (a stateful Keras layer needs the batch size fixed in
/// the model's input).
fn check_link(
    k: usize,
    layer: KerasLayer,
    prev_dim: usize,
    prev: Option<KerasLayer>,
) -> Result<()> {
    let invalid = |key: String, expected: &str, got: &str| {
        Err(Error::Gru(GruError::InvalidConfig {
            key,
            expected: expected.into(),
            got: got.into(),
        }))
    };
    if layer.gru_config().stateful {
        let expected = "false (the model's input takes any batch size)";
        return invalid(format!("layers[{k}].stateful"), expected, "true");
    }
    if prev.is_some_and(|p| !p.gru_config().return_sequences) {
        let expected = "true (a following layer reads its sequence)";
        return invalid(
            format!("layers[{}].return_sequences", k - 1),
            expected,
            "false",
        );
    }
    if layer.input_dim() != prev_dim {
        return Err(Error::Gru(GruError::Shape {
            what: format!("layers[{k}] input (the previous layer's output)"),
            expected: format!("{} features", layer.input_dim()),
            got: format!("{prev_dim} features"),
        }));
    }
    Ok(())
}

/// Every layer's weights have `dtype` and live on `device` (the model holds one of each).
fn same_storage(layers: &[KerasLayer], dtype: DType, device: &Device) -> Result<()> {
    for (k, layer) in layers.iter().enumerate() {
        let g = layer.gru();
        let what = || format!("layers[{k}] weights (the model's are layers[0]'s)");
        if g.dtype() != dtype {
            return Err(Error::Gru(GruError::DType {
                what: what(),
                expected: format!("{dtype:?}"),
                got: format!("{:?}", g.dtype()),
            }));
        }
        if !g.device().same_device(device) {
            return Err(Error::Gru(GruError::Device {
                what: what(),
                expected: format!("{device:?}"),
                got: format!("{:?}", g.device()),
            }));
        }
    }
    Ok(())
}

impl KerasModel {
    /// A Keras 3 functional model of `layers` in a chain: an `InputLayer` of
    /// `(None, None, input_dim)`, then each layer called on the previous layer's first
    /// output; the model's outputs are every output of the last layer. The variables are
    /// the layers' current values. Write it with [`KerasModel::save`] (Keras 3's
    /// `keras.saving.load_model` reads it) or [`KerasModel::save_weights_h5`]; it also runs
    /// here like any loaded model. Layer names are the layers' own (`name_1`, ... where
    /// two agree), a Bidirectional's `bidirectional`.
    ///
    /// Errors: no layers, layers of different dtypes or devices (`GruError::DType`,
    /// `GruError::Device`), a stateful layer or one before another that does not return
    /// sequences (`GruError::InvalidConfig` naming it), a layer whose input size is not its
    /// predecessor's output size (`GruError::Shape`). A [`crate::GruStack`]'s layers:
    /// `stack.layers().iter().map(KerasLayer::from).collect::<Vec<_>>()`.
    pub fn from_layers(layers: &[KerasLayer], input_dim: usize) -> Result<KerasModel> {
        let Some(first) = layers.first() else {
            return Err(Error::Gru(GruError::InvalidConfig {
                key: "layers".into(),
                expected: "at least one layer".into(),
                got: "none".into(),
            }));
        };
        let (dtype, device) = (first.gru().dtype(), first.gru().device().clone());
        same_storage(layers, dtype, &device)?;
        let mut taken = HashMap::new();
        let input = unique("input_layer", &mut taken);
        let mut entries = vec![json!({
            "module": "keras.layers",
            "class_name": "InputLayer",
            "config": {"batch_shape": sequence_shape(input_dim), "dtype": "float32",
                "sparse": false, "ragged": false, "name": input, "optional": false},
            "registered_name": null,
            "name": input,
            "inbound_nodes": [],
        })];
        let mut variables = Vec::new();
        let mut groups: HashMap<&str, usize> = HashMap::new();
        let (mut prev, mut prev_dim) = (input.clone(), input_dim);
        for (k, &layer) in layers.iter().enumerate() {
            check_link(k, layer, prev_dim, k.checked_sub(1).map(|p| layers[p]))?;
            let name = unique(&layer.name(), &mut taken);
            let mut entry = layer_entry(layer, &name);
            entry["name"] = json!(name);
            entry["inbound_nodes"] = json!([{
                "args": [keras_tensor(prev_dim, &prev, "float32")],
                "kwargs": {"mask": null},
            }]);
            entries.push(entry);
            let count = groups.entry(layer.class()).or_insert(0);
            let group = match *count {
                0 => format!("layers/{}", snake(layer.class())),
                n => format!("layers/{}_{n}", snake(layer.class())),
            };
            *count += 1;
            layer_variables(layer, &group, &mut variables);
            (prev, prev_dim) = (name, layer.output_dim());
        }
        let last = layers.len() - 1;
        let outputs: Vec<Value> = (0..layers[last].outputs())
            .map(|i| json!([prev, 0, i]))
            .collect();
        let config = json!({
            "module": "keras.src.models.functional",
            "class_name": "Functional",
            "config": {
                "name": "functional",
                "trainable": true,
                "layers": entries,
                "input_layers": [input, 0, 0],
                "output_layers": match outputs.len() { 1 => outputs[0].clone(), _ => json!(outputs) },
            },
            "registered_name": "Functional",
            "build_config": {"input_shape": null},
            "compile_config": null,
        });
        let source = "KerasModel::from_layers".to_string();
        let bytes = weights_h5_bytes(&variables)?;
        let file = Hdf5File::from_vec(bytes).map_err(|e| malformed(&source, e.to_string()))?;
        let mut w = Weights::new(file, source, u64::MAX, None)?;
        w.keras_version = Some(super::save::KERAS_VERSION.to_string());
        super::walk::build(&config, w, dtype, &device)
    }
}
