//! The walk over a model config: every call of every layer (Keras' inbound nodes; a
//! shared layer has several) in an order that runs each call after the calls it takes,
//! each layer built over its weights at its first call, models nested as layers built
//! the same way under their own object-tree group.

mod annotate;
mod time_distributed;

use crate::error::Result;
use crate::io::keras::build::ChainBuilder;
use crate::io::keras::graph::{
    functional_inputs, graph_inbound, graph_outputs, merge_layer, node_refs,
};
use crate::io::keras::graph::{Graph, Inbound, MaskState, Node, Source, Takes, TensorState};
use crate::io::keras::mask_ops::MaskOp;
use crate::io::keras::merge::{MaskRule, MergeOp};
use crate::io::keras::weights::Weights;
use crate::io::keras::{malformed, unsupported, KerasModel, ModelLayer};
use candle_core::{DType, Device};
use gru_core::Regularizer;
use serde_json::Value;

/// Builds the model described by `config` from the variables in `w`.
pub(super) fn build(
    config: &Value,
    w: Weights,
    dtype: DType,
    device: &Device,
) -> Result<KerasModel> {
    let mut config = config.clone();
    let keras2 = crate::io::keras::keras2::written_by_keras_2(&config, w.keras_version.as_deref());
    crate::io::keras::keras2::upgrade_config(&mut config, &w.source, keras2)?;
    let rule = match keras2 {
        true => MaskRule::Keras2,
        false => MaskRule::Keras3,
    };
    let b = ChainBuilder::new(&w, dtype, device, String::new());
    let (mut model, _) = build_model(&config, b, rule, None)?;
    w.check_all_read()?;
    model.variables = w.read.take();
    Ok(model)
}

/// Builds a model config: the whole model, or (`given`: the states of the tensors it is
/// first called with) a model nested as a layer of another. Returns the model and the
/// states of its outputs.
fn build_model(
    config: &Value,
    b: ChainBuilder,
    mask_rule: MaskRule,
    given: Option<Vec<TensorState>>,
) -> Result<(KerasModel, Vec<TensorState>)> {
    let source = b.w.source.clone();
    let class = config["class_name"].as_str().unwrap_or("");
    if !is_model_class(class) {
        let what = format!("model class {class:?} (Sequential or Functional expected)");
        return Err(unsupported(&source, what));
    }
    let functional = class != "Sequential";
    let list = config["config"]["layers"]
        .as_array()
        .ok_or_else(|| malformed(&source, "config has no layer list"))?;
    let names: Vec<String> = list.iter().map(layer_name).collect();
    let n = list.len();
    let mut m = ModelBuilder {
        b,
        functional,
        input_names: match functional {
            true => functional_inputs(config),
            false => Vec::new(),
        },
        names,
        boolean_input: list
            .iter()
            .map(|l| l["class_name"] == "InputLayer" && l["config"]["dtype"] == "bool")
            .collect(),
        built: (0..n).map(|_| None).collect(),
        calls: vec![Vec::new(); n],
        call_counts: list
            .iter()
            .map(|l| layer_calls(l, functional).len())
            .collect(),
        first_inputs: vec![Vec::new(); n],
        graph: Graph {
            mask_rule,
            ..Graph::default()
        },
        states: Vec::new(),
        given,
        activity: Vec::new(),
    };
    m.add_all(list)?;
    m.finish(config)
}

fn is_model_class(class: &str) -> bool {
    matches!(class, "Sequential" | "Functional" | "Model")
}

fn layer_name(l: &Value) -> String {
    l["config"]["name"]
        .as_str()
        .or(l["name"].as_str())
        .unwrap_or("")
        .to_string()
}

/// A layer's calls: its inbound nodes in a functional model (`None`: an input layer's one
/// call, without a node); one call after the layer before it in a Sequential.
fn layer_calls(l: &Value, functional: bool) -> Vec<Option<&Value>> {
    let nodes = l["inbound_nodes"]
        .as_array()
        .filter(|n| functional && !n.is_empty());
    match nodes {
        Some(nodes) => nodes.iter().map(Some).collect(),
        None => vec![None],
    }
}

