//! A Keras 3 model made of layers built in Rust ([`KerasModel::from_layers`]): the config
//! Keras 3 writes for `keras.Model(inputs, outputs)` over those layers in a chain (with the
//! `NotEqual` mask operation it records for an `Embedding(mask_zero=True)`), and their
//! variables at Keras 3's object-tree paths. The model is built from that config and those
//! variables by the same reader as a file, so what [`KerasModel::save`] writes is what this
//! crate reads.

use super::save::weights_h5_bytes;
use super::weights::Weights;
use super::{malformed, snake, KerasModel};
use crate::bidirectional::{Bidirectional, MergeMode};
use crate::error::{Error, Result};
use crate::layer::Gru;
use crate::stack::StackLayer;
use candle_core::{DType, Device, Tensor};
use gru_core::GruError;
use hdf5_reader::Hdf5File;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// A layer built in Rust, as one layer of [`KerasModel::from_layers`].
#[derive(Debug, Clone, Copy)]
pub enum KerasLayer<'a> {
    /// `keras.layers.GRU`.
    Gru(&'a Gru),
    /// `keras.layers.Bidirectional(GRU)`.
    Bidirectional(&'a Bidirectional),
    /// `keras.layers.Embedding` (first layer only: the model then takes token ids): a
    /// candle-nn embedding table (vocabulary, features). With `mask_zero`, id 0 is padding
    /// and the recurrent layers after it skip those steps, as in Keras.
    Embedding {
        /// The table.
        table: &'a candle_nn::Embedding,
        /// Keras' `mask_zero`.
        mask_zero: bool,
    },
    /// `keras.layers.Dense`: a candle-nn `Linear` (weight (out, in), the transpose of
    /// Keras' kernel; bias optional) and the Keras activation applied after it (`"linear"`,
    /// `"softmax"`, `"relu"`, ...).
    Dense {
        /// The weights.
        linear: &'a candle_nn::Linear,
        /// Keras' `activation` identifier.
        activation: &'a str,
    },
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

/// The tensor between two layers: (batch, steps, features) or (batch, features), or the
/// model's token ids (batch, steps).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flow {
    Ids,
    Sequence(usize),
    Vector(usize),
}

impl Flow {
    fn shape(self) -> Value {
        match self {
            Flow::Ids => json!([null, null]),
            Flow::Sequence(f) => json!([null, null, f]),
            Flow::Vector(f) => json!([null, f]),
        }
    }

    fn dtype(self) -> &'static str {
        match self {
            Flow::Ids => "int32",
            _ => "float32",
        }
    }

    fn describe(self) -> String {
        match self {
            Flow::Ids => "token ids (batch, steps)".into(),
            Flow::Sequence(f) => format!("(batch, steps, {f})"),
            Flow::Vector(f) => format!("(batch, {f})"),
        }
    }
}

