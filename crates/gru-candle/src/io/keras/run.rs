//! Running a loaded model: the chain of layers with Keras' mask propagation and
//! autocasting, in inference or training, with the losses a training loop adds.

use super::graph::Source;
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
                mask: if k == 0 { opts.mask.cloned() } else { None },
                computed: false,
            })
            .collect();
        let mut produced: Vec<Produced> = Vec::with_capacity(self.layers.len());
        let mut losses = Vec::new();
        for (i, (name, layer)) in self.layers.iter().enumerate() {
            let sources = self.graph.sources.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let taken: Vec<(&Tensor, Option<&Tensor>, bool)> = sources
                .iter()
                .map(|s| take(s, &input, &produced))
                .collect::<Result<_>>()?;
            let initial: Vec<Tensor> = self
                .graph
                .initial_states
                .get(i)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|s| take(s, &input, &produced).map(|t| t.0.clone()))
                .collect::<Result<_>>()?;
            // A `mask` argument (a recorded mask operation) replaces the carried mask.
            let explicit: Vec<Option<Tensor>> = self
                .graph
                .masks
                .get(i)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|m| match m {
                    Some(s) => take(s, &input, &produced).map(|t| Some(t.0.clone())),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?;
            let (out, activity) = match (layer, taken.as_slice()) {
                (ModelLayer::MaskOp(op), _) => {
                    let xs: Vec<Tensor> = taken.iter().map(|(x, _, _)| (*x).clone()).collect();
                    let out = Produced {
                        outs: vec![op.forward(&xs)?],
                        mask: None,
                        computed: false,
                    };
                    (out, None)
                }
                (ModelLayer::Attention(a), _) => {
                    let xs: Vec<Tensor> = taken.iter().map(|(x, _, _)| (*x).clone()).collect();
                    let masks: Vec<Option<Tensor>> = taken
                        .iter()
                        .enumerate()
                        .map(|(j, (_, m, _))| match explicit.get(j) {
                            Some(Some(e)) => Some(e.clone()),
                            _ => m.cloned(),
                        })
                        .collect();
                    let out = Produced {
                        outs: a.forward(&xs, &masks, opts.training)?,
                        mask: masks.first().cloned().flatten(),
                        computed: true,
                    };
                    (out, None)
                }
                (ModelLayer::Merge(op), _) => {
                    let xs: Vec<Tensor> = taken.iter().map(|(x, _, _)| (*x).clone()).collect();
                    let masks: Vec<Option<Tensor>> =
                        taken.iter().map(|(_, m, _)| m.cloned()).collect();
                    let out = Produced {
                        outs: vec![op.forward(&xs)?],
                        mask: op.mask(&masks, self.graph.mask_rule)?,
                        computed: taken.iter().any(|t| t.2),
                    };
                    (out, None)
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
                        mask: explicit
                            .first()
                            .cloned()
                            .flatten()
                            .or_else(|| mask.cloned()),
                        gru_activity: None,
                    };
                    let mut c = step(layer, &xc, prev, opts.training, &initial)?;
                    let out = Produced {
                        outs: c.outs,
                        mask: c.mask,
                        computed: *computed || layer.compute_dtype().is_some(),
                    };
                    (out, c.gru_activity.take())
                }
                _ => return Err(graph_error(name, "one input")),
            };
            losses.push(activity);
            if let Some((_, reg)) = self.activity.iter().find(|(n, _)| n == name) {
                losses.push(activity_loss(reg, &out.outs)?);
            }
            produced.push(out);
        }
        let outputs = match &self.graph.outputs {
            None => produced.pop().map(|p| p.outs).unwrap_or_default(),
            Some(outs) => outs
                .iter()
                .map(|&(layer, tensor)| {
                    let s = Source::Layer { layer, tensor };
                    take(&s, &input, &produced).map(|(t, _, _)| t.clone())
                })
                .collect::<Result<_>>()?,
        };
        Ok(ModelOutput {
            outputs,
            activity_loss: sum_losses(losses)?,
        })
    }

    /// The sum of every layer's weight regularization losses (the GRUs' kernel, recurrent
    /// and bias regularizers, and those of Dense, Conv1D, Embedding and the normalizations'
    /// weights), as a differentiable scalar for a training loop to add to its loss. Zero
    /// without regularizers.
    pub fn regularization_loss(&self) -> Result<Tensor> {
        let mut losses = Vec::new();
        let mut any_weight = None;
        for (_, layer) in &self.layers {
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
        for (_, layer) in &self.layers {
            for g in grus(layer) {
                g.reset_states();
            }
        }
    }

    /// Applies every layer's constraints in place (call after each optimizer step, as Keras
    /// does). The constrained weights must be `Var`s: a model from
    /// [`KerasModel::load_trainable`].
    pub fn apply_constraints(&self) -> Result<()> {
        for (_, layer) in &self.layers {
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
        _ => &[],
    }
}

/// What a layer produced: its outputs, the mask its first output carries, and whether a
/// computing layer made them (then the next computing layer autocasts them).
struct Produced {
    outs: Vec<Tensor>,
    mask: Option<Tensor>,
    computed: bool,
}

/// The tensor a source names, with its mask (outputs after the first carry none).
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
        Source::Layer { layer, tensor } => (
            produced
                .get(layer)
                .ok_or_else(|| graph_error("a layer", "layers in order"))?,
            tensor,
        ),
    };
    let t = p.outs.get(tensor).ok_or_else(|| {
        graph_error(
            "a layer",
            &format!("output {tensor} of {} outputs", p.outs.len()),
        )
    })?;
    let mask = if tensor == 0 { p.mask.as_ref() } else { None };
    Ok((t, mask, p.computed))
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
        // Layers of several inputs run in `call_inputs`, never here.
        ModelLayer::Merge(_) | ModelLayer::MaskOp(_) | ModelLayer::Attention(_) => {
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
