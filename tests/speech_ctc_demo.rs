//! The speech example's run (`examples/speech_ctc.rs`): keras.io's DeepSpeech2 model, read
//! from its `.keras` file, fine-tuned with CTC on synthetic spectrograms, transcribes
//! held-out utterances; the run repeats exactly, and the tuned model written back reads
//! back to the same outputs.

use candle_core::{DType, Device};
use candle_gru::candle::io::keras::KerasModel;
use gru_support::speech::{batch, exact, train, utterance, Decoding, SpeechConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;

#[test]
fn ctc_fine_tuning_transcribes_held_out_utterances() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("tests/data/models/deepspeech2_conv2d_bigru.keras");
    let dev = Device::Cpu;
    let cfg = SpeechConfig::default();
    let report = train(&file, &cfg, &dev, |_| {}).unwrap();
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    // Seeds 1..=7 end between 97.5% and 99.5%.
    assert!(
        last.test_exact >= 0.9,
        "held-out exact {:.3}",
        last.test_exact
    );
    // Beam search reads the same distributions at least about as well.
    let beam = exact(&report.model, &report.test_set, &dev, Decoding::Beam(16)).unwrap();
    assert!(beam >= 0.9, "held-out exact with beam search {beam:.3}");
    assert!(
        last.loss < 0.5 * first.loss,
        "{} -> {}",
        first.loss,
        last.loss
    );
    // Written back and read again: the same outputs.
    let out = std::env::temp_dir().join(format!("speech_ctc_{}.keras", std::process::id()));
    report.model.save(&out).unwrap();
    let again = KerasModel::load(&out, DType::F32, &dev).unwrap();
    let _ = std::fs::remove_file(&out);
    let mut rng = StdRng::seed_from_u64(3);
    let items: Vec<_> = (0..4).map(|_| utterance(&mut rng)).collect();
    let b = batch(&items.iter().collect::<Vec<_>>(), &dev).unwrap();
    let (x, y) = (
        report.model.call(&b.x, None).unwrap().remove(0),
        again.call(&b.x, None).unwrap().remove(0),
    );
    let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}
