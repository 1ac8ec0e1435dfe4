//! Fine-tune a Keras speech model with CTC: keras.io's DeepSpeech2 model (a small one,
//! `tests/data/models/deepspeech2_conv2d_bigru.keras`: Conv2D over a spectrogram of any
//! length, bidirectional GRUs, a per-frame softmax) learns to transcribe synthetic
//! spectrograms of 2..=4 "phonemes", trained with `ctc::ctc_loss` and read out with
//! `ctc::ctc_greedy_decode` (and, at the end, `ctc::ctc_beam_search_decode`); the tuned model is written back as a `.keras` file Keras
//! loads. Prints one line per epoch (CTC loss, held-out exact transcriptions) and a few
//! transcriptions.
//!
//! `cargo run --release --example speech_ctc`

use candle_core::Device;
use candle_gru::candle::ctc::ctc_greedy_decode;
use candle_gru::candle::io::keras::ModelCall;
use gru_support::speech::{batch, exact, train, utterance, Decoding, SpeechConfig, PHONEMES};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("tests/data/models/deepspeech2_conv2d_bigru.keras");
    let dev = Device::Cpu;
    let cfg = SpeechConfig::default();
    let report = train(&file, &cfg, &dev, |e| {
        println!(
            "epoch {:>2}  ctc loss {:.4}  held-out exact {:.1}%  {:.1}s",
            e.epoch,
            e.loss,
            100.0 * e.test_exact,
            e.elapsed_s
        )
    })?;
    let beam = exact(&report.model, &report.test_set, &dev, Decoding::Beam(16))?;
    println!(
        "held-out exact: greedy {:.1}%, beam search (width 16) {:.1}%",
        100.0 * report.epochs.last().map_or(0.0, |e| e.test_exact),
        100.0 * beam
    );
    let mut rng = StdRng::seed_from_u64(99);
    let fresh: Vec<_> = (0..5).map(|_| utterance(&mut rng)).collect();
    let b = batch(&fresh.iter().collect::<Vec<_>>(), &dev)?;
    let call = ModelCall {
        mask: None,
        training: false,
    };
    let probs = report.model.call_with(&b.x, call)?.outputs.remove(0);
    let decoded = ctc_greedy_decode(&probs.log()?, &b.output_length, true, PHONEMES)?;
    for (u, d) in fresh.iter().zip(&decoded.labels) {
        println!("{} frames, said {:?}, heard {:?}", u.len(), u.labels, d);
    }
    let out = root.join("target/speech_ctc");
    std::fs::create_dir_all(&out)?;
    report.model.save(&out.join("deepspeech2_tuned.keras"))?;
    println!("wrote {}", out.join("deepspeech2_tuned.keras").display());
    Ok(())
}
