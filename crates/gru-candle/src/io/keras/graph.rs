//! The functional-graph side of a model config: each layer's calls (Keras' inbound
//! nodes; a shared layer has several) and the tensors they take, the model's outputs, and
//! what the builder knows of each tensor (its size and the mask it carries).

use super::merge::{MaskRule, MergeOp};
use super::{unsupported, ModelLayer};
use crate::bidirectional::MergeMode;
use crate::error::Result;
use serde_json::Value;

/// The mask the chain carries after a layer, as [`super::KerasModel::call`] propagates it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) enum MaskState {
    #[default]
    None,
    /// `ids != 0`, from an `Embedding(mask_zero=True)`.
    Ids,
    /// From a `Masking` layer.
    Masking,
}

impl MaskState {
    pub(super) fn after(self, layer: &ModelLayer) -> MaskState {
        match layer {
            ModelLayer::Masking { .. } => MaskState::Masking,
            ModelLayer::Embedding(e) if e.mask_zero => MaskState::Ids,
            ModelLayer::Embedding(_) => MaskState::None,
            ModelLayer::GlobalPooling(_)
            | ModelLayer::Conv1D(_)
            | ModelLayer::Pooling(_)
            | ModelLayer::Conv2D(_)
            | ModelLayer::Pooling2D(_)
            | ModelLayer::Reshaping(_) => MaskState::None,
            ModelLayer::Gru(g) if !g.config().return_sequences => MaskState::None,
            ModelLayer::Bidirectional(b) if !b.forward_layer().config().return_sequences => {
                MaskState::None
            }
            ModelLayer::StackedGru(s) if !s.last().is_some_and(|c| c.return_sequences) => {
                MaskState::None
            }
            _ => self,
        }
    }
}

/// Where a layer's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The model's k-th input.
    ModelInput(usize),
    /// Output `tensor` of the call at index `node` of the graph.
    Node { node: usize, tensor: usize },
}

/// One call of a layer (Keras' node): a layer called twice (a shared layer) has two.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// The layer called, by index in the model's layers.
    pub(super) layer: usize,
    /// What it is called with.
    pub(super) call: Inbound,
}

/// A model's graph: its layers' calls in an order that runs every call after the calls
/// whose outputs it takes, and the model's outputs.
#[derive(Debug, Clone, Default)]
pub(super) struct Graph {
    /// The calls, each after the calls whose outputs it takes.
    pub(super) nodes: Vec<Node>,
    /// The calls the outputs depend on, in the order Keras runs them.
    pub(super) order: Vec<usize>,
    /// The number of model inputs.
    pub(super) inputs: usize,
    /// How merge layers mask their outputs (Keras 2's rule for models Keras 2 wrote).
    pub(super) mask_rule: MaskRule,
    /// The model's outputs, `(node, tensor)`; `None`: every output of the last call
    /// (Sequential).
    pub(super) outputs: Option<Vec<(usize, usize)>>,
}

/// What the builder knows of one tensor of the graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct TensorState {
    /// Its last dimension.
    pub(super) features: Option<usize>,
    /// Its rank, batch included.
    pub(super) rank: Option<usize>,
    /// Its dims after the batch, when all are fixed.
    pub(super) dims: Option<Vec<usize>>,
    /// The mask it carries.
    pub(super) mask: MaskState,
}

impl TensorState {
    /// A tensor's shape as Keras writes it (`None` for the batch and unknown sizes).
    pub(super) fn keras_shape(&self) -> Option<Value> {
        let mut shape = vec![Value::Null];
        match (&self.dims, self.rank) {
            (Some(dims), _) => shape.extend(dims.iter().map(|&d| Value::from(d))),
            (None, Some(rank)) if rank >= 2 => {
                shape.extend((2..rank).map(|_| Value::Null));
                shape.push(self.features.map_or(Value::Null, Value::from));
            }
            _ => return None,
        }
        Some(Value::Array(shape))
    }

