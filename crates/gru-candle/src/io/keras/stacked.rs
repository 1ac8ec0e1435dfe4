//! Keras' `RNN` over `StackedRNNCells` of GRU cells (`RNN([GRUCell(a), GRUCell(b)])`): at
//! each step the cells run in order, each on the previous one's output, all holding their
//! states at a masked step. That is a chain of GRUs, each returning its sequence, over the
//! same mask; `go_backwards` reverses the input and the mask first, as Keras' RNN does.

use super::build::ChainBuilder;
use super::{snake, unsupported, ModelLayer};
use crate::error::Result;
use crate::stack::{GruStack, StackLayer};
use candle_core::Tensor;
use gru_core::GruConfig;
use serde_json::Value;

/// An `RNN` over stacked GRU cells.
#[derive(Debug)]
pub struct StackedGru {
    /// The cells as GRU layers (every one but the last returns its sequence).
    pub stack: GruStack,
    /// The RNN's `go_backwards`: the cells read the sequence from its end.
    pub go_backwards: bool,
}

/// `x` (batch, T, ...) or a (batch, T) mask with its steps in reverse order.
fn reversed(x: &Tensor) -> Result<Tensor> {
    let steps: Vec<u32> = (0..x.dim(1)? as u32).rev().collect();
    let idx = Tensor::new(steps.as_slice(), x.device())?;
    Ok(x.index_select(&idx, 1)?)
}

impl StackedGru {
    /// The RNN's outputs (the last cell's output, then every cell's state with
    /// `return_state`) and its activity loss.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        initial: &[Tensor],
        training: bool,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let (x, mask) = match self.go_backwards {
            true => (reversed(x)?, mask.map(reversed).transpose()?),
            false => (x.clone(), mask.cloned()),
        };
        let initial = (!initial.is_empty()).then_some(initial);
        let out = self.stack.call(&x, mask.as_ref(), initial, training)?;
        let mut outs = vec![out.output];
        outs.extend(out.states);
        Ok((outs, out.activity_loss))
    }

    /// The GRUs of the cells.
    pub fn grus(&self) -> Vec<&crate::layer::Gru> {
        self.stack
            .layers()
            .iter()
            .flat_map(|l| match l {
                StackLayer::Gru(g) => vec![&**g],
                StackLayer::Bidirectional(b) => vec![b.forward_layer(), b.backward_layer()],
            })
            .collect()
    }

    /// The last cell's settings (units, return_sequences, return_state).
    pub fn last(&self) -> Option<&GruConfig> {
        match self.stack.layers().last()? {
            StackLayer::Gru(g) => Some(g.config()),
            StackLayer::Bidirectional(b) => Some(b.forward_layer().config()),
        }
    }
}

impl ChainBuilder<'_> {
    /// An `RNN` over `StackedRNNCells` of `GRUCell`s, its cells' variables under
    /// `{group}/cell/cells/gru_cell[_k]/vars` (a legacy file names them by each cell's name).
    pub(super) fn stacked_rnn(
        &mut self,
        cfg: &Value,
        group: &str,
        lname: &str,
        d: usize,
    ) -> Result<ModelLayer> {
        let src = self.w.source.clone();
        let cells = cfg["cell"]["config"]["cells"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if cells.is_empty() {
            let what = format!("layer {lname:?}: StackedRNNCells without cells");
            return Err(unsupported(&src, what));
        }
        if !cfg["activity_regularizer"].is_null() {
            let what =
                format!("layer {lname:?}: RNN(StackedRNNCells) with an activity_regularizer");
            return Err(unsupported(&src, what));
        }
        let flag = |k: &str| cfg[k].as_bool().unwrap_or(false);
        let mut counters = std::collections::HashMap::new();
        let (mut layers, mut width) = (Vec::with_capacity(cells.len()), d);
        for (j, cell) in cells.iter().enumerate() {
            if cell["class_name"] != "GRUCell" {
                let what = format!(
                    "layer {lname:?}: a stacked {} cell (GRUCell expected)",
                    cell["class_name"]
                );
                return Err(unsupported(&src, what));
            }
            let mut gru = cell["config"].as_object().cloned().unwrap_or_default();
            let last = j + 1 == cells.len();
            for (key, value) in [
                ("return_sequences", !last || flag("return_sequences")),
                ("return_state", flag("return_state")),
                ("stateful", flag("stateful")),
                ("unroll", flag("unroll")),
                ("zero_output_for_mask", flag("zero_output_for_mask")),
            ] {
                gru.insert(key.to_string(), value.into());
            }
            let config = GruConfig::from_keras_json(&Value::Object(gru))?;
            let key = snake("GRUCell");
            let k = counters.entry(key.clone()).or_insert(0usize);
            let cell_group = match *k {
                0 => format!("{group}/cell/cells/{key}"),
                k => format!("{group}/cell/cells/{key}_{k}"),
            };
            *k += 1;
            if self.w.is_legacy() {
                let name = cell["config"]["name"].as_str().unwrap_or("");
                self.w
                    .alias(&cell_group, &format!("{}{lname}|{name}", self.legacy_model));
            }
            let units = config.units;
            let g = self.w.gru_vars(
                &format!("{cell_group}/vars"),
                config,
                width,
                self.dtype,
                self.device,
            )?;
            layers.push(StackLayer::Gru(Box::new(g)));
            width = units;
        }
        self.features = Some(width);
        Ok(ModelLayer::StackedGru(Box::new(StackedGru {
            stack: GruStack::new(layers)?,
            go_backwards: flag("go_backwards"),
        })))
    }
}
