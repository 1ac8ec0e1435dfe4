//! Running a loaded model: the chain of layers with Keras' mask propagation and
//! autocasting, in inference or training, with the losses a training loop adds.

use super::graph::Source;
use super::run_node::{graph_error, MaskSlots, Produced, Run, Taken};
use super::train::{activity_loss, zero_loss, ModelCall, ModelOutput};
use super::{KerasModel, ModelLayer};
use crate::call::sum_losses;
use crate::error::Result;
use candle_core::{DType, Tensor};

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
    pub(super) fn run_graph(
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
                ModelLayer::TimeDistributed(inner) => match &**inner {
                    ModelLayer::Model(m) => out.extend(m.all_layers()),
                    inner => out.push(inner),
                },
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
        ModelLayer::StackedGru(s) => s.grus(),
        _ => Vec::new(),
    }
}

/// The weight rules of a layer around the GRUs.
fn rules(layer: &ModelLayer) -> &[super::train::WeightRule] {
    match layer {
        ModelLayer::Dense(d) => &d.rules,
        ModelLayer::Conv1D(c) => &c.rules,
        ModelLayer::Conv2D(c) => &c.rules,
        ModelLayer::Embedding(e) => &e.rules,
        ModelLayer::LayerNorm(n) => &n.rules,
        ModelLayer::BatchNorm(n) => &n.rules,
        ModelLayer::PRelu(p) => &p.rules,
        ModelLayer::MultiHeadAttention(a) => &a.rules,
        _ => &[],
    }
}
