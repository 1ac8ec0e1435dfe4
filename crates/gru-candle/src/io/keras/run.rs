//! Running a loaded model: the chain of layers with Keras' mask propagation and
//! autocasting, in inference or training, with the losses a training loop adds.

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
        let mut carried = Carried {
            outs: vec![inputs.clone()],
            mask: opts.mask.cloned(),
            gru_activity: None,
        };
        let mut losses = Vec::new();
        // Whether the outputs came from a computing layer (then the next one autocasts them).
        let mut computed = false;
        for (name, layer) in &self.layers {
            let takes_ids = matches!(layer, ModelLayer::Embedding(_));
            let x = match (computed && !takes_ids, layer.compute_dtype()) {
                (true, Some(dtype)) => autocast(&carried.outs[0], dtype)?,
                _ => carried.outs[0].clone(),
            };
            computed |= layer.compute_dtype().is_some();
            carried = step(layer, &x, carried, opts.training)?;
            losses.push(carried.gru_activity.take());
            if let Some((_, reg)) = self.activity.iter().find(|(n, _)| n == name) {
                losses.push(activity_loss(reg, &carried.outs)?);
            }
        }
        Ok(ModelOutput {
            outputs: carried.outs,
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
        _ => &[],
    }
}

/// One layer: its outputs from `x` (its input, autocast), and the mask it passes on.
fn step(layer: &ModelLayer, x: &Tensor, prev: Carried, training: bool) -> Result<Carried> {
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
                initial_state: None,
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
            let out = b.call(x, mask.as_ref(), None, training)?;
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
    };
    Ok(Carried {
        outs,
        mask,
        gru_activity,
    })
}
