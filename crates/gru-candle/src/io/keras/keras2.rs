//! Keras 2 config forms: [`upgrade_config`] rewrites a Keras 2 model config as Keras 3
//! writes it (Keras 3's own legacy loader does part of this and fails on the rest: it
//! cannot load a Keras 2 GRU, whose config carries `time_major`), [`written_by_keras_2`]
//! tells which Keras wrote a model, and [`archive_form`] writes a config in the form Keras
//! 3's `.keras` loader reads.

use super::graph::node_refs;
use super::{malformed, unsupported};
use crate::error::Result;
use serde_json::{json, Value};
use std::collections::HashSet;

/// Rewrites the Keras 2 forms of a model config as Keras 3 writes them; a Keras 3 config
/// comes back unchanged:
/// - `inbound_nodes` as lists `[[[name, node, tensor, kwargs]]]` -> `{args, kwargs}`;
/// - `batch_input_shape` -> `batch_shape` (InputLayer) or `build_config.input_shape`;
/// - a one-element `axis` list -> its element;
/// - a GRU's `time_major: false` dropped (`true` is refused: inputs would be time-major);
/// - a `Policy` dtype (tf_keras' mixed precision) -> its name.
pub(super) fn upgrade_config(config: &mut Value, source: &str, keras2: bool) -> Result<()> {
    // Keras 2 numbers the calls of a nested model from 1 when the model has its own first
    // call (an input layer): that call is not in the config. (Keras 3 reads list-form
    // nodes, which this crate's archives hold for Keras 2 models, numbered from 0.)
    let skip_first: HashSet<String> = config["config"]["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| keras2 && has_own_first_call(l))
        .filter_map(|l| l["config"]["name"].as_str().or(l["name"].as_str()))
        .map(str::to_string)
        .collect();
    // Boolean model inputs: a Keras 2 `mask` argument naming one is a mask.
    let boolean_inputs: HashSet<String> = config["config"]["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["class_name"] == "InputLayer" && l["config"]["dtype"] == "bool")
        .filter_map(|l| l["config"]["name"].as_str().or(l["name"].as_str()))
        .map(str::to_string)
        .collect();
    let scope = Scope {
        skip_first,
        boolean_inputs,
    };
    let mut keras2_nodes = false;
    if let Some(layers) = config["config"]["layers"].as_array_mut() {
        for l in layers {
            keras2_nodes |= upgrade_layer(l, source, &scope, keras2)?;
        }
    }
    let skip_first = scope.skip_first;
    if keras2_nodes {
        if let Some(outputs) = config["config"].get_mut("output_layers") {
            renumber(outputs, &skip_first);
        }
        // Keras 2 lists a single input or output as a list of one; its models take and
        // return the tensor itself, as Keras 3 writes them (a wrapped model returning a
        // list of one breaks Keras 3's TimeDistributed).
        for key in ["input_layers", "output_layers"] {
            if let Some(list) = config["config"].get_mut(key) {
                if let Some([one]) = list.as_array().map(Vec::as_slice) {
                    if one
                        .as_array()
                        .is_some_and(|t| t.first().is_some_and(Value::is_string))
                    {
                        *list = one.clone();
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether Keras 2 gave a nested model a call of its own before the model's calls: a
/// functional model, or a Sequential that starts with an input layer.
fn has_own_first_call(l: &Value) -> bool {
    match l["class_name"].as_str() {
        Some("Functional" | "Model") => true,
        Some("Sequential") => l["config"]["layers"][0]["class_name"] == "InputLayer",
        _ => false,
    }
}

/// `[name, node, tensor]` references (one, or a list of them) to a model of `skip_first`:
/// node numbers one lower.
fn renumber(refs: &mut Value, skip_first: &HashSet<String>) {
    let one = |r: &mut Value| {
        let named = r[0].as_str().is_some_and(|n| skip_first.contains(n));
        if let (true, Some(n)) = (named, r[1].as_u64()) {
            r[1] = n.saturating_sub(1).into();
        }
    };
    match refs.as_array_mut() {
        Some(list) if list.first().is_some_and(Value::is_string) => one(refs),
        Some(list) => list.iter_mut().for_each(one),
        None => {}
    }
}

/// What the upgrade of one model's layers needs to know of the model: the nested models
/// whose calls Keras 2 numbers from 1, and the boolean model inputs.
struct Scope {
    skip_first: HashSet<String>,
    boolean_inputs: HashSet<String>,
}

/// Upgrades one layer (a nested model's layers too); returns whether its nodes were in
/// Keras 2's list form.
fn upgrade_layer(l: &mut Value, source: &str, scope: &Scope, keras2: bool) -> Result<bool> {
    let class = l["class_name"].as_str().unwrap_or("").to_string();
    let rnn = matches!(class.as_str(), "GRU" | "RNN" | "Bidirectional");
    let keras2_nodes = match l.get_mut("inbound_nodes") {
        Some(nodes) => upgrade_nodes(nodes, scope, rnn),
        None => false,
    };
    if l["config"]["layers"].is_array() {
        upgrade_config(l, source, keras2)?;
    }
    let name = l["config"]["name"].as_str().unwrap_or("").to_string();
    let Some(cfg) = l.get_mut("config").and_then(Value::as_object_mut) else {
        return Ok(keras2_nodes);
    };
    if let Some(shape) = cfg.remove("batch_input_shape") {
        match class.as_str() {
            "InputLayer" => {
                cfg.insert("batch_shape".into(), shape);
            }
            _ => {
                l["build_config"] = json!({ "input_shape": shape });
            }
        }
    }
    upgrade_layer_config(&class, &name, l, source, keras2)?;
    Ok(keras2_nodes)
}

/// The parts of one layer's `config` (and of the layers it wraps) that changed form.
fn upgrade_layer_config(
    class: &str,
    name: &str,
    l: &mut Value,
    source: &str,
    keras2: bool,
) -> Result<()> {
    let cfg = &mut l["config"];
    if let Some(axis) = cfg.get_mut("axis") {
        if let Some([one]) = axis.as_array().map(Vec::as_slice) {
            *axis = one.clone();
        }
    }
    if let Some(dtype) = cfg.get_mut("dtype") {
        if dtype["class_name"] == "Policy" {
            if let Some(policy) = dtype["config"]["name"].as_str() {
                *dtype = Value::String(policy.to_string());
            }
        }
    }
    if matches!(class, "GRU" | "RNN") {
        if let Some(m) = cfg.as_object_mut() {
            match m.remove("time_major") {
                Some(Value::Bool(true)) => {
                    let what = format!(
                        "layer {name:?}: {class} with time_major=true (inputs (timesteps, batch, \
                         features))"
                    );
                    return Err(unsupported(source, what));
                }
                Some(Value::Bool(false)) | Some(Value::Null) | None => {}
                Some(other) => {
                    let what = format!("layer {name:?}: time_major {other} (false expected)");
                    return Err(malformed(source, what));
                }
            }
        }
    }
    for key in ["layer", "backward_layer"] {
        if let Some(inner) = cfg.get_mut(key).filter(|v| v.is_object()) {
            let class = inner["class_name"].as_str().unwrap_or("").to_string();
            let name = inner["config"]["name"].as_str().unwrap_or(name).to_string();
            // A wrapped model (TimeDistributed(model)) has layers of its own.
            if inner["config"]["layers"].is_array() {
                upgrade_config(inner, source, keras2)?;
            }
            upgrade_layer_config(&class, &name, inner, source, keras2)?;
        }
    }
    Ok(())
}

/// A config in the form Keras 3's `.keras` loader resolves: the model's and each layer's
/// `module` (Keras 2 configs name none, or tf_keras' modules), as Keras 3 writes them, in
/// nested models too. A call of a Keras 2 config that passes tensors as keyword arguments
/// (a GRU's `initial_state`) has no such form: the error names its layer.
pub(super) fn archive_form(config: &Value) -> std::result::Result<Value, String> {
    let mut c = config.clone();
    archive_model(&mut c)?;
    Ok(c)
}

fn archive_model(c: &mut Value) -> std::result::Result<(), String> {
    let keras3 = |m: &Value| m.as_str().is_some_and(|m| m.starts_with("keras"));
    if !keras3(&c["module"]) {
        let (module, registered) = match c["class_name"].as_str() {
            Some("Sequential") => ("keras", Value::Null),
            _ => ("keras.src.models.functional", Value::from("Functional")),
        };
        c["module"] = module.into();
        c["registered_name"] = registered;
    }
    let Some(layers) = c["config"]["layers"].as_array_mut() else {
        return Ok(());
    };
    for l in layers {
        let name = l["config"]["name"].as_str().unwrap_or("").to_string();
        let foreign = !keras3(&l["module"]);
        if l["config"]["layers"].is_array() {
            archive_model(l)?;
        } else if foreign {
            l["module"] = "keras.layers".into();
            if l.get("registered_name").is_none() {
                l["registered_name"] = Value::Null;
            }
        }
        // A wrapped layer or model (Bidirectional, TimeDistributed).
        for key in ["layer", "backward_layer"] {
            if let Some(inner) = l["config"].get_mut(key).filter(|v| v.is_object()) {
                if inner["config"]["layers"].is_array() {
                    archive_model(inner)?;
                } else if !keras3(&inner["module"]) {
                    inner["module"] = "keras.layers".into();
                }
            }
        }
        if let Some(nodes) = l.get_mut("inbound_nodes").and_then(Value::as_array_mut) {
            for node in nodes {
                legacy_node(node).map_err(|why| format!("layer {name:?}: {why}"))?;
            }
        }
    }
    Ok(())
}

/// A node [`upgrade_nodes`] wrote (its tensors carry no shape, which Keras 3's dict form
/// needs) back in the list form Keras 3 also reads: `[[name, node, tensor, kwargs], ...]`.
/// Keras 3's own nodes stay as they are; a Keras 2 node whose keyword arguments hold
/// tensors has no list form Keras 3 reads (it passes them on untouched).
fn legacy_node(node: &mut Value) -> std::result::Result<(), String> {
    let shapeless =
        |t: &Value| t["class_name"] == "__keras_tensor__" && t["config"].get("shape").is_none();
    let tensors: Vec<&Value> = match &node["args"][0] {
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    if !tensors.iter().all(|t| shapeless(t)) {
        return Ok(());
    }
    if node["kwargs"]
        .as_object()
        .is_some_and(|k| k.values().any(|v| !node_refs(v).is_empty()))
    {
        return Err(
            "a Keras 2 call with tensors as keyword arguments (initial_state), which \
                    Keras 3's archive config cannot express without the tensors' shapes"
                .into(),
        );
    }
    let entry = |t: &Value| -> Option<Value> {
        match t["config"]["keras_history"].as_array().map(Vec::as_slice) {
            Some([name, n, i]) => Some(json!([name, n, i, node["kwargs"].clone()])),
            _ => None,
        }
    };
    if let Some(list) = tensors
        .into_iter()
        .map(entry)
        .collect::<Option<Vec<Value>>>()
    {
        *node = Value::Array(list);
    }
    Ok(())
}

/// `[[[name, node, tensor, kwargs], ...], ...]` -> `[{args: [tensor or [tensors]], kwargs}]`,
/// the calls of `skip_first` models numbered from 0; a recurrent layer's (`rnn`) tensors
/// after the first are its `initial_state` (Keras 2 calls it on `[inputs] + states`); a
/// `mask` argument naming a boolean model input, `[name, node, tensor]`, becomes that
/// tensor, marked boolean. Returns whether any node was in the list form.
fn upgrade_nodes(nodes: &mut Value, scope: &Scope, rnn: bool) -> bool {
    let skip_first = &scope.skip_first;
    let Some(list) = nodes.as_array_mut() else {
        return false;
    };
    let mut keras2 = false;
    for node in list {
        let Some(inputs) = node.as_array_mut() else {
            continue; // already Keras 3's {args, kwargs}
        };
        keras2 = true;
        inputs.iter_mut().for_each(|t| renumber(t, skip_first));
        let tensor = |t: &Value| {
            json!({"class_name": "__keras_tensor__",
                   "config": {"keras_history": [t[0], t[1], t[2]]}})
        };
        let mut kwargs = inputs
            .first()
            .map(|t| t[3].clone())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        if let Some(mask) = kwargs.get_mut("mask") {
            upgrade_mask(mask, scope);
        }
        let args = match inputs.as_slice() {
            [one] => vec![tensor(one)],
            [first, states @ ..] if rnn => {
                kwargs["initial_state"] = states.iter().map(tensor).collect();
                vec![tensor(first)]
            }
            many => vec![Value::Array(many.iter().map(tensor).collect())],
        };
        *node = json!({"args": args, "kwargs": kwargs});
    }
    keras2
}

/// A Keras 2 `mask` argument `[name, node, tensor]` (or a list of them) naming a boolean
/// model input -> that tensor as Keras 3 records it, of dtype bool; others stay as they are
/// (and are refused by the graph, naming them).
fn upgrade_mask(mask: &mut Value, scope: &Scope) {
    let one = |r: &mut Value| {
        let Some(name) = r[0].as_str().filter(|n| scope.boolean_inputs.contains(*n)) else {
            return;
        };
        let mut refs = r.clone();
        renumber(&mut refs, &scope.skip_first);
        *r = json!({"class_name": "__keras_tensor__",
                    "config": {"dtype": "bool",
                               "keras_history": [name, refs[1], refs[2]]}});
    };
    match mask.as_array_mut() {
        Some(list) if list.first().is_some_and(Value::is_string) => one(mask),
        Some(list) => list.iter_mut().for_each(one),
        None => {}
    }
}

/// Whether Keras 2 wrote the model: the `keras_version` its file records (a legacy file's
/// attribute, an archive's `metadata.json`); without one, the config's `keras_version`,
/// tf_keras' module names, or layers without a `module` called in Keras 2's list form (a
/// legacy file's config read apart from its file).
pub(super) fn written_by_keras_2(config: &Value, file_version: Option<&str>) -> bool {
    let two = |v: &str| v.starts_with("2.");
    if let Some(v) = file_version {
        return two(v);
    }
    let mut layers = config["config"]["layers"].as_array().into_iter().flatten();
    config["keras_version"].as_str().is_some_and(two)
        || config["module"]
            .as_str()
            .is_some_and(|m| m.starts_with("tf_keras"))
        || layers.any(|l| l.get("module").is_none() && l["inbound_nodes"][0].is_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras2_nested_model_calls_are_numbered_from_zero_and_states_become_kwargs() {
        let seq = json!({"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "InputLayer", "config": {"name": "si", "batch_input_shape": [null, 7]}},
            {"class_name": "Dense", "config": {"name": "d"}}]},
            "inbound_nodes": [[["a", 0, 0, {}]], [["b", 0, 0, {}]]]});
        let mut c = json!({"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "config": {"name": "a"}, "inbound_nodes": []},
            {"class_name": "InputLayer", "config": {"name": "b"}, "inbound_nodes": []},
            seq,
            {"class_name": "GRU", "config": {"name": "g"},
             "inbound_nodes": [[["a", 0, 0, {}], ["s", 2, 0, {}]]]}],
            "output_layers": [["s", 1, 0], ["g", 0, 0]]}});
        let mut keras3 = c.clone();
        upgrade_config(&mut c, "f", true).unwrap();
        let l = &c["config"]["layers"];
        let history = |t: &Value| t["config"]["keras_history"].clone();
        assert_eq!(
            history(&l[3]["inbound_nodes"][0]["args"][0]),
            json!(["a", 0, 0])
        );
        // The Sequential's calls 1 and 2 (Keras 2's numbers) are its calls 0 and 1.
        let state = &l[3]["inbound_nodes"][0]["kwargs"]["initial_state"];
        assert_eq!(history(&state[0]), json!(["s", 1, 0]));
        assert_eq!(
            c["config"]["output_layers"],
            json!([["s", 0, 0], ["g", 0, 0]])
        );
        // The nested model's own layers are upgraded too.
        assert_eq!(
            l[2]["config"]["layers"][0]["config"]["batch_shape"],
            json!([null, 7])
        );
        // Not written by Keras 2 (this crate's archives of Keras 2 models): kept as numbered.
        upgrade_config(&mut keras3, "f", false).unwrap();
        assert_eq!(keras3["config"]["output_layers"][0], json!(["s", 1, 0]));
    }

    #[test]
    fn a_keras2_mask_argument_naming_a_boolean_input_becomes_its_tensor() {
        let mut c = json!({"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "config": {"name": "x", "dtype": "float32"},
             "inbound_nodes": []},
            {"class_name": "InputLayer", "config": {"name": "m", "dtype": "bool"},
             "inbound_nodes": []},
            {"class_name": "GRU", "config": {"name": "g"},
             "inbound_nodes": [[["x", 0, 0, {"mask": ["m", 0, 0]}]]]},
            {"class_name": "GRU", "config": {"name": "h"},
             "inbound_nodes": [[["g", 0, 0, {"mask": ["x", 0, 0]}]]]}],
            "output_layers": [["h", 0, 0]]}});
        upgrade_config(&mut c, "f", true).unwrap();
        let l = &c["config"]["layers"];
        let mask = &l[2]["inbound_nodes"][0]["kwargs"]["mask"];
        assert_eq!(mask["class_name"], "__keras_tensor__");
        assert_eq!(mask["config"]["dtype"], "bool");
        assert_eq!(mask["config"]["keras_history"], json!(["m", 0, 0]));
        // A float input named as a mask stays as written (the graph refuses it by name).
        assert_eq!(
            l[3]["inbound_nodes"][0]["kwargs"]["mask"],
            json!(["x", 0, 0])
        );
    }

    #[test]
    fn an_archive_config_refuses_shapeless_keyword_tensors_and_lists_shapeless_calls() {
        let t = |name: &str| {
            json!({"class_name": "__keras_tensor__",
                                    "config": {"keras_history": [name, 0, 0]}})
        };
        let gru = json!({"class_name": "GRU", "config": {"name": "g"}, "inbound_nodes": [
            {"args": [t("i")], "kwargs": {"initial_state": [t("e")]}}]});
        let c = json!({"class_name": "Functional", "config": {"layers": [gru]}});
        let e = archive_form(&c).unwrap_err();
        assert!(e.contains("\"g\"") && e.contains("initial_state"), "{e}");
        let dense = json!({"class_name": "Dense", "config": {"name": "d"}, "inbound_nodes": [
            {"args": [t("g")], "kwargs": {}}]});
        let c = json!({"class_name": "Functional", "config": {"layers": [dense]}});
        let written = archive_form(&c).unwrap();
        let l = &written["config"]["layers"][0];
        assert_eq!(l["inbound_nodes"][0], json!([["g", 0, 0, {}]]));
        assert_eq!(l["module"], "keras.layers");
    }

    #[test]
    fn keras_2_is_told_by_the_file_then_by_the_config() {
        let list_nodes = json!({"config": {"layers": [
            {"class_name": "Dense", "inbound_nodes": [[["i", 0, 0, {}]]]}]}});
        assert!(written_by_keras_2(&list_nodes, None));
        assert!(!written_by_keras_2(&list_nodes, Some("3.15.1")));
        assert!(written_by_keras_2(&json!({}), Some("2.21.0")));
        assert!(written_by_keras_2(
            &json!({"module": "tf_keras.src.engine.functional"}),
            None
        ));
        let keras3 = json!({"module": "keras.src.models.functional", "config": {"layers": [
            {"module": "keras.layers", "class_name": "Dense", "inbound_nodes": [[["i", 0, 0, {}]]]}]}});
        assert!(!written_by_keras_2(&keras3, None));
    }

    #[test]
    fn keras2_forms_become_keras3_forms() {
        let mut c = json!({"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "config": {"name": "i", "batch_input_shape": [null, 7]},
             "inbound_nodes": []},
            {"class_name": "GRU", "name": "g", "config": {"name": "g", "time_major": false,
              "batch_input_shape": [null, 7, 5],
              "dtype": {"class_name": "Policy", "config": {"name": "mixed_float16"}}},
             "inbound_nodes": [[["i", 0, 0, {}]]]},
            {"class_name": "LayerNormalization", "config": {"name": "n", "axis": [2]},
             "inbound_nodes": [[["g", 0, 0, {"training": false}]]]}
        ]}});
        upgrade_config(&mut c, "f", true).unwrap();
        let l = &c["config"]["layers"];
        assert_eq!(l[0]["config"]["batch_shape"], json!([null, 7]));
        assert!(l[1]["config"].get("time_major").is_none());
        assert_eq!(l[1]["config"]["dtype"], "mixed_float16");
        assert_eq!(l[1]["build_config"]["input_shape"], json!([null, 7, 5]));
        assert_eq!(
            l[1]["inbound_nodes"][0]["args"][0]["config"]["keras_history"],
            json!(["i", 0, 0])
        );
        assert_eq!(l[2]["config"]["axis"], 2);
        assert_eq!(
            l[2]["inbound_nodes"][0]["kwargs"],
            json!({"training": false})
        );
        // Idempotent: a Keras 3 config is left as it is.
        let again = c.clone();
        upgrade_config(&mut c, "f", true).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn time_major_true_is_refused_inside_wrappers_too() {
        let mut c = json!({"config": {"layers": [{"class_name": "Bidirectional", "config": {
            "name": "b", "layer": {"class_name": "GRU", "config": {"name": "g", "time_major": true}}}}]}});
        let e = upgrade_config(&mut c, "f", true).unwrap_err();
        assert!(e.to_string().contains("time_major"), "{e}");
    }
}
