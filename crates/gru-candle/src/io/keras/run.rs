//! Running a loaded model: the chain of layers with Keras' mask propagation and
//! autocasting, in inference or training, with the losses a training loop adds.

use super::graph::{Node, Source};
use super::merge::MaskRule;
use super::train::{activity_loss, zero_loss, ModelCall, ModelOutput};
use super::{KerasModel, ModelLayer};
use crate::call::{sum_losses, CallOptions};
use crate::dtype::autocast;
use crate::error::Result;
use candle_core::{DType, Tensor, D};

/// What one layer hands the next: its outputs and the mask they carry.
struct Carried {
    outs: Vec<Tensor>,
    mask: Option<Tensor>,
    /// A GRU's (or Bidirectional's) own activity loss of this call.
    gru_activity: Option<Tensor>,
}

impl KerasModel {
    /// Runs the chain for inference: `inputs` (batch, T, features), or token ids (batch, T)
    /// for a model that starts with an `Embedding`, and an optional (batch, T) u8 mask.
    /// Returns the last layer's outputs (several with `return_state` or merge_mode None).
    /// See [`KerasModel::call_with`].
    pub fn call(&self, inputs: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        let opts = ModelCall {
            mask,
            training: false,
        };
        Ok(self.call_with(inputs, opts)?.outputs)
    }

    /// Runs the chain, in training mode when `opts.training` (the GRUs' dropout and the
    /// `Dropout` layers act, and trainable `BatchNormalization` layers normalize with the
    /// batch's statistics and update their moving ones), and returns the outputs with every layer's activity loss. The
    /// output of a computing layer is cast to the next one's compute dtype (Keras'
    /// autocasting: a `mixed_float16` layer returns float16, a `float32` layer after it
    /// computes in float32); the model's own input reaches the first layer as it came.
    pub fn call_with(&self, inputs: &Tensor, opts: ModelCall) -> Result<ModelOutput> {
        self.call_inputs(std::slice::from_ref(inputs), opts)
    }

    /// [`KerasModel::call_with`] for a model of several inputs (an encoder-decoder whose
    /// decoder GRU starts from the encoder's state): one tensor per model input, in the
    /// order of the config's `input_layers`; `opts.mask` masks the first input.
    pub fn call_inputs(&self, inputs: &[Tensor], opts: ModelCall) -> Result<ModelOutput> {
        if inputs.len() != self.graph.inputs.max(1) {
            return Err(crate::Error::Gru(gru_core::GruError::Shape {
                what: format!("the inputs of model {:?}", self.name),
                expected: format!("{} tensors (input_layers)", self.graph.inputs.max(1)),
                got: format!("{} tensors", inputs.len()),
            }));
        }
        let input: Vec<Produced> = inputs
            .iter()
            .enumerate()
            .map(|(k, x)| Produced {
                outs: vec![x.clone()],
                masks: vec![if k == 0 { opts.mask.cloned() } else { None }],
                computed: false,
            })
            .collect();
        let (out, losses) = self.run_graph(&input, opts.training)?;
        Ok(ModelOutput {
            outputs: out.outs,
            activity_loss: sum_losses(losses)?,
        })
    }

    /// Runs every call of the graph on `input` (one per model input, with its mask);
    /// returns the model's outputs with their masks, and the activity losses.
    fn run_graph(
        &self,
        input: &[Produced],
        training: bool,
    ) -> Result<(Produced, Vec<Option<Tensor>>)> {
        let mut produced: Vec<Produced> = Vec::with_capacity(self.graph.nodes.len());
        let mut losses = Vec::new();
        for node in &self.graph.nodes {
            let (name, layer) = self
                .layers
                .get(node.layer)
                .ok_or_else(|| graph_error("a call", "a layer of the model"))?;
            let rule = self.graph.mask_rule;
            let out = run_node(node, layer, rule, input, &produced, training, &mut losses)?;
            // Keras adds a layer's activity loss at every call.
            if let Some((_, reg)) = self.activity.iter().find(|(n, _)| n == name) {
                losses.push(activity_loss(reg, &out.outs)?);
            }
            produced.push(out);
        }
        let outputs = match &self.graph.outputs {
            None => produced.pop().unwrap_or_default(),
            Some(outs) => {
                let taken: Vec<_> = outs
                    .iter()
                    .map(|&(node, tensor)| take(&Source::Node { node, tensor }, input, &produced))
                    .collect::<Result<_>>()?;
                Produced {
                    outs: taken.iter().map(|t| t.0.clone()).collect(),
                    masks: taken.iter().map(|t| t.1.cloned()).collect(),
                    computed: taken.iter().any(|t| t.2),
                }
            }
        };
        Ok((outputs, losses))
    }

