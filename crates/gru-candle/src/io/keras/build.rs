//! A model config's chain of layers, built over its weights file: each layer's variables
//! found at Keras 3's object-tree path (`layers/{snake_case(class)}[_k]/...`).

use super::build_layers::rules;
use super::build_simple::dims_after;
use super::graph::{MaskState, TensorState};
use super::train::Dropout;
use super::weights::Weights;
use super::{last_dim, malformed, snake, unsupported};
use super::{Dense, GlobalPooling1D, LayerActivation, ModelLayer, Reshaping};
use crate::bidirectional::{Bidirectional, MergeMode};
use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use gru_core::{DTypePolicy, GruConfig};
use serde_json::Value;
use std::collections::HashMap;

/// Builds the layers one by one, tracking the feature size between them.
pub(super) struct ChainBuilder<'a> {
    pub(super) w: &'a Weights,
    /// The object-tree group of the model the layers belong to, with a trailing `/`
    /// (empty for the top model; `layers/sequential/` for a nested one).
    prefix: String,
    /// A legacy file: the name of the top-level nested model the layers are in, with a
    /// trailing `/` (empty outside nested models); the file lists their variables under it.
    pub(super) legacy_model: String,
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

/// The rank of a layer's output, given its input's.
fn rank_after(rank: usize, layer: &ModelLayer) -> usize {
    let sequences = |c: &GruConfig| if c.return_sequences { 3 } else { 2 };
    match layer {
        ModelLayer::Embedding(_) => rank + 1,
        ModelLayer::Gru(g) => sequences(g.config()),
        ModelLayer::Bidirectional(b) => sequences(b.forward_layer().config()),
        ModelLayer::StackedGru(s) => s.last().map_or(rank, sequences),
        ModelLayer::GlobalPooling(p) if !p.keepdims => rank.saturating_sub(1),
        ModelLayer::Reshaping(Reshaping::Reshape(target)) => target.len() + 1,
        ModelLayer::Reshaping(Reshaping::RepeatVector(_)) => rank + 1,
        ModelLayer::Reshaping(Reshaping::Flatten) => 2,
        _ => rank,
    }
}

impl<'a> ChainBuilder<'a> {
    /// A builder of the layers of the model at object-tree group `prefix`.
    pub(super) fn new(w: &'a Weights, dtype: DType, device: &'a Device, prefix: String) -> Self {
        ChainBuilder {
            w,
            prefix,
            legacy_model: String::new(),
            dtype,
            device,
            counters: HashMap::new(),
            features: None,
            rank: None,
            dims: None,
        }
    }

    /// Takes `input` as the tensor the next layer receives.
    pub(super) fn enter(&mut self, input: &TensorState) {
        self.features = input.features;
        self.rank = input.rank;
        self.dims = input.dims.clone();
    }

