//! The functional-graph side of a model config: a functional model must be a chain of
//! layers, each fed by the one before, with the mask nodes Keras records for
//! `Embedding(mask_zero=True)`; the mask the chain carries between layers.

use super::{unsupported, ModelLayer};
use crate::error::Result;
use serde_json::Value;

/// The mask the chain carries after a layer, as [`super::KerasModel::call`] propagates it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum MaskState {
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
            | ModelLayer::Reshaping(_) => MaskState::None,
            ModelLayer::Gru(g) if !g.config().return_sequences => MaskState::None,
            ModelLayer::Bidirectional(b) if !b.forward_layer().config().return_sequences => {
                MaskState::None
            }
            _ => self,
        }
    }
}

/// A functional model's `NotEqual(input, 0)` node: the mask Keras records for an
/// `Embedding(mask_zero=True)` on the model's input (token ids).
pub(super) fn check_id_mask_node(
    source: &str,
    l: &Value,
    lname: &str,
    input: Option<&str>,
) -> Result<()> {
    let nodes = l["inbound_nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let args = nodes.first().map(|n| &n["args"]);
    let from = args.and_then(|a| a[0]["config"]["keras_history"][0].as_str());
    let value = args.and_then(|a| a[1].as_f64());
    if nodes.len() != 1 || from.is_none() || from != input || value != Some(0.0) {
        let what = format!("layer {lname:?}: only NotEqual(model input, 0) mask nodes");
        return Err(unsupported(source, what));
    }
    Ok(())
}

/// A functional model's GRU or pooling layer takes the mask the chain carries. Without a `mask` argument
/// Keras passes the mask its input carries (as the chain does); with one, it must be the id
/// mask node, and an `Embedding(mask_zero=True)` must be what masks the chain there.
pub(super) fn check_mask_argument(
    source: &str,
    l: &Value,
    lname: &str,
    mask_nodes: &[String],
    state: MaskState,
) -> Result<()> {
    let arg = &l["inbound_nodes"][0]["kwargs"]["mask"];
    let node = arg["config"]["keras_history"][0].as_str();
    let matches = match (node, state) {
        (None, _) => arg.is_null(),
        (Some(n), MaskState::Ids) => mask_nodes.iter().any(|m| m == n),
        _ => false,
    };
    if !matches {
        let what = format!("layer {lname:?}: its mask argument {arg} does not follow the chain");
        return Err(unsupported(source, what));
    }
    Ok(())
}

/// Functional models: only chains, each layer fed by the one before.
pub(super) fn check_chain(
    source: &str,
    l: &Value,
    lname: &str,
    previous: Option<&str>,
) -> Result<()> {
    let nodes = l["inbound_nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let from = nodes
        .first()
        .and_then(|n| n["args"][0]["config"]["keras_history"][0].as_str());
    if nodes.len() != 1 || from != previous {
        let what = format!("layer {lname:?}: only chains of layers are supported");
        return Err(unsupported(source, what));
    }
    Ok(())
}
