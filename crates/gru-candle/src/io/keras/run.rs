//! Running a loaded model: the chain of layers with Keras' mask propagation and
//! autocasting, in inference or training, with the losses a training loop adds.

use super::graph::{Node, Source};
use super::merge::MaskRule;
use super::train::{activity_loss, zero_loss, ModelCall, ModelOutput};
use super::{KerasModel, LayerActivation, ModelLayer};
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
        let mut slots = MaskSlots::default();
        let input: Vec<Produced> = inputs
            .iter()
            .enumerate()
            .map(|(k, x)| {
                let mask = if k == 0 { opts.mask.cloned() } else { None };
                Produced::new(vec![x.clone()], mask, false, &mut slots)
            })
            .collect();
        let (out, losses) = self.run_graph(&input, &mut slots, opts.training)?;
        Ok(ModelOutput {
            outputs: out.outs,
            activity_loss: sum_losses(losses)?,
        })
    }

    /// Runs the calls of the graph in Keras' order on `input` (one per model input);
    /// returns the model's outputs and the activity losses.
    fn run_graph(
        &self,
        input: &[Produced],
        slots: &mut MaskSlots,
        training: bool,
    ) -> Result<(Produced, Vec<Option<Tensor>>)> {
        let mut produced: Vec<Option<Produced>> = Vec::new();
        produced.resize_with(self.graph.nodes.len(), || None);
        let mut losses = Vec::new();
        for &n in &self.graph.order {
            let node = self
                .graph
                .nodes
                .get(n)
                .ok_or_else(|| graph_error("a call", "a call of the graph"))?;
            let (name, layer) = self
                .layers
                .get(node.layer)
                .ok_or_else(|| graph_error("a call", "a layer of the model"))?;
            let rule = self.graph.mask_rule;
            let run = Run {
                input,
                produced: &produced,
                training,
            };
            let out = run.node(node, layer, rule, slots, &mut losses)?;
            // Keras adds a layer's activity loss at every call.
            if let Some((_, reg)) = self.activity.iter().find(|(n, _)| n == name) {
                losses.push(activity_loss(reg, &out.outs)?);
            }
            produced[n] = Some(out);
        }
        let run = Run {
            input,
            produced: &produced,
            training,
        };
        let ends: Vec<(usize, usize)> = match &self.graph.outputs {
            Some(outs) => outs.clone(),
            None => {
                let last = self.graph.nodes.len().saturating_sub(1);
                let n = produced
                    .get(last)
                    .and_then(Option::as_ref)
                    .map_or(0, |p| p.outs.len());
                (0..n).map(|t| (last, t)).collect()
            }
        };
        let taken: Vec<Taken> = ends
            .iter()
            .map(|&(node, tensor)| run.take(&Source::Node { node, tensor }, slots))
            .collect::<Result<_>>()?;
        let outputs = Produced {
            outs: taken.iter().map(|t| t.x.clone()).collect(),
            slots: taken.iter().map(|t| t.slot).collect(),
            computed: taken.iter().any(|t| t.computed),
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

/// The masks Keras keeps on tensor objects, a slot per object: a layer that hands its
/// input object on (an input layer, Dropout and noise layers outside training,
/// ActivityRegularization, a linear Activation) shares its input's slot, and
/// `MultiHeadAttention` clears the slots of the tensors it takes, for every call after it.
#[derive(Default)]
struct MaskSlots(Vec<Option<Tensor>>);

impl MaskSlots {
    fn add(&mut self, mask: Option<Tensor>) -> usize {
        self.0.push(mask);
        self.0.len() - 1
    }

    fn get(&self, slot: usize) -> Option<Tensor> {
        self.0.get(slot).cloned().flatten()
    }

    fn set(&mut self, slot: usize, mask: Option<Tensor>) {
        if let Some(m) = self.0.get_mut(slot) {
            *m = mask;
        }
    }
}

/// What a call produced: its outputs, their mask slots, and whether a computing layer
/// made them (then the next computing layer autocasts them).
struct Produced {
    outs: Vec<Tensor>,
    slots: Vec<usize>,
    computed: bool,
}

impl Produced {
    /// New tensors: the first carries `mask`, the others none.
    fn new(
        outs: Vec<Tensor>,
        mask: Option<Tensor>,
        computed: bool,
        slots: &mut MaskSlots,
    ) -> Produced {
        let mut ids = vec![slots.add(mask)];
        ids.extend((1..outs.len()).map(|_| slots.add(None)));
        Produced {
            outs,
            slots: ids,
            computed,
        }
    }
}

/// A tensor a call takes, with the mask it carries now and its slot.
struct Taken {
    x: Tensor,
    mask: Option<Tensor>,
    computed: bool,
    slot: usize,
}

/// One run of a graph: the model inputs and the calls' outputs so far.
struct Run<'a> {
    input: &'a [Produced],
    produced: &'a [Option<Produced>],
    training: bool,
}

impl Run<'_> {
    /// The tensor a source names.
    fn take(&self, s: &Source, slots: &MaskSlots) -> Result<Taken> {
        let (p, tensor) = match *s {
            Source::ModelInput(k) => (
                self.input
                    .get(k)
                    .ok_or_else(|| graph_error("a model input", "as many inputs as the model"))?,
                0,
            ),
            Source::Node { node, tensor } => (
                self.produced
                    .get(node)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| graph_error("a call", "calls in order"))?,
                tensor,
            ),
        };
        let x = p.outs.get(tensor).ok_or_else(|| {
            graph_error(
                "a layer",
                &format!("output {tensor} of {} outputs", p.outs.len()),
            )
        })?;
        let slot = p.slots.get(tensor).copied().unwrap_or(usize::MAX);
        Ok(Taken {
            x: x.clone(),
            mask: slots.get(slot),
            computed: p.computed,
            slot,
        })
    }

    /// One call of a layer: its outputs from the tensors its node names; a GRU's,
    /// attention's or nested model's activity losses go to `losses`.
    fn node(
        &self,
        node: &Node,
        layer: &ModelLayer,
        rule: MaskRule,
        slots: &mut MaskSlots,
        losses: &mut Vec<Option<Tensor>>,
    ) -> Result<Produced> {
        let take_all = |sources: &[Source], slots: &MaskSlots| -> Result<Vec<Taken>> {
            sources.iter().map(|s| self.take(s, slots)).collect()
        };
        let taken = take_all(&node.call.sources, slots)?;
        let initial: Vec<Tensor> = take_all(&node.call.initial_state, slots)?
            .into_iter()
            .map(|t| t.x)
            .collect();
        // A `mask` argument (a recorded mask operation) replaces the carried mask.
        let explicit: Vec<Option<Tensor>> = node
            .call
            .masks
            .iter()
            .map(|m| {
                m.as_ref()
                    .map(|s| self.take(s, slots).map(|t| t.x))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let mask_of = |j: usize, carried: &Option<Tensor>| match explicit.get(j) {
            Some(Some(e)) => Some(e.clone()),
            _ => carried.clone(),
        };
        let masks: Vec<Option<Tensor>> = taken
            .iter()
            .enumerate()
            .map(|(j, t)| mask_of(j, &t.mask))
            .collect();
        let xs: Vec<Tensor> = taken.iter().map(|t| t.x.clone()).collect();
        let training = self.training;
        Ok(match (layer, taken.as_slice()) {
            (ModelLayer::MaskOp(op), _) => {
                Produced::new(vec![op.forward(&xs)?], None, false, slots)
            }
            (ModelLayer::Attention(a), _) => {
                let outs = a.forward(&xs, &masks, training)?;
                Produced::new(outs, masks.first().cloned().flatten(), true, slots)
            }
            (ModelLayer::MultiHeadAttention(a), _) => {
                let attention_mask = match &node.call.attention_mask {
                    Some(s) => Some(self.take(s, slots)?.x),
                    None => None,
                };
                let (outs, activity) = a.forward(&xs, &masks, attention_mask.as_ref(), training)?;
                losses.push(activity);
                // Keras clears the masks of the tensors it takes (those it did not cast)
                // and gives its output the query's.
                for t in taken.iter().filter(|t| t.x.dtype() == a.compute_dtype) {
                    slots.set(t.slot, None);
                }
                Produced::new(outs, masks.first().cloned().flatten(), true, slots)
            }
            (ModelLayer::Merge(op), _) => {
                let carried: Vec<Option<Tensor>> = taken.iter().map(|t| t.mask.clone()).collect();
                let mask = op.mask(&carried, rule)?;
                let computed = taken.iter().any(|t| t.computed);
                Produced::new(vec![op.forward(&xs)?], mask, computed, slots)
            }
            (ModelLayer::Model(m), _) => {
                // Keras sets a given mask on the input tensor itself.
                for (j, t) in taken.iter().enumerate() {
                    if let Some(Some(e)) = explicit.get(j) {
                        slots.set(t.slot, Some(e.clone()));
                    }
                }
                let inner: Vec<Produced> = taken
                    .iter()
                    .map(|t| Produced {
                        outs: vec![t.x.clone()],
                        slots: vec![t.slot],
                        computed: t.computed,
                    })
                    .collect();
                let (out, inner_losses) = m.run_graph(&inner, slots, training)?;
                losses.extend(inner_losses);
                out
            }
            (_, [t]) if hands_input_on(layer, training) => {
                if let (None, Some(e)) = (&t.mask, masks.first().cloned().flatten()) {
                    slots.set(t.slot, Some(e));
                }
                Produced {
                    outs: vec![t.x.clone()],
                    slots: vec![t.slot],
                    computed: t.computed,
                }
            }
            (_, [t]) => {
                // The output of a computing layer is cast to the next one's dtype.
                let takes_ids = matches!(layer, ModelLayer::Embedding(_));
                let xc = match (t.computed && !takes_ids, layer.compute_dtype()) {
                    (true, Some(dtype)) => autocast(&t.x, dtype)?,
                    _ => t.x.clone(),
                };
                let prev = Carried {
                    outs: vec![t.x.clone()],
                    mask: masks.first().cloned().flatten(),
                    gru_activity: None,
                };
                let c = step(layer, &xc, prev, training, &initial)?;
                losses.push(c.gru_activity);
                let computed = t.computed || layer.compute_dtype().is_some();
                Produced::new(c.outs, c.mask, computed, slots)
            }
            _ => return Err(graph_error("a layer of one input", "one input")),
        })
    }
}

/// Whether Keras' layer returns its input tensor object itself (so the output shares the
/// input's mask): an input layer, Dropout and noise layers outside training (or at rate
/// 0), ActivityRegularization and a linear Activation.
fn hands_input_on(layer: &ModelLayer, training: bool) -> bool {
    match layer {
        ModelLayer::Input => true,
        ModelLayer::Dropout(d) => !training || d.rate == 0.0,
        ModelLayer::Noise(_) => !training,
        ModelLayer::Activation(LayerActivation::Elementwise(gru_core::Activation::Linear)) => true,
        _ => false,
    }
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
        ModelLayer::Normalization(n) => vec![n.forward(x)?],
        ModelLayer::Rescaling(r) => vec![r.forward(x)?],
    };
    Ok(Carried {
        outs,
        mask,
        gru_activity,
    })
}
