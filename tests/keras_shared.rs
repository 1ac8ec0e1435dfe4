//! Keras models whose layers are called more than once (shared layers) or are models
//! themselves (nested Sequential and functional models), against Keras 3.15.1
//! (tests/data/models, made by scripts/make_keras_shared_cases.py): the variables of a
//! shared layer read once, its gradients summed over its calls as Keras sums them, its
//! activity loss added at every call, and typed refusals of graphs that cannot run.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasModel, ModelCall, ModelLayer};
use candle_gru::candle::{Error, FileProblem};
use common::keras_cases::{case, check_gradients, data, inputs};
use common::{flat, max_diff, numbers};
use serde_json::Value;
use std::path::PathBuf;

#[test]
fn siamese_encoder_gradients_and_losses_match_keras() {
    check_gradients("siamese_nested_encoder");
}

#[test]
fn shared_dense_and_gru_gradients_match_keras() {
    check_gradients("shared_dense_and_gru");
}

#[test]
fn a_shared_layer_is_one_layer_and_a_nested_model_holds_its_own() {
    let m = KerasModel::load(
        &data("siamese_nested_encoder.keras"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let names: Vec<&str> = m.layers.iter().map(|(n, _)| n.as_str()).collect();
    // The encoder and the Dense called twice each are one layer each.
    let expected = [
        "input_layer",
        "input_layer_1",
        "encoder",
        "shared_dense",
        "subtract",
        "concatenate",
        "dense",
    ];
    assert_eq!(names, expected);
    let Some((_, ModelLayer::Model(enc))) = m.layers.iter().find(|(n, _)| n == "encoder") else {
        panic!("the encoder is a nested model");
    };
    let inner: Vec<bool> = enc
        .layers
        .iter()
        .map(|(_, l)| matches!(l, ModelLayer::Embedding(_) | ModelLayer::Gru(_)))
        .collect();
    assert_eq!(inner.iter().filter(|b| **b).count(), 2, "{:?}", enc.layers);
    // Each variable once, at its object-tree path (the encoder's under layers/sequential).
    let mut paths: Vec<&str> = m.variables().iter().map(|(p, _)| p.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "layers/dense/vars/0",
            "layers/dense/vars/1",
            "layers/dense_1/vars/0",
            "layers/dense_1/vars/1",
            "layers/sequential/layers/embedding/vars/0",
            "layers/sequential/layers/gru/cell/vars/0",
            "layers/sequential/layers/gru/cell/vars/1",
            "layers/sequential/layers/gru/cell/vars/2",
        ]
    );
}

#[test]
fn the_two_calls_of_a_shared_encoder_see_their_own_inputs() {
    let c = case("siamese_nested_encoder");
    let m = KerasModel::load(
        &data("siamese_nested_encoder.keras"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let x = inputs(&c);
    let call = |a: &Tensor, b: &Tensor| {
        let out = m.call_inputs(&[a.clone(), b.clone()], ModelCall::default());
        flat(&out.unwrap().outputs[0])
    };
    let (ab, ba, aa) = (call(&x[0], &x[1]), call(&x[1], &x[0]), call(&x[0], &x[0]));
    let keras: Vec<f64> = c["expected"][0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(numbers)
        .collect();
    assert!(max_diff(&ab, &keras) < 1e-5, "{ab:?} {keras:?}");
    // Swapping the inputs changes a - b, so the output: the calls are not one call twice.
    assert!(max_diff(&ab, &ba) > 1e-3, "{ab:?} {ba:?}");
    assert!(max_diff(&ab, &aa) > 1e-3);
}

fn unsupported(r: candle_gru::candle::Result<KerasModel>) -> String {
    match r {
        Err(Error::File {
            problem: FileProblem::Unsupported(what),
            ..
        }) => what,
        other => panic!("expected an Unsupported file error, got {other:?}"),
    }
}

fn load_edited(
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> candle_gru::candle::Result<KerasModel> {
    let mut config = KerasModel::model_config(&data(&format!("{name}.keras"))).unwrap();
    edit(&mut config);
    let weights = data(&format!("{name}.weights.h5"));
    KerasModel::load_weights_h5(&config, &weights, DType::F32, &Device::Cpu)
}

/// The layer of the config named `name`.
fn layer<'a>(config: &'a mut Value, name: &str) -> &'a mut Value {
    let layers = config["config"]["layers"].as_array_mut().unwrap();
    layers.iter_mut().find(|l| l["name"] == name).unwrap()
}

#[test]
fn graphs_that_cannot_run_are_refused_by_name() {
    // A call of a layer the model lacks.
    let what = unsupported(load_edited("shared_dense_and_gru", |c| {
        let h = &mut layer(c, "shared_gru")["inbound_nodes"][1]["args"][0]["config"];
        h["keras_history"][1] = 5.into();
    }));
    assert!(what.contains("call 5") && what.contains("lacks"), "{what}");
    // A cycle: the projection's first call takes the GRU's output, which takes it.
    let what = unsupported(load_edited("shared_dense_and_gru", |c| {
        let node = &mut layer(c, "proj")["inbound_nodes"][0]["args"][0]["config"];
        node["keras_history"] = serde_json::json!(["shared_gru", 0, 0]);
    }));
    assert!(what.contains("cycle"), "{what}");
    // A shared layer called on tensors of another size than it was built for.
    let what = unsupported(load_edited("shared_dense_and_gru", |c| {
        let node = &mut layer(c, "proj")["inbound_nodes"][1]["args"][0]["config"];
        node["keras_history"] = serde_json::json!(["dense_1", 0, 0]);
        let dense = layer(c, "dense_1");
        dense["inbound_nodes"][0]["args"][0]["config"]["keras_history"] =
            serde_json::json!(["shared_gru", 1, 0]);
    }));
    assert!(what.contains("features"), "{what}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-gru-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn keras2_nested_models_with_a_decoder_state_write_an_archive_that_reads_back() {
    let c = case("keras2_nested_functional");
    let file = data("keras2_nested_functional.h5");
    let m = KerasModel::load(&file, DType::F32, &Device::Cpu).unwrap();
    let first = |m: &KerasModel| {
        let out = m.call_inputs(&inputs(&c), ModelCall::default()).unwrap();
        flat(&out.outputs[0])
    };
    let want = first(&m);
    // Its decoder GRU takes the encoder's state as a keyword argument: the archive config
    // names that tensor with the shape and dtype the builder found (Keras 3 needs them).
    let archive = scratch("keras2_nested_functional.keras");
    m.save(&archive).unwrap();
    let config = KerasModel::archive_config(&archive).unwrap();
    let layers = config["config"]["layers"].as_array().unwrap();
    let decoder = layers.iter().find(|l| l["name"] == "gru_14").unwrap();
    let state = &decoder["inbound_nodes"][0]["kwargs"]["initial_state"][0]["config"];
    assert_eq!(state["shape"], serde_json::json!([null, 6]));
    assert_eq!(state["keras_history"], serde_json::json!(["encoder", 0, 1]));
    let again = KerasModel::load(&archive, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(first(&again), want);
    // The weights file holds every variable at Keras 3's paths (the nested models' under
    // layers/functional/layers/...); with the file's own config it gives the same outputs.
    let weights = scratch("keras2_nested_functional.weights.h5");
    m.save_weights_h5(&weights).unwrap();
    let paths: Vec<&str> = m.variables().iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        paths.contains(&"layers/functional/layers/sequential/layers/batch_normalization/vars/3")
    );
    let config = KerasModel::model_config(&file).unwrap();
    let again = KerasModel::load_weights_h5(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(first(&again), want);
}
