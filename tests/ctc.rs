//! `ctc::ctc_loss` and `ctc::ctc_greedy_decode` against Keras 3.15.1's `keras.ops.ctc_loss`
//! and `keras.ops.ctc_decode` (TensorFlow backend; tests/data/ctc/ctc_cases.json, made by
//! scripts/make_ctc_cases.py): per-sample losses, their gradient with respect to the
//! logits, greedy labels and scores; typed errors for bad targets and lengths.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::ctc::ctc_loss;
use candle_gru::candle::Error;
use candle_gru::GruError;
use common::{ctc_cases, flat};

#[test]
fn losses_and_gradients_match_keras() {
    ctc_cases::check_losses(&Device::Cpu, 2e-5, 2e-6);
}

#[test]
fn greedy_decoding_matches_keras() {
    ctc_cases::check_greedy(&Device::Cpu);
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
