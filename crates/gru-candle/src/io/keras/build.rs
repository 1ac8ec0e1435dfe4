//! A model config's chain of layers, built over its weights file: each layer's variables
//! found at Keras 3's object-tree path (`layers/{snake_case(class)}[_k]/...`).

use super::build_layers::rules;
use super::build_simple::dims_after;
use super::graph::{functional_inputs, graph_inbound, graph_outputs, merge_layer};
use super::graph::{Graph, Inbound, MaskState, Source, TensorState};
use super::mask_ops::MaskOp;
use super::merge::{MaskRule, MergeOp};
use super::train::Dropout;
use super::weights::Weights;
use super::{last_dim, malformed, snake, unsupported};
use super::{Dense, GlobalPooling1D, KerasModel, LayerActivation, ModelLayer};
use crate::bidirectional::{Bidirectional, MergeMode};
use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use gru_core::{DTypePolicy, GruConfig, Regularizer};
use serde_json::Value;
use std::collections::HashMap;

/// Builds the layers one by one, tracking the feature size between them.
pub(super) struct ChainBuilder<'a> {
    pub(super) w: Weights,
    pub(super) dtype: DType,
    pub(super) device: &'a Device,
    /// Layers seen per snake-case class (the `_k` suffix of the next one).
    pub(super) counters: HashMap<String, usize>,
    /// The feature size the next layer receives, once known.
    pub(super) features: Option<usize>,
    /// The rank of the tensor the next layer receives (batch included), once known: a
    /// normalization's positive `axis` must name its last axis.
    pub(super) rank: Option<usize>,
    /// The dims after the batch of the tensor the next layer receives, when all are fixed.
    pub(super) dims: Option<Vec<usize>>,
}

/// Builds the model described by `config` from the variables in `w`.
pub(super) fn build(
    config: &Value,
    w: Weights,
    dtype: DType,
    device: &Device,
) -> Result<KerasModel> {
    let source = w.source.clone();
    let mut config = config.clone();
    super::legacy::upgrade_config(&mut config, &source)?;
    let class = config["class_name"].as_str().unwrap_or("");
    if !matches!(class, "Sequential" | "Functional" | "Model") {
        let what = format!("model class {class:?} (Sequential or Functional expected)");
        return Err(unsupported(&source, what));
    }
    let functional = matches!(class, "Functional" | "Model");
    let mut graph = Graph::default();
    if written_by_keras_2(&config, w.keras_version.as_deref()) {
        graph.mask_rule = MaskRule::Keras2;
    }
    let mut m = ModelBuilder {
        b: ChainBuilder {
            w,
            dtype,
            device,
            counters: HashMap::new(),
            features: None,
            rank: None,
            dims: None,
        },
        input_names: match functional {
            true => functional_inputs(&config),
            false => Vec::new(),
        },
        functional,
        layers: Vec::new(),
        graph,
        states: Vec::new(),
        activity: Vec::new(),
    };
    let layer_list = config["config"]["layers"]
        .as_array()
        .ok_or_else(|| malformed(&source, "config has no layer list"))?;
    for l in layer_list {
        m.add(l)?;
    }
    m.finish(config)
}

/// The model's layers and graph as they are built, layer by layer.
struct ModelBuilder<'a> {
    b: ChainBuilder<'a>,
    functional: bool,
    /// A functional model's input layers, in input order.
    input_names: Vec<String>,
    layers: Vec<(String, ModelLayer)>,
    graph: Graph,
    /// The state of each layer's first output, by index in `layers`.
    states: Vec<TensorState>,
    activity: Vec<(String, Regularizer)>,
}

