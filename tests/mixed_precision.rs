//! Keras' mixed precision policies (`mixed_float16`, `mixed_bfloat16`) on the CPU: the
//! inputs and states a mixed layer takes and the errors for others, a `.keras` model of
//! mixed layers (tests/data/mixed), stacks and Bidirectional. The Keras cases themselves
//! and the mixed-equals-half check are device bodies (tests/suite/mixed.rs), run on the CPU
//! by tests/device_suite.rs and on a GPU by tests/gpu_cudnn.rs.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::KerasModel;
use candle_gru::candle::{Bidirectional, GruStack, MergeMode, StackLayer};
use candle_gru::{CallOptions, Error, ExecPath, Gru, GruConfig, GruError};
use common::{candle_dtype, eps, flat, max_diff, numbers, read_mixed};
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mixed")
        .join(name)
}

fn mixed_layer(units: usize, input: usize, extra: &str) -> Gru {
    let cfg = GruConfig::from_keras_str(&format!(
        r#"{{"units": {units}, "dtype": "mixed_float16"{extra}}}"#
    ))
    .unwrap();
    common::layer(&cfg, input, DType::F32, &Device::Cpu)
}

#[test]
fn mixed_inputs_state_and_errors() {
    let dev = Device::Cpu;
    let gru = mixed_layer(4, 3, r#", "stateful": true, "return_state": true"#);
    let x = common::tensor(&[2, 5, 3], 1.0, DType::F32, &dev);
    let first = gru.call(&x, CallOptions::default()).unwrap();
    let s1 = first.state.unwrap();
    assert_eq!(s1.dtype(), DType::F16);
    assert_eq!(
        flat(&gru.states().unwrap()),
        flat(&s1),
        "kept state, in f16"
    );
    // The second call continues from the kept state; the same state given as an initial
    // state, in f16 or in f32 (cast exactly back to f16), gives the same output.
    let second = gru.call(&x, CallOptions::default()).unwrap().output;
    for h0 in [s1.clone(), s1.to_dtype(DType::F32).unwrap()] {
        let opts = CallOptions {
            initial_state: Some(&h0),
            ..Default::default()
        };
        let again = gru.call(&x, opts).unwrap().output;
        assert_eq!(
            flat(&again),
            flat(&second),
            "initial state in {:?}",
            h0.dtype()
        );
    }
    let explained = gru.explain_dispatch(&x, CallOptions::default()).unwrap();
    assert_eq!(explained.path, ExecPath::Fused, "f16 on the fused kernels");
    // Neither the compute nor the variables' dtype: a typed error naming both.
    for dtype in [DType::F64, DType::BF16] {
        let input = x.to_dtype(dtype).unwrap();
        match gru.call(&input, CallOptions::default()) {
            Err(Error::Gru(GruError::DType {
                what,
                expected,
                got,
            })) => {
                assert_eq!(what, "inputs");
                assert!(
                    expected.contains("F16") && expected.contains("F32"),
                    "{expected}"
                );
                assert_eq!(got, format!("{dtype:?}"));
            }
            other => panic!("expected a dtype error, got {other:?}"),
        }
    }
    let h0 = common::tensor(&[2, 4], 2.0, DType::F32, &dev);
    let h64 = h0.to_dtype(DType::F64).unwrap();
    let bad_h0 = CallOptions {
        initial_state: Some(&h64),
        ..Default::default()
    };
    assert!(matches!(
        gru.call(&x, bad_h0),
        Err(Error::Gru(GruError::DType { what, .. })) if what == "initial_state"
    ));
    // A plain float32 layer still takes float32 only.
    let plain = common::layer(&GruConfig::new(4), 3, DType::F32, &dev);
    assert_eq!(plain.compute_dtype(), DType::F32);
    assert!(plain
        .call(&x.to_dtype(DType::F16).unwrap(), CallOptions::default())
        .is_err());
}

#[test]
fn mixed_keras_model_file_runs_in_float16() {
    let case = read_mixed("mixed_float16_masking_gru_dense.json");
    let shape: Vec<usize> = numbers(&case["input_shape"])
        .iter()
        .map(|&d| d as usize)
        .collect();
    let x = Tensor::from_vec(numbers(&case["inputs"]), shape.as_slice(), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let keras = data("mixed_float16_masking_gru_dense.keras");
    let from_archive = KerasModel::load(&keras, DType::F32, &Device::Cpu).unwrap();
    let config = KerasModel::archive_config(&keras).unwrap();
    let h5 = data("mixed_float16_masking_gru_dense.weights.h5");
    let from_h5 = KerasModel::load_weights_h5(&config, &h5, DType::F32, &Device::Cpu).unwrap();
    let want_dtype = candle_dtype(case["output_dtype"].as_str().unwrap());
    for model in [from_archive, from_h5] {
        let dtypes: Vec<Option<DType>> = model
            .layers
            .iter()
            .map(|(_, l)| l.compute_dtype())
            .collect();
        assert_eq!(dtypes, [None, None, Some(DType::F16), Some(DType::F16)]);
        let out = model.call(&x, None).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dtype(), want_dtype);
        let err = max_diff(&flat(&out[0]), &numbers(&case["expected"]));
        let scale = numbers(&case["expected"])
            .iter()
            .fold(1f64, |m, v| m.max(v.abs()));
        println!("mixed model: max error {err:.3e} (scale {scale:.2})");
        assert!(err <= 2.0 * eps(DType::F16) * scale, "error {err:.3e}");
    }
}

#[test]
fn stacks_autocast_between_layers_and_bidirectional_directions_agree() {
    let dev = Device::Cpu;
    let first = mixed_layer(4, 3, r#", "return_sequences": true"#);
    let second = common::layer(&GruConfig::new(2), 4, DType::F32, &dev);
    let stack = GruStack::new(vec![
        StackLayer::Gru(Box::new(first)),
        StackLayer::Gru(Box::new(second)),
    ])
    .unwrap();
    let x = common::tensor(&[2, 5, 3], 1.0, DType::F32, &dev);
    let out = stack.call(&x, None, None, false).unwrap();
    assert_eq!(
        out.output.dtype(),
        DType::F32,
        "the float32 layer computes in float32"
    );
    // The first layer still checks the stack's own input.
    assert!(stack
        .call(&x.to_dtype(DType::F64).unwrap(), None, None, false)
        .is_err());
    let mut backwards = GruConfig::new(4);
    backwards.go_backwards = true;
    let fw = mixed_layer(4, 3, "");
    let bw = common::layer(&backwards, 3, DType::F32, &dev);
    match Bidirectional::from_layers(fw, bw, MergeMode::Concat) {
        Err(Error::Gru(GruError::InvalidConfig { key, expected, got })) => {
            assert_eq!(key, "backward_layer.compute dtype");
            assert!(
                expected.contains("F16") && got.contains("F32"),
                "{expected} / {got}"
            );
        }
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
    let fw = mixed_layer(4, 3, "");
    let bw = mixed_layer(4, 3, r#", "go_backwards": true"#);
    let bi = Bidirectional::from_layers(fw, bw, MergeMode::Concat).unwrap();
    let out = bi.call(&x, None, None, false).unwrap();
    assert_eq!(out.outputs[0].dtype(), DType::F16);
    assert_eq!(out.outputs[0].dims(), &[2, 8]);
}
