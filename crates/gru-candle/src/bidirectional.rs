//! Keras' `Bidirectional(GRU)`: a forward GRU and a `go_backwards` copy, the backward
//! sequence flipped back to input order, merged by `merge_mode`.

use crate::call::CallOptions;
use crate::error::{Error, Result};
use crate::layer::Gru;
use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;
use gru_core::{GruConfig, GruError};
use serde_json::Value;

/// How the two directions are combined (Keras' `merge_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeMode {
    /// Concatenate on the last axis, forward first (Keras' default).
    #[default]
    Concat,
    /// Elementwise sum.
    Sum,
    /// Elementwise product.
    Mul,
    /// Elementwise mean.
    Ave,
    /// No merge: both outputs are returned.
    None,
}

impl MergeMode {
    /// Reads Keras' `merge_mode` value (`"concat"`, `"sum"`, `"mul"`, `"ave"`, `null`).
    pub fn from_keras_value(v: &Value) -> Result<MergeMode> {
        Ok(match v {
            Value::Null => MergeMode::None,
            Value::String(s) => match s.as_str() {
                "concat" => MergeMode::Concat,
                "sum" => MergeMode::Sum,
                "mul" => MergeMode::Mul,
                "ave" => MergeMode::Ave,
                _ => return Err(bad_merge(v)),
            },
            _ => return Err(bad_merge(v)),
        })
    }

    /// The value Keras writes.
    pub fn to_keras_value(self) -> Value {
        match self {
            MergeMode::Concat => "concat".into(),
            MergeMode::Sum => "sum".into(),
            MergeMode::Mul => "mul".into(),
            MergeMode::Ave => "ave".into(),
            MergeMode::None => Value::Null,
        }
    }
}

fn bad_merge(v: &Value) -> Error {
    Error::Gru(GruError::InvalidConfig {
        key: "merge_mode".into(),
        expected: "one of \"concat\", \"sum\", \"mul\", \"ave\", null".into(),
        got: v.to_string(),
    })
}

/// What a bidirectional call returns.
#[derive(Debug, Clone)]
pub struct BidirectionalOutput {
    /// The merged output, or `[forward, backward]` with `MergeMode::None`.
    pub outputs: Vec<Tensor>,
    /// `(forward state, backward state)` with `return_state`.
    pub states: Option<(Tensor, Tensor)>,
    /// The two directions' activity regularization losses, summed (each direction's as
    /// [`crate::GruOutput::activity_loss`]), when they have an `activity_regularizer`.
    pub activity_loss: Option<Tensor>,
}

/// A bidirectional GRU.
#[derive(Debug)]
pub struct Bidirectional {
    forward: Gru,
    backward: Gru,
    merge_mode: MergeMode,
}

/// The config Keras gives one direction: `zero_output_for_mask = return_sequences`.
fn direction(mut c: GruConfig, go_backwards: bool, name: String) -> GruConfig {
    c.go_backwards = go_backwards;
    c.zero_output_for_mask = c.return_sequences;
    c.name = name;
    c
}

impl Bidirectional {
    /// Builds both directions from one GRU config, as `Bidirectional(GRU(...))` does: the
    /// backward copy has `go_backwards` flipped. Weights live under `forward_layer` and
    /// `backward_layer` in `vb`.
    pub fn new(
        config: GruConfig,
        input_dim: usize,
        merge_mode: MergeMode,
        vb: VarBuilder,
    ) -> Result<Self> {
        let base = config.name.trim_start_matches("forward_").to_string();
        let fw = direction(
            config.clone(),
            config.go_backwards,
            format!("forward_{base}"),
        );
        let bw = direction(
            config.clone(),
            !config.go_backwards,
            format!("backward_{base}"),
        );
        let forward = Gru::new(fw, input_dim, vb.pp("forward_layer"))?;
        let backward = Gru::new(bw, input_dim, vb.pp("backward_layer"))?;
        Self::from_layers(forward, backward, merge_mode)
    }