impl ModelBuilder<'_> {
    fn source(&self) -> String {
        self.b.w.source.clone()
    }

    /// Builds the layer `l` over the tensors its node names and records where they come from.
    fn add(&mut self, l: &Value) -> Result<()> {
        let lname = l["config"]["name"]
            .as_str()
            .or(l["name"].as_str())
            .unwrap_or("")
            .to_string();
        let class = l["class_name"].as_str().unwrap_or("");
        let mask_op = MaskOp::from_node(class, &l["config"], &node_scalars(l));
        let inbound = self.inbound(l, &lname, mask_op.is_some())?;
        let inputs = self.input_states(l, &lname, &inbound.sources)?;
        let source = self.source();
        let (layer, state) = match (mask_op, MergeOp::from_class(class)) {
            (Some(op), _) => {
                let op =
                    op.map_err(|why| unsupported(&source, format!("layer {lname:?}: {why}")))?;
                mask_op_layer(&source, &lname, op, &inputs)?
            }
            (None, Some(op)) => merge_layer(&source, l, &lname, op, &inputs, self.graph.mask_rule)?,
            (None, None) if matches!(class, "Attention" | "AdditiveAttention") => {
                super::attention::build(&mut self.b, l, &lname, &inputs, &inbound)?
            }
            (None, None) => self.single_input_layer(l, &lname, &inputs, &inbound)?,
        };
        if let Some(reg) = activity_regularizer(l, &layer)? {
            self.activity.push((lname.clone(), reg));
        }
        self.graph.sources.push(inbound.sources);
        self.graph.masks.push(inbound.masks);
        self.graph.initial_states.push(inbound.initial_state);
        self.states.push(state);
        self.layers.push((lname, layer));
        Ok(())
    }

    /// What the layer is called with: its node in a functional model, the layer before it
    /// (or the model input) in a Sequential.
    fn inbound(&self, l: &Value, lname: &str, mask_op: bool) -> Result<Inbound> {
        if self.functional {
            let (layers, names) = (&self.layers, &self.input_names);
            return graph_inbound(&self.b.w.source, l, lname, layers, mask_op, names);
        }
        let source = match self.layers.len() {
            0 => Source::ModelInput(0),
            n => Source::Layer {
                layer: n - 1,
                tensor: 0,
            },
        };
        Ok(Inbound {
            sources: vec![source],
            masks: Vec::new(),
            initial_state: Vec::new(),
        })
    }

    /// The states of the tensors a layer takes.
    fn input_states(&self, l: &Value, lname: &str, sources: &[Source]) -> Result<Vec<TensorState>> {
        sources
            .iter()
            .map(|s| match *s {
                Source::ModelInput(_) => Ok(TensorState::of_input(l)),
                Source::Layer { layer, tensor } => {
                    let (name, built) = &self.layers[layer];
                    TensorState::of_output(&self.states[layer], built, tensor).ok_or_else(|| {
                        let what = format!("layer {lname:?}: output {tensor} of {name:?}");
                        unsupported(&self.b.w.source, what)
                    })
                }
            })
            .collect()
    }

    /// A layer of one input tensor (every layer but merges and mask operations), with its
    /// `initial_state` and `mask` arguments checked.
    fn single_input_layer(
        &mut self,
        l: &Value,
        lname: &str,
        inputs: &[TensorState],
        inbound: &Inbound,
    ) -> Result<(ModelLayer, TensorState)> {
        let source = self.source();
        let [input] = inputs else {
            let what = format!("layer {lname:?} with {} inputs", inputs.len());
            return Err(unsupported(&source, what));
        };
        self.b.enter(input);
        let layer = self.b.layer(l, lname)?;
        let states = match layer {
            ModelLayer::Gru(_) => 1,
            ModelLayer::Bidirectional(_) => 2,
            _ => 0,
        };
        let given = inbound.initial_state.len();
        if given != 0 && given != states {
            let what = format!(
                "layer {lname:?} called with {given} initial_state tensors ({states} for its class)"
            );
            return Err(unsupported(&source, what));
        }
        // A mask argument replaces the mask the input carries.
        let mask = match inbound.masks.first() {
            Some(Some(_)) => MaskState::Masking,
            _ => input.mask,
        };
        let state = self.b.leave(&layer, mask);
        Ok((layer, state))
    }

    fn finish(mut self, config: Value) -> Result<KerasModel> {
        if self.functional {
            let outputs = graph_outputs(&self.b.w.source, &config, &self.layers)?;
            self.graph.outputs = Some(outputs);
        }
        self.graph.inputs = self.input_names.len().max(1);
        self.b.w.check_all_read()?;
        Ok(KerasModel {
            name: config["config"]["name"]
                .as_str()
                .unwrap_or("model")
                .to_string(),
            layers: self.layers,
            activity: self.activity,
            graph: self.graph,
            variables: self.b.w.read.take(),
            config,
        })
    }
}