/// The model's layers and graph as they are built, call by call.
struct ModelBuilder<'a> {
    b: ChainBuilder<'a>,
    functional: bool,
    /// A functional model's input layers, in input order.
    input_names: Vec<String>,
    /// Per layer: its name.
    names: Vec<String>,
    /// Per layer: whether it is a boolean model input (a mask a layer may take).
    boolean_input: Vec<bool>,
    /// Per layer: the layer, once built (at its first call).
    built: Vec<Option<ModelLayer>>,
    /// Per layer: the graph nodes of its calls so far.
    calls: Vec<Vec<usize>>,
    /// Per layer: how many calls the config records.
    call_counts: Vec<usize>,
    /// Per layer: the states of the tensors its first call took.
    first_inputs: Vec<Vec<TensorState>>,
    graph: Graph,
    /// Per node: the states of its outputs the builder knows (the first; every output of
    /// a nested model).
    states: Vec<Vec<TensorState>>,
    /// A nested model: the states of the tensors it is called with.
    given: Option<Vec<TensorState>>,
    activity: Vec<(String, Regularizer)>,
}

impl ModelBuilder<'_> {
    fn source(&self) -> String {
        self.b.w.source.clone()
    }

    /// Every call of every layer, as Keras' `functional_from_config` orders them: sweeps
    /// over the layers in config order, each taking its next calls while the calls they
    /// take have run. Object-tree groups are given in config order.
    fn add_all(&mut self, list: &[Value]) -> Result<()> {
        let groups: Vec<String> = list
            .iter()
            .zip(&self.names)
            .map(|(l, name)| self.b.group(l["class_name"].as_str().unwrap_or(""), name))
            .collect();
        let calls: Vec<Vec<Option<&Value>>> = list
            .iter()
            .map(|l| layer_calls(l, self.functional))
            .collect();
        let mut next = vec![0usize; list.len()];
        loop {
            let (mut waiting, mut progressed) = (None, false);
            for (i, l) in list.iter().enumerate() {
                while let Some(&node) = calls[i].get(next[i]) {
                    if !self.ready(node) {
                        waiting = Some(i);
                        break;
                    }
                    self.add_call(i, l, &groups[i], node)?;
                    next[i] += 1;
                    progressed = true;
                }
            }
            match (waiting, progressed) {
                (None, _) => return Ok(()),
                (Some(_), true) => {}
                (Some(i), false) => {
                    let what = format!(
                        "layer {:?} takes tensors of calls that wait for it (a cycle)",
                        self.names[i]
                    );
                    return Err(unsupported(&self.source(), what));
                }
            }
        }
    }

    /// Whether every call a node takes has run (a call the model lacks counts as run:
    /// the node's reading reports it).
    fn ready(&self, node: Option<&Value>) -> bool {
        node.map(node_refs)
            .unwrap_or_default()
            .iter()
            .all(
                |(name, call)| match self.names.iter().position(|n| n == name) {
                    Some(i) => *call >= self.call_counts[i] || *call < self.calls[i].len(),
                    None => true,
                },
            )
    }

    /// The graph node of call `call` of the layer `name`, and whether its output is a mask
    /// (a mask operation's, or a boolean model input).
    fn locate(&self, name: &str, call: usize) -> Option<(usize, bool)> {
        let i = self.names.iter().position(|n| n == name)?;
        let node = *self.calls[i].get(call)?;
        let mask_op = matches!(self.built[i], Some(ModelLayer::MaskOp(_)));
        Some((node, mask_op || self.boolean_input[i]))
    }

    /// One call of layer `i`: builds the layer at its first call, and records the node.
    fn add_call(&mut self, i: usize, l: &Value, group: &str, node: Option<&Value>) -> Result<()> {
        let lname = self.names[i].clone();
        let class = l["class_name"].as_str().unwrap_or("");
        let mask_op = MaskOp::from_node(class, &l["config"], &node_scalars(node));
        let takes = match (mask_op.is_some(), class) {
            (true, _) => Takes::Recorded,
            (false, "MultiHeadAttention") => Takes::QueryValueKey,
            (false, _) => Takes::One,
        };
        let inbound = self.inbound(node, &lname, takes)?;
        let inputs = self.input_states(l, &lname, &inbound.sources)?;
        let states = match self.built[i].is_some() {
            true => self.recall(i, l, &lname, &inputs, &inbound)?,
            false => {
                let (layer, states) =
                    self.build_layer(l, &lname, group, mask_op, &inputs, &inbound)?;
                if let Some(reg) = crate::io::keras::train::activity_regularizer(l, &layer)? {
                    self.activity.push((lname.clone(), reg));
                }
                self.built[i] = Some(layer);
                self.first_inputs[i] = inputs;
                states
            }
        };
        self.calls[i].push(self.graph.nodes.len());
        self.graph.nodes.push(Node {
            layer: i,
            call: inbound,
        });
        self.states.push(states);
        Ok(())
    }

    /// Builds a layer at its first call; returns it with the states of its outputs.
    fn build_layer(
        &mut self,
        l: &Value,
        lname: &str,
        group: &str,
        mask_op: Option<std::result::Result<MaskOp, String>>,
        inputs: &[TensorState],
        inbound: &Inbound,
    ) -> Result<(ModelLayer, Vec<TensorState>)> {
        let source = self.source();
        let class = l["class_name"].as_str().unwrap_or("");
        let op = match class {
            "Dot" => Some(MergeOp::dot_from_keras(&l["config"]).ok_or_else(|| {
                malformed(
                    &source,
                    format!("layer {lname:?}: Dot axes {}", l["config"]["axes"]),
                )
            })?),
            _ => MergeOp::from_class(class),
        };
        let (layer, state) = match (mask_op, op) {
            (Some(op), _) => {
                let op =
                    op.map_err(|why| unsupported(&source, format!("layer {lname:?}: {why}")))?;
                crate::io::keras::graph::mask_op_layer(&source, lname, op, inputs)?
            }
            (None, Some(op)) => merge_layer(&source, l, lname, op, inputs, self.graph.mask_rule)?,
            (None, None) if matches!(class, "Attention" | "AdditiveAttention") => {
                crate::io::keras::attention::build(&mut self.b, l, lname, group, inputs, inbound)?
            }
            (None, None) if class == "MultiHeadAttention" => {
                crate::io::keras::mha::build(&mut self.b, l, lname, group, inputs, inbound)?
            }
            (None, None) if time_distributed::wraps_more_than_dense(l) => {
                return self.time_distributed(l, lname, group, inputs);
            }
            (None, None) if is_model_class(class) => return self.nested(l, lname, group, inputs),
            (None, None) => self.single_input_layer(l, lname, group, inputs, inbound)?,
        };
        Ok((layer, vec![state]))
    }

    /// A model nested as a layer (a `Sequential` or functional encoder called inside
    /// another model): built like a model, its variables under `{group}/layers/...`.
    fn nested(
        &mut self,
        l: &Value,
        lname: &str,
        group: &str,
        inputs: &[TensorState],
    ) -> Result<(ModelLayer, Vec<TensorState>)> {
        let mut b = ChainBuilder::new(self.b.w, self.b.dtype, self.b.device, format!("{group}/"));
        // A legacy file lists a nested model's variables under the top-level nested model.
        b.legacy_model = match self.b.legacy_model.as_str() {
            "" => format!("{lname}/"),
            outer => outer.to_string(),
        };
        let (model, states) = build_model(l, b, self.graph.mask_rule, Some(inputs.to_vec()))?;
        Ok((ModelLayer::Model(Box::new(model)), states))
    }

    /// A later call of a built layer (a shared layer): the states of its outputs. The
    /// layer takes tensors of the sizes it was built for; a nested model, tensors of the
    /// states it was built for (masks included). Layers whose call arguments are part of
    /// the layer (attention, mask operations) are called once.
    fn recall(
        &mut self,
        i: usize,
        l: &Value,
        lname: &str,
        inputs: &[TensorState],
        inbound: &Inbound,
    ) -> Result<Vec<TensorState>> {
        let source = self.source();
        let first_node = self.calls[i][0];
        let refuse = |why: String| Err(unsupported(&source, format!("layer {lname:?}: {why}")));
        let Some(layer) = &self.built[i] else {
            return refuse("called before it was built".into());
        };
        match layer {
            ModelLayer::Merge(op) => {
                let rule = self.graph.mask_rule;
                let (_, state) = merge_layer(&source, l, lname, *op, inputs, rule)?;
                Ok(vec![state])
            }
            ModelLayer::Input
            | ModelLayer::MaskOp(_)
            | ModelLayer::Attention(_)
            | ModelLayer::MultiHeadAttention(_) => {
                refuse("an input, mask operation or attention layer called more than once".into())
            }
            ModelLayer::Model(_) | ModelLayer::TimeDistributed(_)
                if inputs == self.first_inputs[i].as_slice() =>
            {
                Ok(self.states[first_node].clone())
            }
            ModelLayer::Model(_) | ModelLayer::TimeDistributed(_) => refuse(format!(
                "a nested model or TimeDistributed called on {inputs:?} after {:?} (the same \
                 sizes and masks expected)",
                self.first_inputs[i]
            )),
            _ => {
                let first = self.first_inputs[i].first();
                let [input] = inputs else {
                    return refuse(format!("called with {} inputs", inputs.len()));
                };
                if first.is_some_and(|f| f.features != input.features || f.rank != input.rank) {
                    return refuse(format!(
                        "called on a tensor of {:?} features (rank {:?}) after {:?} (rank {:?})",
                        input.features,
                        input.rank,
                        first.and_then(|f| f.features),
                        first.and_then(|f| f.rank)
                    ));
                }
                check_initial_state(&source, lname, layer, inbound)?;
                self.b.enter(input);
                self.b.features = self.states[first_node].first().and_then(|s| s.features);
                Ok(vec![self.b.leave(layer, call_mask(input, inbound))])
            }
        }
    }

    /// What a call takes: its node in a functional model, the call before it (or the
    /// model input) in a Sequential.
    fn inbound(&self, node: Option<&Value>, lname: &str, takes: Takes) -> Result<Inbound> {
        if self.functional {
            let locate = |name: &str, call: usize| self.locate(name, call);
            let names = &self.input_names;
            return graph_inbound(&self.b.w.source, node, lname, &locate, takes, names);
        }
        let source = match self.graph.nodes.len() {
            0 => Source::ModelInput(0),
            n => Source::Node {
                node: n - 1,
                tensor: 0,
            },
        };
        Ok(Inbound {
            sources: vec![source],
            tensors: vec![source],
            ..Inbound::default()
        })
    }

    /// The state of output `tensor` of graph node `node`, when the builder follows it.
    fn state_of(&self, node: usize, tensor: usize) -> Option<TensorState> {
        let known = self.states.get(node)?;
        if let Some(s) = known.get(tensor) {
            return Some(s.clone());
        }
        let layer = self.built[self.graph.nodes[node].layer].as_ref()?;
        match layer {
            ModelLayer::Model(_) => None,
            _ => TensorState::of_output(known.first()?, layer, tensor),
        }
    }

    /// The states of the tensors a call takes.
    fn input_states(&self, l: &Value, lname: &str, sources: &[Source]) -> Result<Vec<TensorState>> {
        sources
            .iter()
            .map(|s| match (*s, &self.given) {
                (Source::ModelInput(k), Some(given)) => given.get(k).cloned().ok_or_else(|| {
                    let what = format!("nested model input {k} of {} given", given.len());
                    unsupported(&self.b.w.source, format!("layer {lname:?}: {what}"))
                }),
                (Source::ModelInput(_), None) => Ok(TensorState::of_input(l)),
                (Source::Node { node, tensor }, _) => {
                    self.state_of(node, tensor).ok_or_else(|| {
                        let from = self.graph.nodes.get(node).map(|n| &self.names[n.layer]);
                        let what = format!("layer {lname:?}: output {tensor} of {from:?}");
                        unsupported(&self.b.w.source, what)
                    })
                }
            })
            .collect()
    }

    /// A layer of one input tensor (every layer but merges, mask operations, attention
    /// and nested models), with its `initial_state` and `mask` arguments checked.
    fn single_input_layer(
        &mut self,
        l: &Value,
        lname: &str,
        group: &str,
        inputs: &[TensorState],
        inbound: &Inbound,
    ) -> Result<(ModelLayer, TensorState)> {
        let source = self.source();
        let [input] = inputs else {
            let what = format!("layer {lname:?} with {} inputs", inputs.len());
            return Err(unsupported(&source, what));
        };
        self.b.enter(input);
        let layer = self.b.layer(l, lname, group)?;
        check_initial_state(&source, lname, &layer, inbound)?;
        let state = self.b.leave(&layer, call_mask(input, inbound));
        Ok((layer, state))
    }

    fn finish(self, config: &Value) -> Result<(KerasModel, Vec<TensorState>)> {
        let source = self.source();
        let mut graph = self.graph.clone();
        let last = graph.nodes.len().saturating_sub(1);
        let out_states: Vec<TensorState> = match self.functional {
            true => {
                let locate = |name: &str, call: usize| self.locate(name, call);
                let outputs = graph_outputs(&source, config, &locate)?;
                let states = outputs
                    .iter()
                    .map(|&(node, tensor)| self.state_of(node, tensor).unwrap_or_default())
                    .collect();
                graph.outputs = Some(outputs);
                states
            }
            false => (0..).map_while(|k| self.state_of(last, k)).collect(),
        };
        graph.inputs = self.input_names.len().max(1);
        let ends: Vec<usize> = match &graph.outputs {
            Some(outs) => outs.iter().map(|&(node, _)| node).collect(),
            None => graph.nodes.len().checked_sub(1).into_iter().collect(),
        };
        graph.order = crate::io::keras::order::keras_run_order(&graph.nodes, &ends);
        let annotated = self.annotated(config);
        let layers = self
            .names
            .into_iter()
            .zip(self.built)
            .map(|(name, layer)| match layer {
                Some(layer) => Ok((name, layer)),
                None => Err(malformed(
                    &source,
                    format!("layer {name:?} is never called"),
                )),
            })
            .collect::<Result<_>>()?;
        let model = KerasModel {
            name: config["config"]["name"]
                .as_str()
                .unwrap_or("model")
                .to_string(),
            layers,
            activity: self.activity,
            graph,
            variables: Vec::new(),
            config: annotated,
        };
        Ok((model, out_states))
    }
}

