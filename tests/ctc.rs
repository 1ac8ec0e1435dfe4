//! `ctc::ctc_loss` and `ctc::ctc_greedy_decode` against Keras 3.15.1's `keras.ops.ctc_loss`
//! and `keras.ops.ctc_decode` (TensorFlow backend; tests/data/ctc/ctc_cases.json, made by
//! scripts/make_ctc_cases.py): per-sample losses, their gradient with respect to the
//! logits, greedy labels and scores; typed errors for bad targets and lengths.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::ctc::{ctc_greedy_decode, ctc_loss};
use candle_gru::candle::Error;
use candle_gru::GruError;
use common::{flat, max_diff};
use gru_support::golden::Array;
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ctc/ctc_cases.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all["cases"].as_array().unwrap().clone()
}

fn tensor(v: &Value, dtype: DType) -> Tensor {
    Array::from_json(v)
        .unwrap()
        .tensor(dtype, &Device::Cpu)
        .unwrap()
}

fn lengths(v: &Value) -> Vec<usize> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn losses_and_gradients_match_keras() {
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let logits = Var::from_tensor(&tensor(&c["logits"], DType::F32)).unwrap();
        let target = tensor(&c["target"], DType::I64);
        let blank = c["mask_index"].as_u64().unwrap() as usize;
        let (tl, ol) = (lengths(&c["target_length"]), lengths(&c["output_length"]));
        let loss = ctc_loss(&target, logits.as_tensor(), &tl, &ol, blank).unwrap();
        let keras: Vec<f64> = serde_json::from_value(c["loss"].clone()).unwrap();
        let ours = flat(&loss);
        let grads = loss.sum_all().unwrap().backward().unwrap();
        let g = grads.get(logits.as_tensor()).unwrap();
        let keras_g = tensor(&c["gradient"], DType::F64);
        for (k, (o, kl)) in ours.iter().zip(&keras).enumerate() {
            let (row, keras_row) = (g.get(k).unwrap(), keras_g.get(k).unwrap());
            // A target its frames cannot hold: Keras' backends disagree on its loss
            // (TensorFlow about 710 here, numpy and JAX 1e5); here about 705, with a
            // finite gradient.
            if *kl > 700.0 {
                assert!(*o > 700.0, "{name}: impossible sample {k}: loss {o}");
                assert!(
                    flat(&row).iter().all(|v| v.is_finite()),
                    "{name}: sample {k}"
                );
                continue;
            }
            assert!(
                (o - kl).abs() <= 2e-5 * kl.abs().max(1.0),
                "{name}: loss {ours:?} vs Keras {keras:?}"
            );
            let err = max_diff(&flat(&row), &flat(&keras_row));
            assert!(
                err < 2e-6,
                "{name}: sample {k}: gradient {err:.2e} off Keras"
            );
        }
        // f64 logits give the same losses.
        let wide = logits.as_tensor().to_dtype(DType::F64).unwrap();
        let loss64 = flat(&ctc_loss(&target, &wide, &tl, &ol, blank).unwrap());
        let rel = loss64
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs() / b.max(1.0));
        assert!(
            rel.fold(0.0, f64::max) < 1e-5,
            "{name}: f64 {loss64:?} vs f32 {ours:?}"
        );
    }
}

#[test]
fn greedy_decoding_matches_keras() {
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let logits = tensor(&c["logits"], DType::F32);
        let blank = c["mask_index"].as_u64().unwrap() as usize;
        let ol = lengths(&c["output_length"]);
        let d = ctc_greedy_decode(&logits, &ol, true, blank).unwrap();
        let frames = logits.dim(1).unwrap();
        let dense = d.dense(frames, &Device::Cpu).unwrap();
        let keras = Array::from_json(&c["greedy_decoded"]).unwrap().data;
        assert_eq!(flat(&dense), keras, "{name}: decoded");
        let keras: Vec<f64> = serde_json::from_value(c["greedy_scores"].clone()).unwrap();
        assert!(
            max_diff(&d.scores, &keras) < 1e-5,
            "{name}: scores {:?}",
            d.scores
        );
    }
}

#[test]
fn bad_targets_and_lengths_are_typed_errors() {
    let dev = &Device::Cpu;
    let logits = Tensor::zeros((2, 5, 4), DType::F32, dev).unwrap();
    let target = Tensor::new(&[[1i64, 2], [3, 0]], dev).unwrap();
    let shape = |r: candle_gru::candle::Result<Tensor>| {
        matches!(r, Err(Error::Gru(GruError::Shape { .. })))
    };
    // The blank as a label, a label past the classes, too many labels or frames.
    let blank_label = Tensor::new(&[[1i64, 0], [3, 0]], dev).unwrap();
    assert!(shape(ctc_loss(&blank_label, &logits, &[2, 1], &[5, 5], 0)));
    let past = Tensor::new(&[[1i64, 4], [3, 0]], dev).unwrap();
    assert!(shape(ctc_loss(&past, &logits, &[2, 1], &[5, 5], 0)));
    assert!(shape(ctc_loss(&target, &logits, &[3, 1], &[5, 5], 0)));
    assert!(shape(ctc_loss(&target, &logits, &[2, 1], &[6, 5], 0)));
    assert!(shape(ctc_loss(&target, &logits, &[2, 1], &[0, 5], 0)));
    assert!(shape(ctc_loss(&target, &logits, &[2], &[5, 5], 0)));
    assert!(shape(ctc_loss(&target, &logits, &[2, 1], &[5, 5], 4)));
    // Float labels, integer logits.
    let float_target = target.to_dtype(DType::F32).unwrap();
    assert!(shape(ctc_loss(&float_target, &logits, &[2, 1], &[5, 5], 0)));
    let int_logits = logits.to_dtype(DType::I64).unwrap();
    assert!(matches!(
        ctc_loss(&target, &int_logits, &[2, 1], &[5, 5], 0),
        Err(Error::Gru(GruError::DType { .. }))
    ));
    // Padding after a row's length is ignored, whatever it holds.
    let padded = Tensor::new(&[[1i64, 2], [3, 99]], dev).unwrap();
    let a = ctc_loss(&padded, &logits, &[2, 1], &[5, 5], 0).unwrap();
    let b = ctc_loss(&target, &logits, &[2, 1], &[5, 5], 0).unwrap();
    assert_eq!(flat(&a), flat(&b));
}