    /// The sum of every layer's weight regularization losses (the GRUs' kernel, recurrent
    /// and bias regularizers, and those of Dense, Conv1D, Embedding and the normalizations'
    /// weights), as a differentiable scalar for a training loop to add to its loss. Zero
    /// without regularizers.
    pub fn regularization_loss(&self) -> Result<Tensor> {
        let mut losses = Vec::new();
        let mut any_weight = None;
        for layer in self.all_layers() {
            for g in grus(layer) {
                losses.push(Some(g.regularization_loss()?));
                any_weight.get_or_insert_with(|| g.kernel().clone());
            }
            for rule in rules(layer) {
                losses.push(rule.loss()?);
                any_weight.get_or_insert_with(|| rule.weight.clone());
            }
        }
        match (sum_losses(losses)?, any_weight) {
            (Some(total), _) => Ok(total),
            (None, Some(w)) => zero_loss(&w),
            (None, None) => Ok(Tensor::zeros((), DType::F32, &candle_core::Device::Cpu)?),
        }
    }

    /// Zeroes the state every stateful GRU of the model keeps (a Bidirectional's two too),
    /// as Keras' `reset_states()` on each of them: the next call starts from zero states.
    /// Without stateful layers it does nothing.
    pub fn reset_states(&self) {
        for layer in self.all_layers() {
            for g in grus(layer) {
                g.reset_states();
            }
        }
    }

    /// Applies every layer's constraints in place (call after each optimizer step, as Keras
    /// does). The constrained weights must be `Var`s: a model from
    /// [`KerasModel::load_trainable`].
    pub fn apply_constraints(&self) -> Result<()> {
        for layer in self.all_layers() {
            for g in grus(layer) {
                g.apply_constraints()?;
            }
            for rule in rules(layer) {
                rule.constrain()?;
            }
        }
        Ok(())
    }
}

impl KerasModel {
    /// Every layer of the model, those of nested models included (a shared layer once).
    fn all_layers(&self) -> Vec<&ModelLayer> {
        let mut out = Vec::with_capacity(self.layers.len());
        for (_, layer) in &self.layers {
            match layer {
                ModelLayer::Model(m) => out.extend(m.all_layers()),
                layer => out.push(layer),
            }
        }
        out
    }
}

/// The GRUs of a layer.
fn grus(layer: &ModelLayer) -> Vec<&crate::layer::Gru> {
    match layer {
        ModelLayer::Gru(g) => vec![g],
        ModelLayer::Bidirectional(b) => vec![b.forward_layer(), b.backward_layer()],
        _ => Vec::new(),
    }
}

/// The weight rules of a layer around the GRUs.
fn rules(layer: &ModelLayer) -> &[super::train::WeightRule] {
    match layer {
        ModelLayer::Dense(d) => &d.rules,
        ModelLayer::Conv1D(c) => &c.rules,
        ModelLayer::Embedding(e) => &e.rules,
        ModelLayer::LayerNorm(n) => &n.rules,
        ModelLayer::BatchNorm(n) => &n.rules,
        ModelLayer::PRelu(p) => &p.rules,
        ModelLayer::MultiHeadAttention(a) => &a.rules,
        _ => &[],
    }
}

/// What a call produced: its outputs, the mask each carries (a layer's outputs after the
/// first carry none), and whether a computing layer made them (then the next computing
/// layer autocasts them).
#[derive(Default)]
struct Produced {
    outs: Vec<Tensor>,
    masks: Vec<Option<Tensor>>,
    computed: bool,
}

impl Produced {
    fn first_masked(outs: Vec<Tensor>, mask: Option<Tensor>, computed: bool) -> Produced {
        Produced {
            outs,
            masks: vec![mask],
            computed,
        }
    }
}