/// The mask a call's output carries before the layer acts: its `mask` argument (a
/// recorded mask operation) replaces the one its input carries.
fn call_mask(input: &TensorState, inbound: &Inbound) -> MaskState {
    match inbound.masks.first() {
        Some(Some(_)) => MaskState::Masking,
        _ => input.mask,
    }
}

/// A call's `initial_state` tensors: none, or one per state of the layer (a GRU's one, a
/// Bidirectional's two).
fn check_initial_state(
    source: &str,
    lname: &str,
    layer: &ModelLayer,
    inbound: &Inbound,
) -> Result<()> {
    let states = match layer {
        ModelLayer::Gru(_) => 1,
        ModelLayer::Bidirectional(_) => 2,
        ModelLayer::StackedGru(s) => s.grus().len(),
        _ => 0,
    };
    let given = inbound.initial_state.len();
    if given != 0 && given != states {
        let what = format!(
            "layer {lname:?} called with {given} initial_state tensors ({states} for its class)"
        );
        return Err(unsupported(source, what));
    }
    Ok(())
}

/// The positional arguments of an inbound node that are not tensors.
fn node_scalars(node: Option<&Value>) -> Vec<Value> {
    let args = node.and_then(|n| n["args"].as_array());
    args.into_iter()
        .flatten()
        .filter(|a| !a.is_array() && a["class_name"] != "__keras_tensor__")
        .cloned()
        .collect()
}