impl KerasLayer<'_> {
    /// The recurrent layer's (forward) GRU.
    fn gru(&self) -> Option<&Gru> {
        match self {
            KerasLayer::Gru(g) => Some(g),
            KerasLayer::Bidirectional(b) => Some(b.forward_layer()),
            _ => None,
        }
    }

    /// The tensor that holds the layer's dtype and device.
    fn first_weight(&self) -> &Tensor {
        match self {
            KerasLayer::Gru(g) => g.kernel(),
            KerasLayer::Bidirectional(b) => b.forward_layer().kernel(),
            KerasLayer::Embedding { table, .. } => table.embeddings(),
            KerasLayer::Dense { linear, .. } => linear.weight(),
        }
    }

    fn class(&self) -> &'static str {
        match self {
            KerasLayer::Gru(_) => "GRU",
            KerasLayer::Bidirectional(_) => "Bidirectional",
            KerasLayer::Embedding { .. } => "Embedding",
            KerasLayer::Dense { .. } => "Dense",
        }
    }

    /// The layer's own name (Keras' default for the other classes).
    fn name(&self) -> String {
        match self {
            KerasLayer::Gru(g) => g.config().name.clone(),
            _ => snake(self.class()),
        }
    }

    /// The tensor the layer takes (given what comes) and the one it returns first.
    fn flows(&self, came: Flow) -> (Flow, Flow) {
        let recurrent = |g: &Gru, out: usize| {
            let out = match g.config().return_sequences {
                true => Flow::Sequence(out),
                false => Flow::Vector(out),
            };
            (Flow::Sequence(g.input_dim()), out)
        };
        match self {
            KerasLayer::Gru(g) => recurrent(g, g.config().units),
            KerasLayer::Bidirectional(b) => recurrent(b.forward_layer(), b.output_dim()),
            KerasLayer::Embedding { table, .. } => (
                Flow::Ids,
                Flow::Sequence(table.embeddings().dim(1).unwrap_or(0)),
            ),
            KerasLayer::Dense { linear, .. } => {
                let (units, input) = linear.weight().dims2().unwrap_or((0, 0));
                match came {
                    Flow::Sequence(_) => (Flow::Sequence(input), Flow::Sequence(units)),
                    _ => (Flow::Vector(input), Flow::Vector(units)),
                }
            }
        }
    }

    /// How many tensors a call returns (Keras' order: outputs, then states).
    fn outputs(&self) -> usize {
        match self {
            KerasLayer::Gru(g) => 1 + usize::from(g.config().return_state),
            KerasLayer::Bidirectional(b) => {
                let merged = 1 + usize::from(b.merge_mode() == MergeMode::None);
                merged + 2 * usize::from(b.forward_layer().config().return_state)
            }
            _ => 1,
        }
    }
}

/// Keras' `DTypePolicy` of a layer whose variables have `dtype` (Keras reads the
/// values written as float32 into variables of the policy's type).
fn policy(dtype: DType) -> Value {
    let name = match dtype {
        DType::F64 => "float64",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    };
    json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": name},
        "registered_name": null})
}

fn initializer(class: &str, config: Value) -> Value {
    json!({"module": "keras.initializers", "class_name": class, "config": config,
        "registered_name": null})
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
        "build_config": {"input_shape": Flow::Sequence(g.input_dim()).shape()},
    })
}

/// The layer's config entry (without its call), built for `input`.
fn layer_entry(layer: KerasLayer, name: &str, input: Flow) -> Value {
    let (class, config) = match layer {
        KerasLayer::Gru(g) => return gru_entry(g, name),
        KerasLayer::Bidirectional(b) => {
            let (f, bw) = (b.forward_layer(), b.backward_layer());
            let config = json!({
                "name": name,
                "trainable": f.config().trainable,
                "dtype": f.config().to_keras_json()["dtype"].clone(),
                "merge_mode": b.merge_mode().to_keras_value(),
                "layer": gru_entry(f, &f.config().name),
                "backward_layer": gru_entry(bw, &bw.config().name),
            });
            ("Bidirectional", config)
        }
        KerasLayer::Embedding { table, mask_zero } => {
            let (vocab, dim) = table.embeddings().dims2().unwrap_or((0, 0));
            let init = json!({"seed": null, "minval": -0.05, "maxval": 0.05});
            let config = json!({
                "name": name, "trainable": true, "dtype": policy(table.embeddings().dtype()),
                "input_dim": vocab, "output_dim": dim,
                "embeddings_initializer": initializer("RandomUniform", init),
                "embeddings_regularizer": null, "activity_regularizer": null,
                "embeddings_constraint": null, "mask_zero": mask_zero,
                "quantization_config": null,
            });
            ("Embedding", config)
        }
        KerasLayer::Dense { linear, activation } => {
            let units = linear.weight().dims2().map(|(o, _)| o).unwrap_or(0);
            let glorot = json!({"seed": null, "input_axes": null, "output_axes": null});
            let config = json!({
                "name": name, "trainable": true, "dtype": policy(linear.weight().dtype()),
                "units": units, "activation": activation, "use_bias": linear.bias().is_some(),
                "kernel_initializer": initializer("GlorotUniform", glorot),
                "bias_initializer": initializer("Zeros", json!({})),
                "kernel_regularizer": null, "bias_regularizer": null,
                "kernel_constraint": null, "bias_constraint": null, "quantization_config": null,
            });
            ("Dense", config)
        }
    };
    json!({"module": "keras.layers", "class_name": class, "config": config,
        "registered_name": null, "build_config": {"input_shape": input.shape()}})
}

