//! Legacy HDF5 model files (tests/data/models/keras2_* from Keras 2 = tf_keras 2.21.0,
//! keras3_legacy_h5 from Keras 3.15.1's legacy writer; scripts/make_keras2_h5_cases.py):
//! their outputs are checked by `every_model_case_reproduces_its_framework` (tests/models.rs);
//! here the typed errors of files and configs that do not match, and fine-tuning.

mod common;

use candle_core::{DType, Device};
use candle_gru::candle::io::keras::{KerasModel, ModelCall};
use candle_gru::candle::{Error, FileProblem};
use candle_nn::{Optimizer, VarMap, SGD};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-gru-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn problem<T: std::fmt::Debug>(r: candle_gru::candle::Result<T>) -> FileProblem {
    match r {
        Err(Error::File { problem, .. }) => problem,
        other => panic!("expected a file error, got {other:?}"),
    }
}

/// The Keras 2 Sequential case's config (InputLayer, Masking, GRU(4), Dense(3)).
fn masking_config() -> Value {
    KerasModel::model_config(&data("keras2_sequential_masking.h5")).unwrap()
}

fn load_weights(config: &Value) -> candle_gru::candle::Result<KerasModel> {
    let weights = data("keras2_sequential_masking.legacy_weights.h5");
    KerasModel::load_weights_h5(config, &weights, DType::F32, &Device::Cpu)
}

#[test]
fn model_config_reads_both_formats_as_written() {
    let c = masking_config();
    assert_eq!(c["class_name"], "Sequential");
    let gru = &c["config"]["layers"][2]["config"];
    assert_eq!(gru["time_major"], false, "Keras 2's key, as written");
    assert_eq!(gru["units"], 4);
    let archive = data("stacked_gru_dense.keras");
    assert_eq!(
        KerasModel::model_config(&archive).unwrap(),
        KerasModel::archive_config(&archive).unwrap()
    );
}

#[test]
fn a_variable_the_config_has_no_place_for_is_an_error() {
    let mut c = masking_config();
    c["config"]["layers"][2]["config"]["use_bias"] = false.into();
    match problem(load_weights(&c)) {
        FileProblem::Unsupported(what) => {
            assert!(what.contains("gru_cell/bias:0"), "{what}");
            assert!(what.contains("no place for"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_shape_that_does_not_match_is_an_error_before_reading() {
    let mut c = masking_config();
    c["config"]["layers"][2]["config"]["units"] = 5.into();
    match problem(load_weights(&c)) {
        FileProblem::Shape {
            name,
            expected,
            got,
        } => {
            assert!(name.ends_with("gru_cell/kernel:0"), "{name}");
            assert_eq!((expected, got), (vec![5, 15], vec![5, 12]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_layer_missing_from_the_file_is_named() {
    let mut c = masking_config();
    c["config"]["layers"][3]["config"]["name"] = "head".into();
    match problem(load_weights(&c)) {
        FileProblem::Missing(what) => assert!(what.contains("\"head\""), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn time_major_true_is_refused_by_name() {
    let mut c = masking_config();
    c["config"]["layers"][2]["config"]["time_major"] = true.into();
    match problem(load_weights(&c)) {
        FileProblem::Unsupported(what) => assert!(what.contains("time_major=true"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn files_that_are_not_legacy_models() {
    // A Keras 3 weights file has no model_config.
    let p = problem(KerasModel::load(
        &data("stacked_gru_dense.weights.h5"),
        DType::F32,
        &Device::Cpu,
    ));
    assert!(
        matches!(&p, FileProblem::Unreadable(w) if w.contains("model_config")),
        "{p:?}"
    );
    // Truncated model files.
    let bytes = std::fs::read(data("keras2_embedding_bigru.h5")).unwrap();
    for cut in [16, bytes.len() / 3, bytes.len() / 2] {
        let path = scratch("cut.h5");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let r = KerasModel::load(&path, DType::F32, &Device::Cpu);
        assert!(matches!(r, Err(Error::File { .. })), "cut at {cut}: {r:?}");
    }
    // Neither a zip archive nor HDF5.
    let path = scratch("text.h5");
    std::fs::write(&path, b"not a model").unwrap();
    assert!(matches!(
        problem(KerasModel::load(&path, DType::F32, &Device::Cpu)),
        FileProblem::Unreadable(_)
    ));
}

#[test]
fn a_legacy_model_fine_tunes() {
    let varmap = VarMap::new();
    let path = data("keras2_sequential_masking.h5");
    let model = KerasModel::load_trainable(&path, DType::F32, &Device::Cpu, &varmap).unwrap();
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "model_weights/dense/dense/bias:0",
            "model_weights/dense/dense/kernel:0",
            "model_weights/gru/gru/gru_cell/bias:0",
            "model_weights/gru/gru/gru_cell/kernel:0",
            "model_weights/gru/gru/gru_cell/recurrent_kernel:0",
        ]
    );
    let x = common::model_case_inputs("keras2_sequential_masking");
    let loss = |m: &KerasModel| {
        let out = m
            .call_with(
                &x,
                ModelCall {
                    mask: None,
                    training: true,
                },
            )
            .unwrap();
        out.outputs[0].sqr().unwrap().mean_all().unwrap()
    };
    let before = loss(&model).to_scalar::<f32>().unwrap();
    let grads = loss(&model).backward().unwrap();
    for var in varmap.all_vars() {
        let g = grads
            .get(var.as_tensor())
            .expect("every variable gets a gradient");
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0);
    }
    let mut sgd = SGD::new(varmap.all_vars(), 0.05).unwrap();
    for _ in 0..20 {
        sgd.backward_step(&loss(&model)).unwrap();
    }
    let after = loss(&model).to_scalar::<f32>().unwrap();
    assert!(after < 0.7 * before, "{before} -> {after}");
}