/// A recorded mask operation over `inputs`.
fn mask_op_layer(
    source: &str,
    lname: &str,
    op: MaskOp,
    inputs: &[TensorState],
) -> Result<(ModelLayer, TensorState)> {
    if inputs.len() != op.arity() {
        let what = format!("layer {lname:?}: {op:?} of {} tensors", inputs.len());
        return Err(unsupported(source, what));
    }
    let ranks: Vec<Option<usize>> = inputs.iter().map(|i| i.rank).collect();
    let state = TensorState {
        features: None,
        rank: op.rank(&ranks),
        dims: None,
        mask: MaskState::None,
    };
    Ok((ModelLayer::MaskOp(op), state))
}

/// The activity regularizer Keras adds for a layer other than a GRU (a GRU computes its
/// own); `ActivityRegularization`'s is `l1 * sum|x| + l2 * sum x^2`.
fn activity_regularizer(l: &Value, layer: &ModelLayer) -> Result<Option<Regularizer>> {
    if matches!(layer, ModelLayer::Gru(_)) {
        return Ok(None);
    }
    let reg = match l["class_name"].as_str() {
        Some("ActivityRegularization") => serde_json::json!({"class_name": "L1L2", "config": {
            "l1": l["config"]["l1"].as_f64().unwrap_or(0.0),
            "l2": l["config"]["l2"].as_f64().unwrap_or(0.0)}}),
        _ => l["config"]
            .get("activity_regularizer")
            .cloned()
            .unwrap_or(Value::Null),
    };
    Ok(Regularizer::from_keras_value("activity_regularizer", &reg)?)
}

/// Whether Keras 2 wrote the model: the `keras_version` its file or config records, or
/// tf_keras' module names in its config.
fn written_by_keras_2(config: &Value, file_version: Option<&str>) -> bool {
    let two = |v: Option<&str>| v.is_some_and(|v| v.starts_with("2."));
    two(file_version)
        || two(config["keras_version"].as_str())
        || config["module"]
            .as_str()
            .is_some_and(|m| m.starts_with("tf_keras"))
}

/// The positional arguments of a layer's first inbound node that are not tensors.
fn node_scalars(l: &Value) -> Vec<Value> {
    let args = l["inbound_nodes"][0]["args"].as_array();
    args.into_iter()
        .flatten()
        .filter(|a| !a.is_array() && a["class_name"] != "__keras_tensor__")
        .cloned()
        .collect()
}

/// The rank of a layer's output, given its input's.
fn rank_after(rank: usize, layer: &ModelLayer) -> usize {
    let sequences = |c: &GruConfig| if c.return_sequences { 3 } else { 2 };
    match layer {
        ModelLayer::Embedding(_) => rank + 1,
        ModelLayer::Gru(g) => sequences(g.config()),
        ModelLayer::Bidirectional(b) => sequences(b.forward_layer().config()),
        ModelLayer::GlobalPooling(p) if !p.keepdims => rank.saturating_sub(1),
        _ => rank,
    }
}

