//! Model benchmark: keras.io's DeepSpeech2 speech model (Conv2D front end, bidirectional
//! GRUs, a per-frame softmax) read from `.keras` files, inference and a CTC training step.
//!
//! `cargo run --release --example bench_models -- [--threads N] [--shape B,T,I,H]...
//! [--json PATH] [--min-time SECONDS] [--models DIR]`
//!
//! A shape is batch B, T spectrogram frames of I bins, GRUs of H units; the model of each
//! is `DIR/ds2_B_T_I_H.keras` (DIR: target/bench-models/models), written by
//! `scripts/bench_models.py`, which times Keras (TensorFlow backend) and PyTorch on the
//! same models and merges the rows. "forward" is inference; "train" is a training call
//! (BatchNormalization on the batch's statistics, dropout on), the CTC loss of random
//! targets (a quarter as many labels as output frames; the blank last), and the backward
//! pass to every variable (no optimizer step). Writes JSON rows
//! `{"impl","mode","B","T","I","H","threads","median_ms"}`; f32, medians after a warm-up.

use anyhow::Context;
use candle_core::{DType, Device, Tensor, D};
use candle_gru::candle::ctc::ctc_loss;
use candle_gru::candle::io::keras::{KerasModel, ModelCall};
use candle_nn::VarMap;
use std::path::PathBuf;

#[path = "common/bench.rs"]
mod bench;
#[path = "common/shape.rs"]
mod shape;
use bench::{median_ms, parse_args};
use shape::Shape;

/// The classes of the model's softmax (31 labels and the blank, last).
const CLASSES: usize = 32;

/// Random targets for a batch: `len` labels in 0..CLASSES-1 per sample.
fn targets(b: usize, len: usize, dev: &Device) -> anyhow::Result<Tensor> {
    let labels: Vec<u32> = (0..b * len)
        .map(|k| ((k * 7919 + 13) % (CLASSES - 1)) as u32)
        .collect();
    Ok(Tensor::from_vec(labels, (b, len), dev)?)
}

fn run(s: Shape, dir: &std::path::Path, min_time: std::time::Duration) -> anyhow::Result<[f64; 2]> {
    let dev = Device::Cpu;
    let file = dir.join(format!("ds2_{}_{}_{}_{}.keras", s.b, s.t, s.i, s.h));
    let model = KerasModel::load(&file, DType::F32, &dev)
        .with_context(|| format!("{} (written by scripts/bench_models.py)", file.display()))?;
    let x = Tensor::randn(0f32, 1.0, (s.b, s.t, s.i), &dev)?;
    let forward = median_ms(min_time, 50, || {
        model.call(&x, None)?;
        Ok(())
    })?;
    let varmap = VarMap::new();
    let tuned = KerasModel::load_trainable(&file, DType::F32, &dev, &varmap)?;
    tuned.reseed(1)?;
    let frames = s.t.div_ceil(2);
    let label_len = (frames / 4).max(1);
    let y = targets(s.b, label_len, &dev)?;
    let (tl, ol) = (vec![label_len; s.b], vec![frames; s.b]);
    let call = ModelCall {
        mask: None,
        training: true,
    };
    let train = median_ms(min_time, 50, || {
        let probs = tuned.call_with(&x, call)?.outputs.remove(0);
        let logp = probs.clamp(1e-7f32, 1.0)?.log()?;
        let loss = ctc_loss(&y, &logp, &tl, &ol, CLASSES - 1)?.mean(D::Minus1)?;
        loss.backward()?;
        Ok(())
    })?;
    Ok([forward, train])
}

fn main() -> anyhow::Result<()> {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-models/models");
    let a = parse_args(&["4,200,193,128"], |flag, value| match flag {
        "--models" => {
            dir = PathBuf::from(value.context("--models DIR")?);
            Ok(true)
        }
        _ => Ok(false),
    })?;
    // candle's CPU ops and gemm's pool read RAYON_NUM_THREADS; set it before any of them run.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let mut rows = Vec::new();
    println!(
        "{:<16} {:>8} {:>9} {:>9}",
        "B,T,I,H", "threads", "forward", "train"
    );
    for s in &a.shapes {
        let [forward, train] = run(*s, &dir, a.min_time)?;
        let shape = format!("{},{},{},{}", s.b, s.t, s.i, s.h);
        println!(
            "{shape:<16} {:>8} {forward:>7.1}ms {train:>7.1}ms",
            a.threads
        );
        for (mode, ms) in [("forward", forward), ("train", train)] {
            rows.push(
                serde_json::json!({"impl": "candle-gru", "mode": mode, "B": s.b, "T": s.t,
                "I": s.i, "H": s.h, "threads": a.threads, "median_ms": ms}),
            );
        }
    }
    if let Some(path) = a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