/// The tensor a source names, with its mask and whether a computing layer made it.
fn take<'a>(
    s: &Source,
    input: &'a [Produced],
    produced: &'a [Produced],
) -> Result<(&'a Tensor, Option<&'a Tensor>, bool)> {
    let (p, tensor) = match *s {
        Source::ModelInput(k) => (
            input
                .get(k)
                .ok_or_else(|| graph_error("a model input", "as many inputs as the model"))?,
            0,
        ),
        Source::Node { node, tensor } => (
            produced
                .get(node)
                .ok_or_else(|| graph_error("a call", "calls in order"))?,
            tensor,
        ),
    };
    let t = p.outs.get(tensor).ok_or_else(|| {
        graph_error(
            "a layer",
            &format!("output {tensor} of {} outputs", p.outs.len()),
        )
    })?;
    let mask = p.masks.get(tensor).and_then(Option::as_ref);
    Ok((t, mask, p.computed))
}

/// One call of a layer: its outputs from the tensors its node names; a GRU's or a nested
/// model's activity losses go to `losses`.
fn run_node(
    node: &Node,
    layer: &ModelLayer,
    rule: MaskRule,
    input: &[Produced],
    produced: &[Produced],
    training: bool,
    losses: &mut Vec<Option<Tensor>>,
) -> Result<Produced> {
    let take_all = |sources: &[Source]| -> Result<Vec<(&Tensor, Option<&Tensor>, bool)>> {
        sources.iter().map(|s| take(s, input, produced)).collect()
    };
    let taken = take_all(&node.call.sources)?;
    let initial: Vec<Tensor> = take_all(&node.call.initial_state)?
        .into_iter()
        .map(|t| t.0.clone())
        .collect();
    // A `mask` argument (a recorded mask operation) replaces the carried mask.
    let explicit: Vec<Option<Tensor>> = node
        .call
        .masks
        .iter()
        .map(|m| {
            m.as_ref()
                .map(|s| take(s, input, produced).map(|t| t.0.clone()))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let mask_of = |j: usize, carried: Option<&Tensor>| match explicit.get(j) {
        Some(Some(e)) => Some(e.clone()),
        _ => carried.cloned(),
    };
    let xs = || -> Vec<Tensor> { taken.iter().map(|t| t.0.clone()).collect() };
    Ok(match (layer, taken.as_slice()) {
        (ModelLayer::MaskOp(op), _) => {
            Produced::first_masked(vec![op.forward(&xs())?], None, false)
        }
        (ModelLayer::Attention(a), _) => {
            let masks: Vec<Option<Tensor>> = taken
                .iter()
                .enumerate()
                .map(|(j, t)| mask_of(j, t.1))
                .collect();
            let outs = a.forward(&xs(), &masks, training)?;
            Produced::first_masked(outs, masks.first().cloned().flatten(), true)
        }
        (ModelLayer::MultiHeadAttention(a), _) => {
            let masks: Vec<Option<Tensor>> = taken
                .iter()
                .enumerate()
                .map(|(j, t)| mask_of(j, t.1))
                .collect();
            let attention_mask = match &node.call.attention_mask {
                Some(s) => Some(take(s, input, produced)?.0.clone()),
                None => None,
            };
            let (outs, activity) = a.forward(&xs(), &masks, attention_mask.as_ref(), training)?;
            losses.push(activity);
            // Keras gives the output the query's mask.
            Produced::first_masked(outs, masks.first().cloned().flatten(), true)
        }
        (ModelLayer::Merge(op), _) => {
            let masks: Vec<Option<Tensor>> = taken.iter().map(|t| t.1.cloned()).collect();
            let mask = op.mask(&masks, rule)?;
            Produced::first_masked(vec![op.forward(&xs())?], mask, taken.iter().any(|t| t.2))
        }
        (ModelLayer::Model(m), _) => {
            let inner: Vec<Produced> = taken
                .iter()
                .enumerate()
                .map(|(j, t)| Produced::first_masked(vec![t.0.clone()], mask_of(j, t.1), t.2))
                .collect();
            let (out, inner_losses) = m.run_graph(&inner, training)?;
            losses.extend(inner_losses);
            out
        }
        (_, [(x, mask, computed)]) => {
            // The output of a computing layer is cast to the next one's dtype.
            let takes_ids = matches!(layer, ModelLayer::Embedding(_));
            let xc = match (*computed && !takes_ids, layer.compute_dtype()) {
                (true, Some(dtype)) => autocast(x, dtype)?,
                _ => (*x).clone(),
            };
            let prev = Carried {
                outs: vec![(*x).clone()],
                mask: mask_of(0, *mask),
                gru_activity: None,
            };
            let c = step(layer, &xc, prev, training, &initial)?;
            losses.push(c.gru_activity);
            let computed = *computed || layer.compute_dtype().is_some();
            Produced::first_masked(c.outs, c.mask, computed)
        }
        _ => return Err(graph_error("a layer of one input", "one input")),
    })
}

fn initial_error(what: &str, expected: usize, got: usize) -> crate::Error {
    crate::Error::Gru(gru_core::GruError::Shape {
        what: format!("the initial_state of {what}"),
        expected: format!("{expected} tensors"),
        got: format!("{got} tensors"),
    })
}

fn graph_error(what: &str, expected: &str) -> crate::Error {
    crate::Error::Gru(gru_core::GruError::Shape {
        what: format!("the model graph at {what}"),
        expected: expected.into(),
        got: "a graph this model was not built with".into(),
    })
}

/// One layer: its outputs from `x` (its input, autocast), and the mask it passes on.
fn step(
    layer: &ModelLayer,
    x: &Tensor,
    prev: Carried,
    training: bool,
    initial: &[Tensor],
) -> Result<Carried> {
    let mut mask = prev.mask;
    let mut gru_activity = None;
    let outs = match layer {
        ModelLayer::Input => prev.outs,
        ModelLayer::Masking { mask_value } => {
            let keep = x
                .ne(*mask_value)?
                .to_dtype(DType::F32)?
                .max_keepdim(D::Minus1)?;
            let y = x.broadcast_mul(&keep.to_dtype(x.dtype())?)?;
            mask = Some(keep.squeeze(D::Minus1)?.to_dtype(DType::U8)?);
            vec![y]
        }
        ModelLayer::Gru(g) => {
            let opts = CallOptions {
                mask: mask.as_ref(),
                initial_state: match initial {
                    [] => None,
                    [h] => Some(h),
                    more => return Err(initial_error("a GRU", 1, more.len())),
                },
                training,
            };
            let out = g.call(x, opts)?;
            if !g.config().return_sequences {
                mask = None;
            }
            gru_activity = out.activity_loss.clone();
            out.to_vec()
        }
        ModelLayer::Bidirectional(b) => {
            let states = match initial {
                [] => None,
                [f, bw] => Some((f, bw)),
                more => return Err(initial_error("a Bidirectional", 2, more.len())),
            };
            let out = b.call(x, mask.as_ref(), states, training)?;
            if !b.forward_layer().config().return_sequences {
                mask = None;
            }
            gru_activity = out.activity_loss;
            let mut v = out.outputs;
            if let Some((f, bw)) = out.states {
                v.push(f);
                v.push(bw);
            }
            v
        }
        ModelLayer::Dense(d) => vec![d.forward(x)?],
        ModelLayer::Embedding(e) => {
            mask = e.mask(x)?;
            vec![e.forward(x)?]
        }
        ModelLayer::Dropout(d) => vec![d.forward(x, training)?],
        ModelLayer::Activation(a) => vec![a.apply(x)?],
        ModelLayer::LayerNorm(n) => vec![n.forward(x)?],
        ModelLayer::BatchNorm(n) => vec![n.forward(x, mask.as_ref(), training)?],
        ModelLayer::GlobalPooling(p) => {
            let y = p.forward(x, mask.as_ref())?;
            mask = None;
            vec![y]
        }
        // Keras' convolutions and poolings do not support masking: the mask ends.
        ModelLayer::Conv1D(c) => {
            mask = None;
            vec![c.forward(x)?]
        }
        ModelLayer::Pooling(p) => {
            mask = None;
            vec![p.forward(x)?]
        }
        // Keras' reshaping layers do not support masking either.
        ModelLayer::Reshaping(r) => {
            mask = None;
            vec![r.forward(x)?]
        }
        ModelLayer::Noise(n) => vec![n.forward(x, training)?],
        // Layers of several inputs and nested models run in `run_node`, never here.
        ModelLayer::Merge(_)
        | ModelLayer::MaskOp(_)
        | ModelLayer::Attention(_)
        | ModelLayer::MultiHeadAttention(_)
        | ModelLayer::Model(_) => {
            return Err(graph_error(
                "a layer of several inputs",
                "its inputs from the graph",
            ))
        }
        ModelLayer::PRelu(p) => vec![p.forward(x)?],
    };
    Ok(Carried {
        outs,
        mask,
        gru_activity,
    })
}