/// The layer's variables under `group` (its object-tree path), in Keras' order and layout.
fn layer_variables(layer: KerasLayer, group: &str, out: &mut Vec<(String, Tensor)>) -> Result<()> {
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
        KerasLayer::Embedding { table, .. } => {
            out.push((format!("{group}/vars/0"), table.embeddings().clone()));
        }
        KerasLayer::Dense { linear, .. } => {
            let kernel = linear.weight().t()?.contiguous()?;
            out.push((format!("{group}/vars/0"), kernel));
            if let Some(b) = linear.bias() {
                out.push((format!("{group}/vars/1"), b.clone()));
            }
        }
    }
    Ok(())
}

/// `name`, or the first of `name_1`, `name_2`, ... not taken; then taken.
fn unique(name: &str, taken: &mut HashSet<String>) -> String {
    let mut candidate = name.to_string();
    for n in 1.. {
        if !taken.contains(&candidate) {
            break;
        }
        candidate = format!("{name}_{n}");
    }
    taken.insert(candidate.clone());
    candidate
}

fn keras_tensor(flow: Flow, from: &str) -> Value {
    json!({"class_name": "__keras_tensor__", "config": {
        "shape": flow.shape(), "dtype": flow.dtype(), "keras_history": [from, 0, 0]}})
}

fn invalid(key: String, expected: &str, got: &str) -> Error {
    Error::Gru(GruError::InvalidConfig {
        key,
        expected: expected.into(),
        got: got.into(),
    })
}

/// Layer `k` can take `came`, the tensor layer `k - 1` returns: what it reads is that
/// tensor, and it is not stateful (a stateful Keras layer needs the batch size fixed in
/// the model's input).
fn check_link(k: usize, layer: KerasLayer, came: Flow, prev: Option<KerasLayer>) -> Result<()> {
    if layer.gru().is_some_and(|g| g.config().stateful) {
        let expected = "false (the model's input takes any batch size)";
        return Err(invalid(format!("layers[{k}].stateful"), expected, "true"));
    }
    if k > 0 && matches!(layer, KerasLayer::Embedding { .. }) {
        let expected = "an Embedding first only (it takes the model's token ids)";
        return Err(invalid(format!("layers[{k}]"), expected, "an Embedding"));
    }
    let (takes, _) = layer.flows(came);
    let lost_sequence = matches!((takes, came), (Flow::Sequence(_), Flow::Vector(_)));
    if lost_sequence && prev.is_some_and(|p| p.gru().is_some()) {
        let expected = "true (a following layer reads its sequence)";
        return Err(invalid(
            format!("layers[{}].return_sequences", k - 1),
            expected,
            "false",
        ));
    }
    if takes != came {
        return Err(Error::Gru(GruError::Shape {
            what: format!("layers[{k}] input (the previous layer's output)"),
            expected: takes.describe(),
            got: came.describe(),
        }));
    }
    Ok(())
}

