//! The CTC cases of tests/data/ctc (Keras 3.15.1's `keras.ops.ctc_loss` and
//! `keras.ops.ctc_decode`, greedy and beam search, made by scripts/make_ctc_cases.py),
//! checked on a device.

use super::{flat, max_diff};
use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::ctc::{ctc_beam_search_decode, ctc_greedy_decode, ctc_loss};
use gru_support::golden::Array;
use serde_json::Value;

/// The loss and greedy cases.
pub fn cases() -> Vec<Value> {
    all("cases")
}

/// The beam search cases.
pub fn beam_cases() -> Vec<Value> {
    all("beam_cases")
}

fn all(key: &str) -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ctc/ctc_cases.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all[key].as_array().unwrap().clone()
}

fn tensor(v: &Value, dtype: DType, dev: &Device) -> Tensor {
    Array::from_json(v).unwrap().tensor(dtype, dev).unwrap()
}

fn lengths(v: &Value) -> Vec<usize> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Every case's losses (relative `loss_tol`) and gradients (`grad_tol`) on `dev` against
/// Keras', and f64 logits against f32 ones; returns the largest gradient error.
pub fn check_losses(dev: &Device, loss_tol: f64, grad_tol: f64) -> f64 {
    let mut worst: f64 = 0.0;
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let logits = Var::from_tensor(&tensor(&c["logits"], DType::F32, dev)).unwrap();
        let target = tensor(&c["target"], DType::I64, dev);
        let blank = c["mask_index"].as_u64().unwrap() as usize;
        let (tl, ol) = (lengths(&c["target_length"]), lengths(&c["output_length"]));
        let loss = ctc_loss(&target, logits.as_tensor(), &tl, &ol, blank).unwrap();
        let keras: Vec<f64> = serde_json::from_value(c["loss"].clone()).unwrap();
        let ours = flat(&loss);
        let grads = loss.sum_all().unwrap().backward().unwrap();
        let g = grads.get(logits.as_tensor()).unwrap();
        let keras_g = tensor(&c["gradient"], DType::F64, &Device::Cpu);
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
                (o - kl).abs() <= loss_tol * kl.abs().max(1.0),
                "{name}: loss {ours:?} vs Keras {keras:?}"
            );
            let err = max_diff(&flat(&row), &flat(&keras_row));
            worst = worst.max(err);
            assert!(
                err < grad_tol,
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
            rel.fold(0.0, f64::max) < loss_tol.max(1e-5),
            "{name}: f64 {loss64:?} vs f32 {ours:?}"
        );
    }
    worst
}

/// Every case's greedy labels and scores on `dev` against Keras'.
pub fn check_greedy(dev: &Device) {
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let logits = tensor(&c["logits"], DType::F32, dev);
        let blank = c["mask_index"].as_u64().unwrap() as usize;
        let ol = lengths(&c["output_length"]);
        let d = ctc_greedy_decode(&logits, &ol, true, blank).unwrap();
        let frames = logits.dim(1).unwrap();
        let dense = d.dense(frames, dev).unwrap();
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

/// Every beam search case's labelings (each rank, Keras' dense form) and scores on `dev`
/// against Keras'; returns the largest score error.
pub fn check_beam(dev: &Device) -> f64 {
    let mut worst: f64 = 0.0;
    for c in beam_cases() {
        let name = c["name"].as_str().unwrap();
        let logits = tensor(&c["logits"], DType::F32, dev);
        let blank = c["mask_index"].as_u64().unwrap() as usize;
        let ol = lengths(&c["output_length"]);
        let width = c["beam_width"].as_u64().unwrap() as usize;
        let top = c["top_paths"].as_u64().unwrap() as usize;
        let paths = ctc_beam_search_decode(&logits, &ol, width, top, blank).unwrap();
        assert_eq!(paths.len(), top, "{name}");
        let frames = logits.dim(1).unwrap();
        let keras_scores = tensor(&c["scores"], DType::F64, &Device::Cpu);
        for (k, path) in paths.iter().enumerate() {
            let dense = path.dense(frames, dev).unwrap();
            let keras = Array::from_json(&c["decoded"][k]).unwrap().data;
            assert_eq!(flat(&dense), keras, "{name}: path {k}");
            let keras = flat(&keras_scores.narrow(1, k, 1).unwrap());
            let err = max_diff(&path.scores, &keras);
            assert!(
                err < 1e-4,
                "{name}: path {k}: scores {:?} vs {keras:?}",
                path.scores
            );
            worst = worst.max(err);
        }
    }
    worst
}
