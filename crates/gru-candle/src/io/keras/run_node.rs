//! One call of a layer in a running graph: the tensors it takes, with the masks Keras keeps
//! on tensor objects (a slot per object, shared by a layer that returns its input object,
//! cleared by `MultiHeadAttention`), and what it produces.

use super::graph::{Node, Source};
use super::merge::MaskRule;
use super::{KerasModel, LayerActivation, ModelLayer, MultiHeadAttention};
use crate::call::CallOptions;
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

/// The masks Keras keeps on tensor objects, a slot per object: a layer that hands its
/// input object on (an input layer, Dropout and noise layers outside training,
/// ActivityRegularization, a linear Activation) shares its input's slot, and
/// `MultiHeadAttention` clears the slots of the tensors it takes, for every call after it.
#[derive(Default)]
pub(super) struct MaskSlots(Vec<Option<Tensor>>);

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
pub(super) struct Produced {
    pub(super) outs: Vec<Tensor>,
    pub(super) slots: Vec<usize>,
    pub(super) computed: bool,
}

impl Produced {
    /// New tensors: the first carries `mask`, the others none.
    pub(super) fn new(
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
pub(super) struct Taken {
    pub(super) x: Tensor,
    pub(super) mask: Option<Tensor>,
    pub(super) computed: bool,
    pub(super) slot: usize,
}

/// One run of a graph: the model inputs and the calls' outputs so far.
pub(super) struct Run<'a> {
    pub(super) input: &'a [Produced],
    pub(super) produced: &'a [Option<Produced>],
    pub(super) training: bool,
}

impl Run<'_> {
    /// The tensor a source names.
    pub(super) fn take(&self, s: &Source, slots: &MaskSlots) -> Result<Taken> {
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

    /// What a call takes: its tensors, their masks (a `mask` argument, the output of a
    /// recorded mask operation, replaces the carried one) and its initial state.
    fn args(&self, node: &Node, slots: &MaskSlots) -> Result<Args> {
        let take_all = |sources: &[Source]| -> Result<Vec<Taken>> {
            sources.iter().map(|s| self.take(s, slots)).collect()
        };
        let taken = take_all(&node.call.sources)?;
        let initial = take_all(&node.call.initial_state)?
            .into_iter()
            .map(|t| t.x)
            .collect();
        let explicit: Vec<Option<Tensor>> = node
            .call
            .masks
            .iter()
            .map(|m| {
                m.as_ref()
                    .map(|s| self.take(s, slots).and_then(|t| as_mask(&t.x)))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let masks = taken
            .iter()
            .enumerate()
            .map(|(j, t)| match explicit.get(j) {
                Some(Some(e)) => Some(e.clone()),
                _ => t.mask.clone(),
            })
            .collect();
        Ok(Args {
            xs: taken.iter().map(|t| t.x.clone()).collect(),
            taken,
            masks,
            explicit,
            initial,
        })
    }

    /// One call of a layer: its outputs from the tensors its node names; a GRU's,
    /// attention's or nested model's activity losses go to `losses`.
    pub(super) fn node(
        &self,
        node: &Node,
        layer: &ModelLayer,
        rule: MaskRule,
        slots: &mut MaskSlots,
        losses: &mut Vec<Option<Tensor>>,
    ) -> Result<Produced> {
        let args = self.args(node, slots)?;
        let (xs, first_mask) = (&args.xs, args.masks.first().cloned().flatten());
        Ok(match (layer, args.taken.as_slice()) {
            (ModelLayer::MaskOp(op), _) => Produced::new(vec![op.forward(xs)?], None, false, slots),
            (ModelLayer::Attention(a), _) => {
                let outs = a.forward(xs, &args.masks, self.training)?;
                Produced::new(outs, first_mask, true, slots)
            }
            (ModelLayer::MultiHeadAttention(a), _) => {
                self.multi_head(a, node, &args, slots, losses)?
            }
            (ModelLayer::Merge(op), _) => {
                let carried: Vec<Option<Tensor>> =
                    args.taken.iter().map(|t| t.mask.clone()).collect();
                let mask = op.mask(&carried, rule)?;
                let computed = args.taken.iter().any(|t| t.computed);
                let out = op.forward_masked(xs, &carried, rule)?;
                Produced::new(vec![out], mask, computed, slots)
            }
            (ModelLayer::Model(m), _) => self.nested(m, &args, slots, losses)?,
            (ModelLayer::TimeDistributed(inner), [t]) => {
                self.time_distributed(inner, t, slots, losses)?
            }
            (_, [t]) if hands_input_on(layer, self.training) => {
                // Keras sets a given mask on the object if it carries none.
                if let (None, Some(e)) = (&t.mask, first_mask) {
                    slots.set(t.slot, Some(e));
                }
                Produced {
                    outs: vec![t.x.clone()],
                    slots: vec![t.slot],
                    computed: t.computed,
                }
            }
            (_, [t]) => self.single(layer, t, &args, slots, losses)?,
            _ => return Err(graph_error("a layer of one input", "one input")),
        })
    }

    /// A `MultiHeadAttention` call: Keras clears the masks of the tensors it takes (those
    /// it did not cast) and gives its output the query's.
    fn multi_head(
        &self,
        a: &MultiHeadAttention,
        node: &Node,
        args: &Args,
        slots: &mut MaskSlots,
        losses: &mut Vec<Option<Tensor>>,
    ) -> Result<Produced> {
        let attention_mask = match &node.call.attention_mask {
            Some(s) => Some(self.take(s, slots)?.x),
            None => None,
        };
        let (outs, activity) = a.forward(
            &args.xs,
            &args.masks,
            attention_mask.as_ref(),
            self.training,
        )?;
        losses.push(activity);
        for t in args.taken.iter().filter(|t| t.x.dtype() == a.compute_dtype) {
            slots.set(t.slot, None);
        }
        Ok(Produced::new(
            outs,
            args.masks.first().cloned().flatten(),
            true,
            slots,
        ))
    }

    /// A call of a nested model: its inputs are the very tensors taken (Keras sets a given
    /// mask on them), its outputs those its graph leaves.
    fn nested(
        &self,
        m: &KerasModel,
        args: &Args,
        slots: &mut MaskSlots,
        losses: &mut Vec<Option<Tensor>>,
    ) -> Result<Produced> {
        for (t, e) in args.taken.iter().zip(&args.explicit) {
            if let Some(e) = e {
                slots.set(t.slot, Some(e.clone()));
            }
        }
        let inner: Vec<Produced> = args
            .taken
            .iter()
            .map(|t| Produced {
                outs: vec![t.x.clone()],
                slots: vec![t.slot],
                computed: t.computed,
            })
            .collect();
        let (out, inner_losses) = m.run_graph(&inner, slots, self.training)?;
        losses.extend(inner_losses);
        Ok(out)
    }

    /// A `TimeDistributed` call: the wrapped layer on all (batch x steps) rows at once, its
    /// outputs with the steps axis back; the output carries the input's mask.
    fn time_distributed(
        &self,
        inner: &ModelLayer,
        t: &Taken,
        slots: &mut MaskSlots,
        losses: &mut Vec<Option<Tensor>>,
    ) -> Result<Produced> {
        let dims = t.x.dims().to_vec();
        let (b, s) = match dims.as_slice() {
            [b, s, _, ..] => (*b, *s),
            _ => return Err(graph_error("TimeDistributed", "an input of rank 3 or more")),
        };
        let rows = t.x.reshape([vec![b * s], dims[2..].to_vec()].concat())?;
        let input = [Produced::new(vec![rows], None, t.computed, slots)];
        let outs = match inner {
            ModelLayer::Model(m) => {
                let (out, inner_losses) = m.run_graph(&input, slots, self.training)?;
                losses.extend(inner_losses);
                out.outs
            }
            layer => {
                let x = &input[0].outs[0];
                let xc = match (t.computed, layer.compute_dtype()) {
                    (true, Some(dtype)) => autocast(x, dtype)?,
                    _ => x.clone(),
                };
                let prev = Carried {
                    outs: vec![x.clone()],
                    mask: None,
                    gru_activity: None,
                };
                let c = step(layer, &xc, prev, self.training, &[])?;
                losses.push(c.gru_activity);
                c.outs
            }
        };
        let outs = outs
            .iter()
            .map(|o| {
                let rest = o.dims()[1..].to_vec();
                Ok(o.reshape([vec![b, s], rest].concat())?)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        Ok(Produced::new(outs, t.mask.clone(), true, slots))
    }

    /// A call of a layer of one input that makes new tensors; the output of a computing
    /// layer is cast to the next one's dtype.
    fn single(
        &self,
        layer: &ModelLayer,
        t: &Taken,
        args: &Args,
        slots: &mut MaskSlots,
        losses: &mut Vec<Option<Tensor>>,
    ) -> Result<Produced> {
        let takes_ids = matches!(layer, ModelLayer::Embedding(_));
        let xc = match (t.computed && !takes_ids, layer.compute_dtype()) {
            (true, Some(dtype)) => autocast(&t.x, dtype)?,
            _ => t.x.clone(),
        };
        let prev = Carried {
            outs: vec![t.x.clone()],
            mask: args.masks.first().cloned().flatten(),
            gru_activity: None,
        };
        let c = step(layer, &xc, prev, self.training, &args.initial)?;
        losses.push(c.gru_activity);
        let computed = t.computed || layer.compute_dtype().is_some();
        Ok(Produced::new(c.outs, c.mask, computed, slots))
    }
}

/// The arguments of one call.
struct Args {
    taken: Vec<Taken>,
    xs: Vec<Tensor>,
    /// Per tensor: its `mask` argument, else the mask it carries.
    masks: Vec<Option<Tensor>>,
    /// Per tensor: its `mask` argument.
    explicit: Vec<Option<Tensor>>,
    initial: Vec<Tensor>,
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

pub(super) fn graph_error(what: &str, expected: &str) -> crate::Error {
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
        ModelLayer::StackedGru(s) => {
            let (outs, activity) = s.forward(x, mask.as_ref(), initial, training)?;
            if !s.last().is_some_and(|c| c.return_sequences) {
                mask = None;
            }
            gru_activity = activity;
            outs
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
        ModelLayer::Conv2D(c) => {
            mask = None;
            vec![c.forward(x)?]
        }
        ModelLayer::Pooling2D(p) => {
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
        | ModelLayer::TimeDistributed(_)
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

/// A `mask` argument as the u8 mask (1 = keep) layers take: the output of a recorded mask
/// operation as it is, a boolean model input given as u8, another integer or a float
/// dtype as its non-zero entries.
fn as_mask(x: &Tensor) -> Result<Tensor> {
    Ok(match x.dtype() {
        DType::U8 => x.ne(0u8)?,
        _ => x.ne(0.0)?,
    })
}