    /// Pairs two built layers. They must agree on units, input size, return_sequences,
    /// return_state and compute dtype, and run in opposite directions. Keras' rule
    /// `zero_output_for_mask = return_sequences` is applied to both.
    pub fn from_layers(forward: Gru, backward: Gru, merge_mode: MergeMode) -> Result<Self> {
        let (f, b) = (forward.config(), backward.config());
        let mismatch = |what: &str, fv: String, bv: String| {
            Error::Gru(GruError::InvalidConfig {
                key: format!("backward_layer.{what}"),
                expected: format!("{what} = {fv} (the forward layer's)"),
                got: bv,
            })
        };
        if f.units != b.units {
            return Err(mismatch("units", f.units.to_string(), b.units.to_string()));
        }
        if forward.input_dim() != backward.input_dim() {
            return Err(mismatch(
                "input_dim",
                forward.input_dim().to_string(),
                backward.input_dim().to_string(),
            ));
        }
        for (what, fv, bv) in [
            ("return_sequences", f.return_sequences, b.return_sequences),
            ("return_state", f.return_state, b.return_state),
        ] {
            if fv != bv {
                return Err(mismatch(what, fv.to_string(), bv.to_string()));
            }
        }
        if forward.compute_dtype() != backward.compute_dtype() {
            return Err(mismatch(
                "compute dtype",
                format!("{:?}", forward.compute_dtype()),
                format!("{:?}", backward.compute_dtype()),
            ));
        }
        if f.go_backwards == b.go_backwards {
            return Err(mismatch(
                "go_backwards",
                (!f.go_backwards).to_string(),
                b.go_backwards.to_string(),
            ));
        }
        let rs = f.return_sequences;
        let forward = forward.with_zero_output_for_mask(rs);
        let backward = backward.with_zero_output_for_mask(rs);
        Ok(Bidirectional {
            forward,
            backward,
            merge_mode,
        })
    }

    /// The forward layer.
    pub fn forward_layer(&self) -> &Gru {
        &self.forward
    }

    /// The backward layer.
    pub fn backward_layer(&self) -> &Gru {
        &self.backward
    }

    /// The merge mode.
    pub fn merge_mode(&self) -> MergeMode {
        self.merge_mode
    }

    /// Output features: `2 * units` with concat, `units` otherwise.
    pub fn output_dim(&self) -> usize {
        let u = self.forward.config().units;
        if self.merge_mode == MergeMode::Concat {
            2 * u
        } else {
            u
        }
    }

    /// Runs both directions. `initial_state` is `(forward h0, backward h0)`.
    pub fn call(
        &self,
        inputs: &Tensor,
        mask: Option<&Tensor>,
        initial_state: Option<(&Tensor, &Tensor)>,
        training: bool,
    ) -> Result<BidirectionalOutput> {
        let fw_opts = CallOptions {
            mask,
            initial_state: initial_state.map(|s| s.0),
            training,
        };
        let bw_opts = CallOptions {
            initial_state: initial_state.map(|s| s.1),
            ..fw_opts
        };
        let fw = self.forward.call(inputs, fw_opts)?;
        let bw = self.backward.call(inputs, bw_opts)?;
        let y = fw.output;
        let y_rev = if self.forward.config().return_sequences {
            bw.output.flip(&[1])?
        } else {
            bw.output
        };
        let outputs = match self.merge_mode {
            MergeMode::Concat => vec![Tensor::cat(&[&y, &y_rev], D::Minus1)?],
            MergeMode::Sum => vec![(y + y_rev)?],
            MergeMode::Mul => vec![(y * y_rev)?],
            MergeMode::Ave => vec![((y + y_rev)? * 0.5)?],
            MergeMode::None => vec![y, y_rev],
        };
        let states = match (fw.state, bw.state) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        let activity_loss = crate::call::sum_losses([fw.activity_loss, bw.activity_loss])?;
        Ok(BidirectionalOutput {
            outputs,
            states,
            activity_loss,
        })
    }
}

impl Module for Bidirectional {
    /// The merged output (no mask, training=false). With `MergeMode::None` the two outputs
    /// are concatenated; use [`Bidirectional::call`] to get them apart.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let out = self.call(xs, None, None, false)?;
        match out.outputs.as_slice() {
            [one] => Ok(one.clone()),
            many => Tensor::cat(many, D::Minus1),
        }
    }
}