    /// The model's input, as the layer `l` that takes it declares it (an InputLayer's
    /// `batch_shape`, or a first layer's `build_config.input_shape`).
    pub(super) fn of_input(l: &Value) -> TensorState {
        let shape = l["config"]
            .get("batch_shape")
            .or(l["build_config"].get("input_shape"))
            .and_then(Value::as_array);
        TensorState {
            features: shape
                .and_then(|s| s.last())
                .and_then(Value::as_u64)
                .map(|d| d as usize),
            rank: shape.map(Vec::len),
            dims: shape.and_then(|s| {
                s.iter()
                    .skip(1)
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            }),
            mask: MaskState::None,
        }
    }

    /// Output `tensor` of `layer`, whose first output is `first`: a GRU's state
    /// (`return_state`), a Bidirectional's second sequence (merge mode None) and its two
    /// states too; `None` for outputs the builder does not follow.
    pub(super) fn of_output(
        first: &TensorState,
        layer: &ModelLayer,
        tensor: usize,
    ) -> Option<TensorState> {
        let state = |units: usize| TensorState {
            features: Some(units),
            rank: Some(2),
            dims: Some(vec![units]),
            mask: MaskState::None,
        };
        match (tensor, layer) {
            (0, _) => Some(first.clone()),
            (1, ModelLayer::Gru(g)) if g.config().return_state => Some(state(g.config().units)),
            (k, ModelLayer::StackedGru(s)) => {
                let grus = s.grus();
                let g = grus.get(k - 1)?;
                g.config().return_state.then(|| state(g.config().units))
            }
            (k, ModelLayer::Bidirectional(b)) => {
                let c = b.forward_layer().config();
                let sequences = if b.merge_mode() == MergeMode::None {
                    2
                } else {
                    1
                };
                match k {
                    1 if sequences == 2 => Some(first.clone()),
                    k if c.return_state && (sequences..sequences + 2).contains(&k) => {
                        Some(state(c.units))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// The names of the input layers a functional config declares (`input_layers`), in the
/// order the model takes its inputs.
pub(super) fn functional_inputs(config: &Value) -> Vec<String> {
    tensor_list(&config["config"]["input_layers"])
        .into_iter()
        .filter_map(|t| t[0].as_str().map(str::to_string))
        .collect()
}

/// `[name, node, tensor]` or a list of them.
fn tensor_list(v: &Value) -> Vec<&Value> {
    match v.as_array() {
        Some(a) if a.first().is_some_and(Value::is_string) => vec![v],
        Some(a) => a.iter().collect(),
        None => Vec::new(),
    }
}

/// What a functional model's layer is called with.
#[derive(Debug, Clone, Default)]
pub(super) struct Inbound {
    /// Its tensors, in order.
    pub(super) sources: Vec<Source>,
    /// The tensors of its `mask` argument (one per input for attention layers; `None` for
    /// an input given none); empty without the argument.
    pub(super) masks: Vec<Option<Source>>,
    /// The tensors of its `initial_state` argument.
    pub(super) initial_state: Vec<Source>,
    /// The tensor of its `attention_mask` argument (MultiHeadAttention).
    pub(super) attention_mask: Option<Source>,
    /// Every tensor it takes, in Keras' order (positional arguments, then keyword
    /// arguments by sorted name): the order Keras walks the graph in.
    pub(super) tensors: Vec<Source>,
}

/// The tensors of a node's arguments in Keras' flattening order (`tree.flatten` of
/// `(args, kwargs)`: lists in order, dicts by sorted key).
fn keras_tensors(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(_) if v["class_name"] == "__keras_tensor__" => out.push(v.clone()),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.into_iter().for_each(|k| keras_tensors(&m[k], out));
        }
        Value::Array(a) => a.iter().for_each(|x| keras_tensors(x, out)),
        _ => {}
    }
}

/// What a layer's call takes as positional arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Takes {
    /// One tensor, or one list of tensors (merge and attention layers).
    One,
    /// The tensors and numbers of a recorded operation (mask operations).
    Recorded,
    /// `query, value(, key)`, positional or by keyword (MultiHeadAttention), with their
    /// `*_mask` and `attention_mask` arguments.
    QueryValueKey,
}

/// Finds the graph node of call `call` of the layer named `name`, and whether its output
/// is a mask (a mask operation's, or a boolean model input); `None` when the model has no
/// such call.
pub(super) type Locate<'a> = dyn Fn(&str, usize) -> Option<(usize, bool)> + 'a;

/// The calls whose outputs an inbound node takes, `(layer name, call index)`: every
/// tensor its arguments name (inputs, `mask`, `initial_state`).
pub(super) fn node_refs(node: &Value) -> Vec<(String, usize)> {
    let mut refs = Vec::new();
    let mut stack = vec![node];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(_) if v["class_name"] == "__keras_tensor__" => {
                let h = &v["config"]["keras_history"];
                if let (Some(name), Some(call)) = (h[0].as_str(), h[1].as_u64()) {
                    refs.push((
                        name.to_string(),
                        usize::try_from(call).unwrap_or(usize::MAX),
                    ));
                }
            }
            Value::Object(m) => stack.extend(m.values()),
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    refs
}

/// The inputs of one call of a functional model's layer, from its inbound node (Keras 3's
/// form; `None`: a layer without inbound nodes, an input layer): one tensor, or a list of
/// them for a merge layer, the tensors and numbers of a recorded operation, or a
/// MultiHeadAttention's query, value and key (see [`Takes`]); its `mask` and
/// `initial_state` arguments. Other keyword arguments are refused by name. An input layer
/// is the model input `input_names` lists it at.
pub(super) fn graph_inbound(
    source: &str,
    node: Option<&Value>,
    lname: &str,
    locate: &Locate,
    takes: Takes,
    input_names: &[String],
) -> Result<Inbound> {
    let Some(node) = node else {
        let k = match input_names.iter().position(|n| n == lname) {
            Some(k) => k,
            None if input_names.is_empty() => 0,
            None => {
                let what = format!("input layer {lname:?}, which input_layers does not list");
                return Err(unsupported(source, what));
            }
        };
        return Ok(Inbound {
            sources: vec![Source::ModelInput(k)],
            tensors: vec![Source::ModelInput(k)],
            ..Inbound::default()
        });
    };
    let args = node["args"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let kwargs = node["kwargs"].as_object();
    // Attention layers' call arguments are read by their builder.
    let mut known = vec![
        "mask",
        "training",
        "initial_state",
        "use_causal_mask",
        "return_attention_scores",
    ];
    let qvk = ["query", "value", "key"];
    let qvk_masks = ["query_mask", "value_mask", "key_mask"];
    if takes == Takes::QueryValueKey {
        known.extend(qvk.iter().chain(&qvk_masks).chain(&["attention_mask"]));
    }
    let extra = kwargs
        .into_iter()
        .flatten()
        .find(|(k, v)| !known.contains(&k.as_str()) && !v.is_null());
    let is_tensor = |v: &Value| v["class_name"] == "__keras_tensor__";
    let (mut tensors, scalars): (Vec<&Value>, Vec<&Value>) = args
        .iter()
        .flat_map(|a| match a {
            Value::Array(list) => list.iter().collect::<Vec<_>>(),
            one => vec![one],
        })
        .partition(|v| is_tensor(v));
    let positional_ok = match takes {
        Takes::One => args.len() == 1 && scalars.is_empty(),
        Takes::Recorded => true,
        Takes::QueryValueKey => args.len() <= 3 && scalars.is_empty() && args.iter().all(is_tensor),
    };
    if extra.is_some() || !positional_ok {
        let what = format!(
            "layer {lname:?} called with {} positional arguments and {:?}",
            args.len(),
            extra.map(|(k, _)| k)
        );
        return Err(unsupported(source, what));
    }
    if takes == Takes::QueryValueKey {
        // Keyword tensors take the places their names give.
        let mut slots: Vec<Option<&Value>> = tensors.iter().copied().map(Some).collect();
        slots.resize(3, None);
        for (k, name) in qvk.iter().enumerate() {
            match (
                kwargs.and_then(|m| m.get(*name)).filter(|v| !v.is_null()),
                slots[k],
            ) {
                (Some(t), None) => slots[k] = Some(t),
                (Some(_), Some(_)) => {
                    let what = format!("layer {lname:?}: {name} given twice");
                    return Err(unsupported(source, what));
                }
                _ => {}
            }
        }
        let given: Vec<&Value> = slots.iter().map_while(|s| *s).collect();
        if given.len() < 2 || slots.iter().skip(given.len()).any(Option::is_some) {
            let what = format!("layer {lname:?}: a call without query and value");
            return Err(unsupported(source, what));
        }
        tensors = given;
    }
    let find = |t: &Value| -> Result<(usize, usize, bool)> {
        let h = &t["config"]["keras_history"];
        let (name, call, tensor) = (h[0].as_str(), h[1].as_u64(), h[2].as_u64());
        let (Some(name), Some(call), Some(tensor)) = (name, call, tensor) else {
            return Err(unsupported(source, format!("layer {lname:?}: input {t}")));
        };
        let call = usize::try_from(call).unwrap_or(usize::MAX);
        let Some((node, mask_op)) = locate(name, call) else {
            let what =
                format!("layer {lname:?} takes call {call} of {name:?}, which the model lacks");
            return Err(unsupported(source, what));
        };
        Ok((node, tensor as usize, mask_op))
    };
    let locate = |t: &Value| -> Result<Source> {
        find(t).map(|(node, tensor, _)| Source::Node { node, tensor })
    };
    // One mask, or one per input (attention layers); null entries are inputs without one.
    let one_mask = |m: &Value| -> Result<Option<Source>> {
        if m.is_null() {
            return Ok(None);
        }
        if !is_tensor(m) {
            let what = format!("layer {lname:?}: mask argument {m}");
            return Err(unsupported(source, what));
        }
        // A mask operation's output, or a boolean model input (keras.io's video classifier
        // hands one to its GRU).
        let (node, tensor, is_mask) = find(m)?;
        if !is_mask {
            let what = format!(
                "layer {lname:?}: its mask argument is the output of {:?}, which computes no mask",
                m["config"]["keras_history"][0]
            );
            return Err(unsupported(source, what));
        }
        Ok(Some(Source::Node { node, tensor }))
    };
    let arg = |name: &str| kwargs.and_then(|k| k.get(name)).filter(|v| !v.is_null());
    let masks = match arg("mask") {
        None if takes == Takes::QueryValueKey && qvk_masks.iter().any(|m| arg(m).is_some()) => {
            let each = qvk_masks.iter().map(|m| arg(m).map_or(Ok(None), one_mask));
            each.collect::<Result<_>>()?
        }
        None => Vec::new(),
        Some(Value::Array(list)) => list.iter().map(one_mask).collect::<Result<_>>()?,
        Some(m) => vec![one_mask(m)?],
    };
    let attention_mask = arg("attention_mask").map(locate).transpose()?;
    let mut all = Vec::new();
    keras_tensors(&node["args"], &mut all);
    keras_tensors(&node["kwargs"], &mut all);
    let tensors_in_order = all.iter().map(locate).collect::<Result<_>>()?;
    let initial_state = match kwargs.and_then(|k| k.get("initial_state")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.iter().map(locate).collect::<Result<_>>()?,
        Some(one) => vec![locate(one)?],
    };
    Ok(Inbound {
        sources: tensors.into_iter().map(locate).collect::<Result<_>>()?,
        masks,
        initial_state,
        attention_mask,
        tensors: tensors_in_order,
    })
}

/// A functional model's outputs (`output_layers`), as `(node, tensor)`.
pub(super) fn graph_outputs(
    source: &str,
    config: &Value,
    locate: &Locate,
) -> Result<Vec<(usize, usize)>> {
    let list = tensor_list(&config["config"]["output_layers"]);
    if list.is_empty() {
        return Err(unsupported(
            source,
            "a functional model without output_layers",
        ));
    }
    list.into_iter()
        .map(|o| {
            let name = o[0].as_str().unwrap_or("");
            let call = usize::try_from(o[1].as_u64().unwrap_or(0)).unwrap_or(usize::MAX);
            let tensor = o[2].as_u64().unwrap_or(0) as usize;
            let (node, _) = locate(name, call).ok_or_else(|| {
                let what = format!("model output: call {call} of {name:?}, which the model lacks");
                unsupported(source, what)
            })?;
            Ok((node, tensor))
        })
        .collect()
}

/// What a `Dot` of two tensors of rank 2 or 3 gives (`batch_dot`): the first's dims but
/// the contracted one, then the second's; `None` for other ranks or axes.
fn dot_state(inputs: &[TensorState], axes: [i64; 2]) -> Option<TensorState> {
    let [x, y] = inputs else { return None };
    let (rx, ry) = (x.rank?, y.rank?);
    let axis = |a: i64, r: usize| {
        let k = if a < 0 { a + r as i64 } else { a };
        (k >= 1 && k < r as i64 && (2..=3).contains(&r)).then_some(k as usize)
    };
    let (ax, ay) = (axis(axes[0], rx)?, axis(axes[1], ry)?);
    let rest = |s: &TensorState, a: usize| -> Option<Vec<usize>> {
        let mut d = s.dims.clone()?;
        d.remove(a - 1);
        Some(d)
    };
    let dims = match (rest(x, ax), rest(y, ay)) {
        (Some(a), Some(b)) => Some(match [a, b].concat() {
            d if d.is_empty() => vec![1],
            d => d,
        }),
        _ => None,
    };
    let features = match (&dims, ry, ay) {
        (Some(d), _, _) => d.last().copied(),
        // The second input's other axis comes last.
        (None, 3, 1) => y.features,
        _ => None,
    };
    Some(TensorState {
        features,
        rank: Some((rx + ry - 3).max(2)),
        dims,
        mask: MaskState::None,
    })
}

/// A merge layer over `inputs`: its output's size, rank and mask (by `rule`); refused where
/// Keras 3's values would depend on masks this crate does not replay (`Multiply`,
/// `Maximum`, `Minimum` over masked inputs), or where the inputs cannot be joined.
pub(super) fn merge_layer(
    source: &str,
    l: &Value,
    lname: &str,
    op: MergeOp,
    inputs: &[TensorState],
    rule: MaskRule,
) -> Result<(ModelLayer, TensorState)> {
    let refuse = |why: &str| Err(unsupported(source, format!("layer {lname:?}: {why}")));
    let Some(first) = inputs.first().filter(|_| inputs.len() >= 2) else {
        return refuse("a merge of fewer than 2 inputs");
    };
    if let MergeOp::Dot { axes, .. } = op {
        return dot_state(inputs, axes)
            .map(|state| (ModelLayer::Merge(op), state))
            .ok_or_else(|| {
                unsupported(
                    source,
                    format!("layer {lname:?}: Dot of {inputs:?} over axes {axes:?}"),
                )
            });
    }
    let same_rank = inputs.iter().all(|i| i.rank == first.rank);
    let axis = l["config"]["axis"].as_i64().unwrap_or(-1);
    let last = first
        .rank
        .and_then(|r| i64::try_from(r).ok())
        .map(|r| r - 1);
    if !same_rank || (op == MergeOp::Concatenate && axis != -1 && Some(axis) != last) {
        return refuse(
            "inputs of different ranks, or a Concatenate over another axis than the last",
        );
    }
    let (features, dims) = match op {
        MergeOp::Concatenate => {
            let sum = inputs.iter().map(|i| i.features).sum::<Option<usize>>();
            let lead = |i: &TensorState| {
                i.dims
                    .as_ref()
                    .map(|d| d[..d.len().saturating_sub(1)].to_vec())
            };
            let dims = match (
                inputs.iter().all(|i| lead(i) == lead(first)),
                lead(first),
                sum,
            ) {
                (true, Some(mut d), Some(f)) => Some({
                    d.push(f);
                    d
                }),
                _ => None,
            };
            (sum, dims)
        }
        _ => {
            if inputs
                .iter()
                .any(|i| i.features.is_some() && i.features != first.features)
            {
                return refuse("inputs of different sizes");
            }
            (first.features, first.dims.clone())
        }
    };
    let masks: Vec<MaskState> = inputs
        .iter()
        .map(|i| i.mask)
        .filter(|m| *m != MaskState::None)
        .collect();
    let mask = match (rule, masks.as_slice()) {
        (_, []) => MaskState::None,
        (MaskRule::Keras3, m) if m.len() < inputs.len() => MaskState::None,
        (_, [one, rest @ ..]) if rest.iter().all(|m| m == one) => *one,
        _ => MaskState::Masking,
    };
    let state = TensorState {
        features,
        rank: first.rank,
        dims,
        mask,
    };
    Ok((ModelLayer::Merge(op), state))
}

/// A recorded mask operation over `inputs`.
pub(super) fn mask_op_layer(
    source: &str,
    lname: &str,
    op: super::mask_ops::MaskOp,
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