/// A candle-nn layer's weights have Keras' ranks: a (vocabulary, features) table, a
/// (units, inputs) weight and a (units,) bias.
fn check_ranks(k: usize, layer: KerasLayer) -> Result<()> {
    let shape = |what: &str, expected: &str, t: &Tensor| {
        Err(Error::Gru(GruError::Shape {
            what: format!("layers[{k}] {what}"),
            expected: expected.into(),
            got: format!("{:?}", t.dims()),
        }))
    };
    match layer {
        KerasLayer::Embedding { table, .. } if table.embeddings().rank() != 2 => shape(
            "embedding table",
            "(vocabulary, features)",
            table.embeddings(),
        ),
        KerasLayer::Dense { linear, .. } => {
            let w = linear.weight();
            let Ok((units, _)) = w.dims2() else {
                return shape("Linear weight", "(units, inputs)", w);
            };
            match linear.bias() {
                Some(b) if b.dims() != [units] => shape("Linear bias", &format!("({units},)"), b),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Every layer's weights have Keras' ranks and `dtype` and live on `device` (the model
/// holds one of each).
fn check_weights(layers: &[KerasLayer], dtype: DType, device: &Device) -> Result<()> {
    for (k, layer) in layers.iter().enumerate() {
        check_ranks(k, *layer)?;
        let w = layer.first_weight();
        let what = || format!("layers[{k}] weights (the model's are layers[0]'s)");
        if w.dtype() != dtype {
            return Err(Error::Gru(GruError::DType {
                what: what(),
                expected: format!("{dtype:?}"),
                got: format!("{:?}", w.dtype()),
            }));
        }
        if !w.device().same_device(device) {
            return Err(Error::Gru(GruError::Device {
                what: what(),
                expected: format!("{device:?}"),
                got: format!("{:?}", w.device()),
            }));
        }
    }
    Ok(())
}

/// The config's layer list and the variables, built up layer by layer.
struct Chain<'l> {
    layers: &'l [KerasLayer<'l>],
    entries: Vec<Value>,
    variables: Vec<(String, Tensor)>,
    taken: HashSet<String>,
    groups: HashMap<&'static str, usize>,
    /// The `NotEqual` operation's name, when an `Embedding(mask_zero=True)` makes a mask.
    mask: Option<String>,
}

impl Chain<'_> {
    /// The input layer of a model whose first layer takes `flow`.
    fn input(&mut self, flow: Flow) -> String {
        let name = unique("input_layer", &mut self.taken);
        self.entries.push(json!({
            "module": "keras.layers",
            "class_name": "InputLayer",
            "config": {"batch_shape": flow.shape(), "dtype": flow.dtype(), "sparse": false,
                "ragged": false, "name": name, "optional": false},
            "registered_name": null,
            "name": name,
            "inbound_nodes": [],
        }));
        name
    }

    /// Keras' record of `ids != 0`, the mask an `Embedding(mask_zero=True)` makes.
    fn not_equal(&mut self, input: &str) {
        let name = unique("not_equal", &mut self.taken);
        self.entries.push(json!({
            "module": "keras.src.ops.numpy", "class_name": "NotEqual",
            "config": {"name": name}, "registered_name": "NotEqual", "name": name,
            "inbound_nodes": [{"args": [keras_tensor(Flow::Ids, input), 0], "kwargs": {}}],
        }));
        self.mask = Some(name);
    }

    /// Adds layer `k` called on `came` from `prev`; returns its name and first output.
    fn call(&mut self, k: usize, came: Flow, prev: &str) -> Result<(String, Flow)> {
        let layer = self.layers[k];
        check_link(k, layer, came, k.checked_sub(1).map(|p| self.layers[p]))?;
        let name = unique(&layer.name(), &mut self.taken);
        let mut entry = layer_entry(layer, &name, came);
        let mut kwargs = json!({});
        if let (Some(mask), Some(_)) = (&self.mask, layer.gru()) {
            let mask_tensor = json!({"class_name": "__keras_tensor__", "config": {
                "shape": [null, null], "dtype": "bool", "keras_history": [mask, 0, 0]}});
            kwargs["mask"] = mask_tensor;
        }
        entry["name"] = json!(name);
        entry["inbound_nodes"] = json!([{"args": [keras_tensor(came, prev)], "kwargs": kwargs}]);
        self.entries.push(entry);
        let class = layer.class();
        let count = self.groups.entry(class).or_insert(0);
        let group = match *count {
            0 => format!("layers/{}", snake(class)),
            n => format!("layers/{}_{n}", snake(class)),
        };
        *count += 1;
        layer_variables(layer, &group, &mut self.variables)?;
        let (_, out) = layer.flows(came);
        if matches!(out, Flow::Vector(_)) {
            // The mask ends with the steps (a GRU's last output carries none).
            self.mask = None;
        }
        Ok((name, out))
    }
}

impl KerasModel {
    /// A Keras 3 functional model of `layers` in a chain: an `InputLayer` for what the
    /// first layer takes (`(None, None, features)`; token ids `(None, None)` for an
    /// Embedding), then each layer called on the previous layer's first output; the
    /// model's outputs are every output of the last layer (sequences and states). An
    /// `Embedding(mask_zero=True)`'s mask reaches the recurrent layers as Keras records it
    /// (a `NotEqual` of the ids and 0, passed as their `mask`). The variables are the
    /// layers' current values. Write it with [`KerasModel::save`] (Keras 3's
    /// `keras.saving.load_model` reads it) or [`KerasModel::save_weights_h5`]; it also runs
    /// here like any loaded model. Layer names are the GRUs' own (`name_1`, ... where two
    /// agree), Keras' defaults for the others.
    ///
    /// Errors: no layers, layers of different dtypes or devices (`GruError::DType`,
    /// `GruError::Device`), a stateful layer, an Embedding after the first layer or a layer
    /// after a GRU that does not return sequences (`GruError::InvalidConfig` naming it), a
    /// layer whose input is not its predecessor's output (`GruError::Shape`). A
    /// [`crate::GruStack`]'s layers:
    /// `stack.layers().iter().map(KerasLayer::from).collect::<Vec<_>>()`.
    pub fn from_layers(layers: &[KerasLayer]) -> Result<KerasModel> {
        let Some(first) = layers.first() else {
            return Err(invalid("layers".into(), "at least one layer", "none"));
        };
        let w = first.first_weight();
        let (dtype, device) = (w.dtype(), w.device().clone());
        check_weights(layers, dtype, &device)?;
        let mut chain = Chain {
            layers,
            entries: Vec::new(),
            variables: Vec::new(),
            taken: HashSet::new(),
            groups: HashMap::new(),
            mask: None,
        };
        let mut came = first.flows(Flow::Ids).0;
        let mut prev = chain.input(came);
        if let KerasLayer::Embedding {
            mask_zero: true, ..
        } = first
        {
            chain.not_equal(&prev);
        }
        let input = prev.clone();
        for k in 0..layers.len() {
            (prev, came) = chain.call(k, came, &prev)?;
        }
        let outputs: Vec<Value> = (0..layers[layers.len() - 1].outputs())
            .map(|i| json!([prev, 0, i]))
            .collect();
        let config = json!({
            "module": "keras.src.models.functional",
            "class_name": "Functional",
            "config": {
                "name": "functional",
                "trainable": true,
                "layers": chain.entries,
                "input_layers": [input, 0, 0],
                "output_layers": match outputs.len() { 1 => outputs[0].clone(), _ => json!(outputs) },
            },
            "registered_name": "Functional",
            "build_config": {"input_shape": null},
            "compile_config": null,
        });
        let source = "KerasModel::from_layers".to_string();
        let bytes = weights_h5_bytes(&chain.variables)?;
        let file = Hdf5File::from_vec(bytes).map_err(|e| malformed(&source, e.to_string()))?;
        let mut w = Weights::new(file, source, u64::MAX, None)?;
        w.keras_version = Some(super::save::KERAS_VERSION.to_string());
        super::walk::build(&config, w, dtype, &device)
    }
}