impl ChainBuilder<'_> {
    /// Takes `input` as the tensor the next layer receives.
    fn enter(&mut self, input: &TensorState) {
        self.features = input.features;
        self.rank = input.rank;
        self.dims = input.dims.clone();
    }

    /// The state of the output of `layer`, just built over the entered input.
    fn leave(&mut self, layer: &ModelLayer, mask: MaskState) -> TensorState {
        let rank = self.rank.map(|r| rank_after(r, layer));
        let dims = self
            .dims
            .take()
            .and_then(|d| dims_after(d, layer, self.features));
        TensorState {
            features: self.features,
            rank,
            dims,
            mask: mask.after(layer),
        }
    }

    /// The next object-tree group of a class: `layers/gru`, then `layers/gru_1`, ...; in a
    /// legacy file the group's variables are found under the layer's name.
    pub(super) fn group(&mut self, class: &str, lname: &str) -> String {
        let group = self.tree_group(class);
        if self.w.is_legacy() {
            self.w.alias(&group, lname);
        }
        group
    }

    fn tree_group(&mut self, class: &str) -> String {
        let key = snake(class);
        let k = self.counters.entry(key.clone()).or_insert(0);
        let group = match *k {
            0 => format!("layers/{key}"),
            k => format!("layers/{key}_{k}"),
        };
        *k += 1;
        group
    }

    /// The layer's input feature size: the previous layer's output, or its build config.
    fn input_dim(&self, l: &Value, lname: &str) -> Result<usize> {
        self.features
            .or_else(|| last_dim(l["build_config"].get("input_shape")))
            .ok_or_else(|| {
                malformed(
                    &self.w.source,
                    format!("layer {lname:?}: unknown input size"),
                )
            })
    }

    fn layer(&mut self, l: &Value, lname: &str) -> Result<ModelLayer> {
        let class = l["class_name"].as_str().unwrap_or("");
        let cfg = &l["config"];
        let group = self.group(class, lname);
        match class {
            "InputLayer" => {
                self.features = last_dim(cfg.get("batch_shape").or(cfg.get("batch_input_shape")));
                Ok(ModelLayer::Input)
            }
            "Masking" => Ok(ModelLayer::Masking {
                mask_value: cfg["mask_value"].as_f64().unwrap_or(0.0),
            }),
            "GRU" => self.gru(cfg, &group, self.input_dim(l, lname)?),
            "Bidirectional" => self.bidirectional(cfg, &group, self.input_dim(l, lname)?),
            "Dense" => self.dense(cfg, &group, self.input_dim(l, lname)?),
            "TimeDistributed" => match cfg["layer"]["class_name"].as_str() {
                Some("Dense") => {
                    let inner = &cfg["layer"]["config"];
                    self.dense(inner, &format!("{group}/layer"), self.input_dim(l, lname)?)
                }
                other => Err(unsupported(
                    &self.w.source,
                    format!("layer {lname:?}: TimeDistributed({other:?}): only Dense"),
                )),
            },
            "Conv1D" => self.conv1d(cfg, &group, lname, self.input_dim(l, lname)?),
            "MaxPooling1D" | "AveragePooling1D" => self.pooling(cfg, class, lname),
            "Embedding" => self.embedding(cfg, &group),
            "Dropout" | "SpatialDropout1D" => self.dropout(cfg, class, lname),
            "LayerNormalization" => self.layer_norm(cfg, &group, self.input_dim(l, lname)?),
            "BatchNormalization" => self.batch_norm(cfg, &group, lname, self.input_dim(l, lname)?),
            "GlobalAveragePooling1D" | "GlobalMaxPooling1D" => {
                if cfg["data_format"].as_str().unwrap_or("channels_last") != "channels_last" {
                    let what = format!("layer {lname:?}: data_format {}", cfg["data_format"]);
                    return Err(unsupported(&self.w.source, what));
                }
                Ok(ModelLayer::GlobalPooling(GlobalPooling1D {
                    max: class == "GlobalMaxPooling1D",
                    keepdims: cfg["keepdims"].as_bool().unwrap_or(false),
                }))
            }
            "Flatten" | "RepeatVector" | "Reshape" | "Permute" | "ZeroPadding1D" | "Cropping1D"
            | "UpSampling1D" => self.reshaping(cfg, class, lname),
            "LeakyReLU" | "ReLU" | "ELU" | "Softmax" => self.activation_layer(cfg, class, lname),
            "PReLU" => self.prelu(cfg, &group, lname),
            "GaussianNoise" | "GaussianDropout" | "AlphaDropout" => self.noise(cfg, class, lname),
            "ActivityRegularization" => Ok(ModelLayer::Activation(LayerActivation::Elementwise(
                gru_core::Activation::Linear,
            ))),
            "Activation" => Ok(ModelLayer::Activation(LayerActivation::from_keras_value(
                cfg.get("activation").unwrap_or(&Value::Null),
            )?)),
            other => Err(unsupported(
                &self.w.source,
                format!("layer {lname:?} of class {other}"),
            )),
        }
    }

    /// A weight of a Dense, Conv1D, Embedding or LayerNormalization layer: a `Var` of the
    /// model's `VarMap` in a trainable load, used as a constant when the layer has
    /// `trainable = false` (Keras trains none of its weights then).
    pub(super) fn weight(&self, cfg: &Value, path: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.w.tensor(path, shape, self.dtype, self.device)?;
        Ok(match cfg["trainable"].as_bool() {
            Some(false) => t.detach(),
            _ => t,
        })
    }

    fn dropout(&self, cfg: &Value, class: &str, lname: &str) -> Result<ModelLayer> {
        if !cfg["noise_shape"].is_null() {
            let what = format!(
                "layer {lname:?}: {class} with noise_shape {}",
                cfg["noise_shape"]
            );
            return Err(unsupported(&self.w.source, what));
        }
        let rate = cfg["rate"].as_f64().unwrap_or(0.0);
        let seed = cfg["seed"].as_u64();
        let spatial = class == "SpatialDropout1D";
        Ok(ModelLayer::Dropout(Box::new(Dropout::new(
            rate, spatial, seed,
        )?)))
    }

    fn gru(&mut self, cfg: &Value, group: &str, d: usize) -> Result<ModelLayer> {
        let c = GruConfig::from_keras_json(cfg)?;
        let units = c.units;
        let g = self.w.gru(group, c, d, self.dtype, self.device)?;
        self.features = Some(units);
        Ok(ModelLayer::Gru(Box::new(g)))
    }

    /// The wrapped GRU config at `key` (`layer` or `backward_layer`).
    fn inner_gru(&self, cfg: &Value, key: &str) -> Result<GruConfig> {
        let v = &cfg[key];
        match v["class_name"].as_str() {
            Some("GRU") => Ok(GruConfig::from_keras_json(&v["config"])?),
            other => Err(unsupported(
                &self.w.source,
                format!("Bidirectional({other:?}): only GRU"),
            )),
        }
    }

    fn bidirectional(&mut self, cfg: &Value, group: &str, d: usize) -> Result<ModelLayer> {
        let merge = MergeMode::from_keras_value(cfg.get("merge_mode").unwrap_or(&Value::Null))?;
        let fw_cfg = self.inner_gru(cfg, "layer")?;
        let bw_cfg = match cfg.get("backward_layer").is_some_and(|v| !v.is_null()) {
            true => self.inner_gru(cfg, "backward_layer")?,
            false => {
                let mut b = fw_cfg.clone();
                b.go_backwards = !b.go_backwards;
                b
            }
        };
        let (dt, dev) = (self.dtype, self.device);
        let fw = self
            .w
            .gru(&format!("{group}/forward_layer"), fw_cfg, d, dt, dev)?;
        let bw = self
            .w
            .gru(&format!("{group}/backward_layer"), bw_cfg, d, dt, dev)?;
        let b = Bidirectional::from_layers(fw, bw, merge)?;
        self.features = Some(b.output_dim());
        Ok(ModelLayer::Bidirectional(Box::new(b)))
    }

    fn dense(&mut self, cfg: &Value, group: &str, d: usize) -> Result<ModelLayer> {
        let units = cfg["units"]
            .as_u64()
            .ok_or_else(|| malformed(&self.w.source, "Dense without units"))?
            as usize;
        let activation =
            LayerActivation::from_keras_value(cfg.get("activation").unwrap_or(&Value::Null))?;
        let kernel = self.weight(cfg, &format!("{group}/vars/0"), &[d, units])?;
        let bias = match cfg["use_bias"].as_bool().unwrap_or(true) {
            true => Some(self.weight(cfg, &format!("{group}/vars/1"), &[units])?),
            false => None,
        };
        self.features = Some(units);
        Ok(ModelLayer::Dense(Dense {
            rules: rules(cfg, [("kernel", Some(&kernel)), ("bias", bias.as_ref())])?,
            kernel,
            bias,
            activation,
            compute_dtype: self.compute_dtype(cfg)?,
        }))
    }

    /// The dtype a layer with this config computes in (its dtype policy over the model's
    /// dtype).
    pub(super) fn compute_dtype(&self, cfg: &Value) -> Result<DType> {
        let policy = DTypePolicy::from_keras_value(cfg.get("dtype").unwrap_or(&Value::Null))?;
        crate::dtype::compute_dtype_of_policy(&policy, self.dtype)
    }
}
