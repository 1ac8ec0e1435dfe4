//! Bad input gives a typed error that says what was expected and what came; nothing panics.

mod common;

use candle_core::{DType, Device, Module, Tensor};
use candle_gru::{CallOptions, Error, Gru, GruConfig, GruError, UseCudnn};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;

fn gru(config: GruConfig, input_dim: usize) -> Gru {
    common::initialized(config, input_dim, DType::F32)
}

fn x(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

fn gru_err(r: candle_gru::candle::Result<impl std::fmt::Debug>) -> GruError {
    match r {
        Err(Error::Gru(e)) => e,
        other => panic!("expected a typed GRU error, got {other:?}"),
    }
}

#[test]
fn wrong_input_rank() {
    let e = gru_err(gru(GruConfig::new(3), 4).call(&x(&[2, 4]), CallOptions::default()));
    match &e {
        GruError::Shape {
            what,
            expected,
            got,
        } => {
            assert_eq!(what, "inputs");
            assert!(expected.contains("rank 3"), "{expected}");
            assert_eq!(got, "[2, 4]");
        }
        other => panic!("{other:?}"),
    }
    // Module::forward reports it too, as a candle error carrying the message.
    let msg = gru(GruConfig::new(3), 4)
        .forward(&x(&[2, 4]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("rank 3"), "{msg}");
}

#[test]
fn feature_size_not_matching_built_weights() {
    let e = gru_err(gru(GruConfig::new(3), 4).call(&x(&[2, 5, 6]), CallOptions::default()));
    assert!(
        matches!(&e, GruError::Shape { expected, got, .. } if expected.contains("4") && got == "[2, 5, 6]"),
        "{e}"
    );
}

#[test]
fn mask_of_wrong_shape_and_dtype() {
    let g = gru(GruConfig::new(3), 4);
    let inputs = x(&[2, 5, 4]);
    let bad_shape = Tensor::ones((2, 4), DType::U8, &Device::Cpu).unwrap();
    let e = gru_err(g.call(
        &inputs,
        CallOptions {
            mask: Some(&bad_shape),
            ..Default::default()
        },
    ));
    assert!(
        matches!(&e, GruError::Shape { what, expected, got } if what == "mask" && expected.contains("[2, 5]") && got == "[2, 4]"),
        "{e}"
    );
    let bad_dtype = Tensor::ones((2, 5), DType::F32, &Device::Cpu).unwrap();
    let e = gru_err(g.call(
        &inputs,
        CallOptions {
            mask: Some(&bad_dtype),
            ..Default::default()
        },
    ));
    assert!(
        matches!(&e, GruError::DType { what, expected, got } if what == "mask" && expected.contains("U8") && got == "F32"),
        "{e}"
    );
}

#[test]
fn initial_state_of_wrong_shape() {
    let g = gru(GruConfig::new(3), 4);
    let h0 = x(&[2, 4]);
    let e = gru_err(g.call(
        &x(&[2, 5, 4]),
        CallOptions {
            initial_state: Some(&h0),
            ..Default::default()
        },
    ));
    assert!(
        matches!(&e, GruError::Shape { what, expected, got } if what == "initial_state" && expected.contains("[2, 3]") && got == "[2, 4]"),
        "{e}"
    );
}

#[test]
fn stateful_call_with_another_batch_size() {
    let mut c = GruConfig::new(3);
    c.stateful = true;
    let g = gru(c, 4);
    g.forward(&x(&[2, 5, 4])).unwrap();
    let e = gru_err(g.call(&x(&[3, 5, 4]), CallOptions::default()));
    assert_eq!(
        e,
        GruError::StatefulBatch {
            expected: 2,
            got: 3
        }
    );
    // reset_states keeps the batch size fixed, like Keras.
    g.reset_states();
    assert!(g.forward(&x(&[3, 5, 4])).is_err());
    assert!(g.forward(&x(&[2, 5, 4])).is_ok());
}

#[test]
fn mixed_dtypes() {
    let g = gru(GruConfig::new(3), 4);
    let inputs = Tensor::zeros((2, 5, 4), DType::F64, &Device::Cpu).unwrap();
    let e = gru_err(g.call(&inputs, CallOptions::default()));
    assert!(
        matches!(&e, GruError::DType { what, expected, got } if what == "inputs" && expected.contains("F32") && got == "F64"),
        "{e}"
    );
    let h0 = Tensor::zeros((2, 3), DType::F64, &Device::Cpu).unwrap();
    let e = gru_err(g.call(
        &x(&[2, 5, 4]),
        CallOptions {
            initial_state: Some(&h0),
            ..Default::default()
        },
    ));
    assert!(
        matches!(&e, GruError::DType { what, .. } if what == "initial_state"),
        "{e}"
    );
    // Weights of two dtypes.
    let k = Tensor::zeros((4, 9), DType::F32, &Device::Cpu).unwrap();
    let r = Tensor::zeros((3, 9), DType::F64, &Device::Cpu).unwrap();
    let b = Tensor::zeros((2, 9), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        Gru::from_weights(GruConfig::new(3), k, r, Some(b)),
        Err(Error::Gru(GruError::DType { .. }))
    ));
}

#[test]
fn units_zero() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let e = gru_err(Gru::new(GruConfig::new(0), 4, vb));
    assert!(
        matches!(&e, GruError::InvalidConfig { key, expected, got } if key == "units" && expected.contains("positive") && got == "0"),
        "{e}"
    );
    assert!(GruConfig::from_keras_json(&json!({"units": 0})).is_err());
    assert!(GruConfig::from_keras_json(&json!({"units": -2})).is_err());
}