    /// The state of the output of `layer`, just built over the entered input.
    pub(super) fn leave(&mut self, layer: &ModelLayer, mask: MaskState) -> TensorState {
        let dims = self
            .dims
            .take()
            .and_then(|d| dims_after(d, layer, self.features));
        // Known dims give the rank (a reshaping layer's too); else the layer's rule.
        let rank = match &dims {
            Some(d) => Some(d.len() + 1),
            None => self.rank.map(|r| rank_after(r, layer)),
        };
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
            self.w
                .alias(&group, &format!("{}{lname}", self.legacy_model));
        }
        group
    }

    fn tree_group(&mut self, class: &str) -> String {
        let key = snake(class);
        let k = self.counters.entry(key.clone()).or_insert(0);
        let group = match *k {
            0 => format!("{}layers/{key}", self.prefix),
            k => format!("{}layers/{key}_{k}", self.prefix),
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

    /// Builds the layer `l` (of one input), its variables at object-tree `group`.
    pub(super) fn layer(&mut self, l: &Value, lname: &str, group: &str) -> Result<ModelLayer> {
        let class = l["class_name"].as_str().unwrap_or("");
        let cfg = &l["config"];
        let group = group.to_string();
        match class {
            "InputLayer" => {
                self.features = last_dim(cfg.get("batch_shape").or(cfg.get("batch_input_shape")));
                Ok(ModelLayer::Input)
            }
            "Masking" => Ok(ModelLayer::Masking {
                mask_value: cfg["mask_value"].as_f64().unwrap_or(0.0),
            }),
            "GRU" => self.gru(cfg, &group, self.input_dim(l, lname)?),
            "RNN" => self.rnn(cfg, &group, lname, self.input_dim(l, lname)?),
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
            "Conv2D" => self.conv2d(cfg, &group, lname, self.input_dim(l, lname)?),
            "MaxPooling2D" | "AveragePooling2D" => self.pooling2d(cfg, class, lname),
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
            // Both return their input as it is.
            "ActivityRegularization" | "Identity" => Ok(ModelLayer::Activation(
                LayerActivation::Elementwise(gru_core::Activation::Linear),
            )),
            "Normalization" => self.normalization(cfg, &group, lname),
            "Rescaling" => self.rescaling(cfg, lname),
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

    /// The wrapped GRU config at `key` (`layer` or `backward_layer`): a `GRU`, or an
    /// `RNN(GRUCell)`.
    fn inner_gru(&self, cfg: &Value, key: &str) -> Result<GruConfig> {
        let v = &cfg[key];
        match v["class_name"].as_str() {
            Some("GRU") => Ok(GruConfig::from_keras_json(&v["config"])?),
            Some("RNN") => self.rnn_config(&v["config"], "Bidirectional"),
            other => Err(unsupported(
                &self.w.source,
                format!("Bidirectional({other:?}): only GRU or RNN(GRUCell)"),
            )),
        }
    }

    /// The GRU config an `RNN(GRUCell(...))` computes: the cell's settings with the RNN's
    /// (`return_sequences`, `return_state`, `go_backwards`, `stateful`, `unroll`,
    /// `zero_output_for_mask`, `activity_regularizer`, `name`, `dtype`). Keras' `GRU` runs
    /// this very RNN over this very cell. Other cells (`StackedRNNCells`, ...) are refused.
    fn rnn_config(&self, cfg: &Value, lname: &str) -> Result<GruConfig> {
        let cell = &cfg["cell"];
        if cell["class_name"] != "GRUCell" {
            let what = format!(
                "layer {lname:?}: RNN over a {} cell (GRUCell expected)",
                cell["class_name"]
            );
            return Err(unsupported(&self.w.source, what));
        }
        let mut gru = cell["config"].as_object().cloned().unwrap_or_default();
        if gru
            .get("activity_regularizer")
            .is_some_and(|r| !r.is_null())
        {
            // Keras adds it per step inside the loop, and a model over it fails to run.
            let what =
                format!("layer {lname:?}: an RNN over a GRUCell with an activity_regularizer");
            return Err(unsupported(&self.w.source, what));
        }
        let rnn_keys = [
            "name",
            "trainable",
            "dtype",
            "return_sequences",
            "return_state",
            "go_backwards",
            "stateful",
            "unroll",
            "zero_output_for_mask",
            "activity_regularizer",
        ];
        for key in rnn_keys {
            if let Some(v) = cfg.get(key) {
                gru.insert(key.to_string(), v.clone());
            }
        }
        Ok(GruConfig::from_keras_json(&Value::Object(gru))?)
    }

    fn rnn(&mut self, cfg: &Value, group: &str, lname: &str, d: usize) -> Result<ModelLayer> {
        if cfg["cell"]["class_name"] == "StackedRNNCells" {
            return self.stacked_rnn(cfg, group, lname, d);
        }
        let c = self.rnn_config(cfg, lname)?;
        let units = c.units;
        let g = self.w.gru(group, c, d, self.dtype, self.device)?;
        self.features = Some(units);
        Ok(ModelLayer::Gru(Box::new(g)))
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
