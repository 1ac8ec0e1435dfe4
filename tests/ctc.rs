//! `ctc::ctc_loss` and `ctc::ctc_greedy_decode` against Keras 3.15.1's `keras.ops.ctc_loss`
//! and `keras.ops.ctc_decode` (TensorFlow backend; tests/data/ctc/ctc_cases.json, made by
//! scripts/make_ctc_cases.py): per-sample losses, their gradient with respect to the
//! logits, greedy and beam search labels and scores; typed errors for bad targets, lengths
//! and beam settings.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::ctc::{ctc_beam_search_decode, ctc_loss, CtcDecoded};
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
fn beam_search_matches_keras() {
    let worst = ctc_cases::check_beam(&Device::Cpu);
    println!("beam search scores within {worst:.1e} of Keras");
}

/// With a beam as wide as every labeling, each labeling's score is its log-probability:
/// minus its CTC loss.
#[test]
fn a_wide_beam_scores_labelings_by_their_ctc_loss() {
    let dev = &Device::Cpu;
    let logits = Tensor::randn(0f64, 1.5, (2, 6, 3), dev).unwrap();
    let lengths = [6, 4];
    let paths = ctc_beam_search_decode(&logits, &lengths, 1000, 5, 1).unwrap();
    for path in &paths {
        for (b, labels) in path.labels.iter().enumerate() {
            let mut row = labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>();
            let n = row.len();
            row.resize(6, 0);
            let target = Tensor::new(row.as_slice(), dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let one = logits.narrow(0, b, 1).unwrap();
            let loss = flat(&ctc_loss(&target, &one, &[n], &lengths[b..=b], 1).unwrap())[0];
            assert!(
                (path.scores[b] + loss).abs() < 1e-9,
                "{labels:?}: score {} vs loss {loss}",
                path.scores[b]
            );
        }
    }
    // Best first.
    for b in 0..2 {
        assert!(paths.windows(2).all(|w| w[0].scores[b] >= w[1].scores[b]));
    }
}

#[test]
fn bad_beam_settings_are_typed_errors() {
    let dev = &Device::Cpu;
    let logits = Tensor::zeros((2, 5, 4), DType::F32, dev).unwrap();
    let shape = |r: candle_gru::candle::Result<Vec<CtcDecoded>>| {
        matches!(r, Err(Error::Gru(GruError::Shape { .. })))
    };
    assert!(shape(ctc_beam_search_decode(&logits, &[5, 5], 0, 1, 0)));
    assert!(shape(ctc_beam_search_decode(&logits, &[5, 5], 3, 0, 0)));
    assert!(shape(ctc_beam_search_decode(&logits, &[5, 5], 3, 4, 0)));
    assert!(shape(ctc_beam_search_decode(&logits, &[5, 6], 3, 1, 0)));
    assert!(shape(ctc_beam_search_decode(&logits, &[5, 5], 3, 1, 4)));
    // One frame of two classes holds two labelings (none, and the one label).
    let short = Tensor::zeros((1, 1, 2), DType::F32, dev).unwrap();
    assert_eq!(
        ctc_beam_search_decode(&short, &[1], 5, 2, 0).unwrap().len(),
        2
    );
    assert!(shape(ctc_beam_search_decode(&short, &[1], 5, 3, 0)));
    // NaN or plus infinity; minus infinity is a zero probability.
    let nan = Tensor::new(&[[[0f32, f32::NAN]]], dev).unwrap();
    assert!(shape(ctc_beam_search_decode(&nan, &[1], 2, 1, 0)));
    let inf = Tensor::new(&[[[0f32, f32::INFINITY]]], dev).unwrap();
    assert!(shape(ctc_beam_search_decode(&inf, &[1], 2, 1, 0)));
    let nothing = Tensor::new(&[[[f32::NEG_INFINITY, f32::NEG_INFINITY]]], dev).unwrap();
    assert!(shape(ctc_beam_search_decode(&nothing, &[1], 2, 1, 0)));
    // Frames past a sample's length are not read.
    let padded = Tensor::new(&[[[0f32, -1.0], [f32::NAN, f32::NAN]]], dev).unwrap();
    assert!(ctc_beam_search_decode(&padded, &[1], 2, 1, 0).is_ok());
    let never = Tensor::new(&[[[0f32, f32::NEG_INFINITY, -0.5]]], dev).unwrap();
    let got = ctc_beam_search_decode(&never, &[1], 3, 2, 0).unwrap();
    assert_eq!((&got[0].labels[0], &got[1].labels[0]), (&vec![], &vec![2]));
    assert!(shape(ctc_beam_search_decode(&never, &[1], 3, 3, 0)));
    // A beam whose prefixes would not fit in memory.
    let long = Tensor::zeros((1, 300, 30), DType::F32, dev).unwrap();
    assert!(matches!(
        ctc_beam_search_decode(&long, &[300], usize::MAX, 1, 0),
        Err(Error::Gru(GruError::TooLarge { .. }))
    ));
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