#[test]
fn unknown_config_key_and_unknown_activation() {
    let e = GruConfig::from_keras_json(&json!({"units": 2, "bogus": true})).unwrap_err();
    assert_eq!(
        e,
        GruError::UnknownConfigKey {
            key: "bogus".into()
        }
    );
    assert!(e.to_string().contains("bogus"));
    let e = GruConfig::from_keras_json(&json!({"units": 2, "recurrent_activation": "sigmoidd"}))
        .unwrap_err();
    assert!(
        matches!(&e, GruError::UnknownIdentifier { kind: "activation", key, got } if key == "recurrent_activation" && got.contains("sigmoidd")),
        "{e}"
    );
}

#[test]
fn force_cudnn_on_a_cpu_tensor_names_the_condition() {
    let mut c = GruConfig::new(3);
    c.use_cudnn = UseCudnn::Force;
    let g = gru(c, 4);
    let e = gru_err(g.call(&x(&[2, 5, 4]), CallOptions::default()));
    match &e {
        GruError::CudnnUnavailable { failed } => {
            assert!(
                failed.iter().any(|f| f.contains("device is CUDA")),
                "{failed:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("device is CUDA"));
    // Auto on the CPU falls back to the fused CPU kernels and says why not cuDNN.
    let g = gru(GruConfig::new(3), 4);
    let out = g.call(&x(&[2, 5, 4]), CallOptions::default()).unwrap();
    assert_eq!(out.dispatch.path, candle_gru::ExecPath::Fused);
    assert!(
        out.dispatch.explain().contains("not on a CUDA device"),
        "{}",
        out.dispatch.explain()
    );
}

#[test]
fn weights_of_wrong_shape_from_a_checkpoint() {
    let mut ts = std::collections::HashMap::new();
    ts.insert(
        "kernel".to_string(),
        Tensor::zeros((5, 9), DType::F32, &Device::Cpu).unwrap(),
    );
    let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
    let e = gru_err(Gru::new(GruConfig::new(3), 4, vb));
    assert!(
        matches!(&e, GruError::Shape { what, expected, .. } if what.contains("kernel") && expected.contains("[4, 9]")),
        "{e}"
    );
    // Wrong bias form: reset_before layer given a (2, 3u) bias.
    let mut c = GruConfig::new(3);
    c.reset_after = false;
    let k = Tensor::zeros((4, 9), DType::F32, &Device::Cpu).unwrap();
    let r = Tensor::zeros((3, 9), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros((2, 9), DType::F32, &Device::Cpu).unwrap();
    let e = gru_err(Gru::from_weights(c, k, r, Some(b)));
    assert!(
        matches!(&e, GruError::Shape { what, expected, got } if what == "bias" && expected == "[9]" && got == "[2, 9]"),
        "{e}"
    );
}

#[test]
fn empty_sequences_and_integer_inputs() {
    let g = gru(GruConfig::new(3), 4);
    assert!(matches!(
        g.call(&x(&[2, 0, 4]), CallOptions::default()),
        Err(Error::Gru(GruError::Shape { .. }))
    ));
    let ints = Tensor::zeros((2, 3, 4), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        g.call(&ints, CallOptions::default()),
        Err(Error::Gru(GruError::DType { .. }))
    ));
}
