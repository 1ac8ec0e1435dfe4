//! The config a built model keeps: every call tensor Keras 2's list-form nodes left
//! without a shape and dtype gets the ones the builder found, so that the model can be
//! written in Keras 3's form.

use super::ModelBuilder;
use crate::io::keras::graph::TensorState;
use crate::io::keras::ModelLayer;
use serde_json::Value;

impl ModelBuilder<'_> {
    /// The config with a `shape` and `dtype` on every call tensor that lacks them, from
    /// what the builder knows of each tensor (Keras 2's list-form nodes carry none, and
    /// Keras 3's archive config needs them for tensors passed as keyword arguments, such
    /// as a decoder GRU's `initial_state`); nested models' configs as their builders left
    /// them.
    pub(super) fn annotated(&self, config: &Value) -> Value {
        let mut c = config.clone();
        let original = config["config"]["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(layers) = c["config"]["layers"].as_array_mut() {
            for (i, l) in layers.iter_mut().enumerate() {
                match self.built.get(i) {
                    Some(Some(ModelLayer::Model(m))) => *l = m.config.clone(),
                    Some(Some(ModelLayer::TimeDistributed(inner))) => {
                        if let ModelLayer::Model(m) = &**inner {
                            l["config"]["layer"] = m.config.clone();
                        }
                    }
                    _ => {}
                }
                if let Some(nodes) = l.get_mut("inbound_nodes") {
                    self.annotate(nodes, &original);
                }
            }
        }
        c
    }

    fn annotate(&self, v: &mut Value, layers: &[Value]) {
        match v {
            Value::Object(m)
                if m.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__") =>
            {
                let cfg = &mut m["config"];
                let h = &cfg["keras_history"];
                let (Some(name), Some(call), Some(tensor)) =
                    (h[0].as_str(), h[1].as_u64(), h[2].as_u64())
                else {
                    return;
                };
                let Some((node, mask_op)) = self.locate(name, call as usize) else {
                    return;
                };
                let state = self.state_of(node, tensor as usize);
                let (Some(shape), None) = (
                    state.as_ref().and_then(TensorState::keras_shape),
                    cfg.get("shape"),
                ) else {
                    return;
                };
                let layer = &layers[self.graph.nodes[node].layer];
                let dtype = match (mask_op, layer["class_name"].as_str()) {
                    (true, _) => "bool".to_string(),
                    (false, Some("InputLayer")) => layer["config"]["dtype"]
                        .as_str()
                        .unwrap_or("float32")
                        .to_string(),
                    _ => "float32".to_string(),
                };
                cfg["shape"] = shape;
                cfg["dtype"] = dtype.into();
            }
            Value::Object(m) => m.values_mut().for_each(|x| self.annotate(x, layers)),
            Value::Array(a) => a.iter_mut().for_each(|x| self.annotate(x, layers)),
            _ => {}
        }
    }
}
