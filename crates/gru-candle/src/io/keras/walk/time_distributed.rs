//! `TimeDistributed` over a recurrent, convolution, pooling or row-wise layer or a model
//! (a hierarchical encoder: a sentence encoder applied to every sentence of a document; a
//! CNN applied to every frame before a GRU): the wrapped layer is built for one step of
//! the second axis, its variables under `{group}/layer`, and run on all steps at once
//! (Keras runs it step by step; the steps are independent rows).

use super::{is_model_class, ModelBuilder};
use crate::error::Result;
use crate::io::keras::graph::{MaskState, TensorState};
use crate::io::keras::{unsupported, ModelLayer};
use serde_json::Value;

/// Whether `l` is a `TimeDistributed` of something other than a `Dense` (which is built
/// as a `Dense`).
pub(super) fn wraps_more_than_dense(l: &Value) -> bool {
    l["class_name"] == "TimeDistributed" && l["config"]["layer"]["class_name"] != "Dense"
}

impl ModelBuilder<'_> {
    /// A `TimeDistributed` layer over `inputs`: its wrapped GRU, Bidirectional, RNN or
    /// model built for one step (the input without its second axis), its outputs with
    /// that axis back.
    pub(super) fn time_distributed(
        &mut self,
        l: &Value,
        lname: &str,
        group: &str,
        inputs: &[TensorState],
    ) -> Result<(ModelLayer, Vec<TensorState>)> {
        let source = self.source();
        let refuse = |what: String| Err(unsupported(&source, format!("layer {lname:?}: {what}")));
        let inner = &l["config"]["layer"];
        let class = inner["class_name"].as_str().unwrap_or("");
        let [input] = inputs else {
            return refuse(format!("TimeDistributed of {} inputs", inputs.len()));
        };
        if input.rank.is_some_and(|r| r < 3) {
            return refuse(format!(
                "TimeDistributed over a tensor of rank {:?}",
                input.rank
            ));
        }
        // Keras hands the wrapped layer one step of the input's mask, which a GRU cannot
        // take.
        if input.mask != MaskState::None {
            return refuse(
                "TimeDistributed of a recurrent layer or model over a masked tensor".into(),
            );
        }
        let step = TensorState {
            features: input.features,
            rank: input.rank.map(|r| r - 1),
            dims: input
                .dims
                .as_ref()
                .and_then(|d| d.get(1..))
                .map(<[usize]>::to_vec),
            mask: MaskState::None,
        };
        let inner_group = format!("{group}/layer");
        let (layer, states) = match class {
            c if is_model_class(c) => self.nested(inner, lname, &inner_group, &[step])?,
            "GRU"
            | "Bidirectional"
            | "RNN"
            | "Conv1D"
            | "MaxPooling1D"
            | "AveragePooling1D"
            | "Conv2D"
            | "MaxPooling2D"
            | "AveragePooling2D"
            | "GlobalMaxPooling1D"
            | "GlobalAveragePooling1D"
            | "LayerNormalization"
            | "Dropout"
            | "SpatialDropout1D"
            | "Activation"
            | "Flatten" => {
                self.b.enter(&step);
                let layer = self.b.layer(inner, lname, &inner_group)?;
                let state = self.b.leave(&layer, MaskState::None);
                (layer, vec![state])
            }
            other => {
                return refuse(format!(
                    "TimeDistributed({other}): only Dense, recurrent, convolution, pooling, \
                     LayerNormalization, Dropout, Activation, Flatten layers or a model"
                ))
            }
        };
        let steps = input.dims.as_ref().and_then(|d| d.first().copied());
        let outer = |s: TensorState| TensorState {
            features: s.features,
            rank: s.rank.map(|r| r + 1),
            dims: match (steps, s.dims) {
                (Some(n), Some(d)) => Some([vec![n], d].concat()),
                _ => None,
            },
            mask: input.mask,
        };
        let states = states.into_iter().map(outer).collect();
        Ok((ModelLayer::TimeDistributed(Box::new(layer)), states))
    }
}
