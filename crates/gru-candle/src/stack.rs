//! Stacked GRUs: each layer reads the previous layer's sequence (Keras' stacked RNNs,
//! PyTorch's `num_layers`), unidirectional or bidirectional.

use crate::bidirectional::Bidirectional;
use crate::call::CallOptions;
use crate::dtype::autocast;
use crate::error::{Error, Result};
use crate::layer::Gru;
use candle_core::{Module, Tensor};
use gru_core::GruError;

/// One layer of a stack.
#[derive(Debug)]
pub enum StackLayer {
    /// A single-direction GRU.
    Gru(Box<Gru>),
    /// A bidirectional GRU.
    Bidirectional(Box<Bidirectional>),
}

impl StackLayer {
    fn input_dim(&self) -> usize {
        match self {
            StackLayer::Gru(g) => g.input_dim(),
            StackLayer::Bidirectional(b) => b.forward_layer().input_dim(),
        }
    }

    fn output_dim(&self) -> usize {
        match self {
            StackLayer::Gru(g) => g.config().units,
            StackLayer::Bidirectional(b) => b.output_dim(),
        }
    }

    fn return_sequences(&self) -> bool {
        match self {
            StackLayer::Gru(g) => g.config().return_sequences,
            StackLayer::Bidirectional(b) => b.forward_layer().config().return_sequences,
        }
    }

    /// Initial states this layer takes: 1, or 2 when bidirectional.
    fn directions(&self) -> usize {
        match self {
            StackLayer::Gru(_) => 1,
            StackLayer::Bidirectional(_) => 2,
        }
    }
}

/// What a stack returns.
#[derive(Debug, Clone)]
pub struct StackOutput {
    /// The last layer's output.
    pub output: Tensor,
    /// The final state of every direction of every layer that has `return_state`, in order
    /// (layer 0 forward, layer 0 backward, layer 1 ...): PyTorch's `h_n` when stacked.
    pub states: Vec<Tensor>,
    /// Every layer's activity regularization loss, summed, when any has an
    /// `activity_regularizer`.
    pub activity_loss: Option<Tensor>,
}

/// A stack of GRU layers.
#[derive(Debug)]
pub struct GruStack {
    layers: Vec<StackLayer>,
}

impl GruStack {
    /// Chains the layers: each layer's input size must be the previous layer's output size,
    /// and every layer but the last must return sequences.
    pub fn new(layers: Vec<StackLayer>) -> Result<GruStack> {
        if layers.is_empty() {
            return Err(Error::Gru(GruError::InvalidConfig {
                key: "layers".into(),
                expected: "at least one layer".into(),
                got: "none".into(),
            }));
        }
        for (i, pair) in layers.windows(2).enumerate() {
            if !pair[0].return_sequences() {
                return Err(Error::Gru(GruError::InvalidConfig {
                    key: format!("layers[{i}].return_sequences"),
                    expected: "true (a following layer reads its sequence)".into(),
                    got: "false".into(),
                }));
            }
            if pair[1].input_dim() != pair[0].output_dim() {
                return Err(Error::Gru(GruError::Shape {
                    what: format!("layers[{}] input", i + 1),
                    expected: format!("{} features (layers[{i}]'s output)", pair[0].output_dim()),
                    got: format!("{} features", pair[1].input_dim()),
                }));
            }
        }
        Ok(GruStack { layers })
    }

    /// The layers.
    pub fn layers(&self) -> &[StackLayer] {
        &self.layers
    }

    /// Runs the stack. `initial_states`, when given, holds one (batch, units) tensor per
    /// direction per layer, in order. The mask reaches each layer (Keras passes it on through
    /// layers that return sequences). The input of each layer after the first is cast to its
    /// compute dtype, as Keras autocasts inside a model (a `mixed_float16` layer after a
    /// `float32` one); the stack's own input must suit the first layer.
    pub fn call(
        &self,
        inputs: &Tensor,
        mask: Option<&Tensor>,
        initial_states: Option<&[Tensor]>,
        training: bool,
    ) -> Result<StackOutput> {
        let needed: usize = self.layers.iter().map(StackLayer::directions).sum();
        if let Some(h) = initial_states {
            if h.len() != needed {
                return Err(Error::Gru(GruError::Shape {
                    what: "initial_states".into(),
                    expected: format!("{needed} tensors (one per direction per layer)"),
                    got: format!("{} tensors", h.len()),
                }));
            }
        }
        let mut x = inputs.clone();
        let mut states = Vec::new();
        let mut losses = Vec::new();
        let mut k = 0;
        for layer in &self.layers {
            let h0 = |i: usize| initial_states.map(|h| &h[k + i]);
            match layer {
                StackLayer::Gru(g) => {
                    let out = g.call(
                        &between_layers(&x, k, g.compute_dtype())?,
                        CallOptions {
                            mask,
                            initial_state: h0(0),
                            training,
                        },
                    )?;
                    x = out.output;
                    states.extend(out.state);
                    losses.push(out.activity_loss);
                }
                StackLayer::Bidirectional(b) => {
                    let init = h0(0).zip(h0(1));
                    let x_in = between_layers(&x, k, b.forward_layer().compute_dtype())?;
                    let out = b.call(&x_in, mask, init, training)?;
                    losses.push(out.activity_loss);
                    x = match out.outputs.as_slice() {
                        [one] => one.clone(),
                        many => Tensor::cat(many, candle_core::D::Minus1)?,
                    };
                    if let Some((f, bw)) = out.states {
                        states.push(f);
                        states.push(bw);
                    }
                }
            }
            k += layer.directions();
        }
        Ok(StackOutput {
            output: x,
            states,
            activity_loss: crate::call::sum_losses(losses)?,
        })
    }
}

/// The input of the layer whose first initial state is number `k`: the stack's input as it
/// came (k = 0), later ones autocast to the layer's compute dtype.
fn between_layers(x: &Tensor, k: usize, compute: candle_core::DType) -> Result<Tensor> {
    match k {
        0 => Ok(x.clone()),
        _ => autocast(x, compute),
    }
}

impl Module for GruStack {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.call(xs, None, None, false)?.output)
    }
}
