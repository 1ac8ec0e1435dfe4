//! Fine-tune a Keras speech model with CTC: keras.io's DeepSpeech2 model (a small one, read
//! from its `.keras` file: Conv2D over a spectrogram, bidirectional GRUs, a per-frame
//! softmax) learns to transcribe synthetic spectrograms, trained with
//! [`gru_candle::ctc::ctc_loss`] and read out with
//! [`gru_candle::ctc::ctc_greedy_decode`]. `examples/speech_ctc.rs` runs it.
//!
//! **The task.** An utterance is 2..=4 "phonemes" (labels 0..=3; the model's fifth class is
//! the blank, last, as keras.io's DeepSpeech2 has it). Each phoneme sounds for 2..=4
//! frames as energy in its own band of three of the 12 frequency bins, with silence of
//! 1..=3 frames between phonemes (at least 3 before a repeated one, which CTC can only
//! tell apart by the blank between them), and noise on every bin. Utterances are padded to
//! the longest of their batch.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Optimizer, VarMap};
use gru_candle::ctc::{ctc_beam_search_decode, ctc_greedy_decode, ctc_loss};
use gru_candle::io::keras::{KerasModel, ModelCall};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// Frequency bins of a frame (the model's input width).
pub const BINS: usize = 12;
/// Phoneme labels 0..PHONEMES; the blank is class `PHONEMES`.
pub const PHONEMES: usize = 4;

/// One synthetic utterance.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// (frames, BINS) values, row-major.
    pub frames: Vec<f32>,
    /// Its labels.
    pub labels: Vec<u32>,
}

impl Utterance {
    /// The number of frames.
    pub fn len(&self) -> usize {
        self.frames.len() / BINS
    }

    /// Whether it has no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Draws one utterance.
pub fn utterance(rng: &mut StdRng) -> Utterance {
    let count = rng.random_range(2..=4);
    let mut labels: Vec<u32> = Vec::with_capacity(count);
    let mut bands: Vec<Option<usize>> = Vec::new();
    for k in 0..count {
        let label = rng.random_range(0..PHONEMES as u32);
        let gap = match labels.last() {
            Some(&prev) if prev == label => 3,
            _ if k == 0 => rng.random_range(0..=2),
            _ => rng.random_range(1..=3),
        };
        bands.extend(std::iter::repeat_n(None, gap));
        bands.extend(std::iter::repeat_n(
            Some(label as usize),
            rng.random_range(2..=4),
        ));
        labels.push(label);
    }
    bands.extend(std::iter::repeat_n(None, rng.random_range(0..=2)));
    let mut frames = Vec::with_capacity(bands.len() * BINS);
    for band in bands {
        for bin in 0..BINS {
            let on = band.is_some_and(|p| bin / 3 == p);
            frames.push(if on { 1.0 } else { 0.0 } + 0.3 * gauss(rng));
        }
    }
    Utterance { frames, labels }
}

/// A padded batch: (batch, frames, BINS) spectrograms, (batch, labels) targets, the label
/// and output frame counts (the model halves the frames: its first convolution has stride 2,
/// `same` padding).
pub struct Batch {
    /// (batch, longest, BINS).
    pub x: Tensor,
    /// (batch, most labels) u32, padded with 0.
    pub targets: Tensor,
    /// Labels per utterance.
    pub target_length: Vec<usize>,
    /// Output frames per utterance: `ceil(frames / 2)`.
    pub output_length: Vec<usize>,
}

/// A standard normal draw (Box-Muller).
fn gauss(rng: &mut StdRng) -> f32 {
    let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// Pads utterances into a batch.
pub fn batch(items: &[&Utterance], device: &Device) -> candle_core::Result<Batch> {
    let longest = items.iter().map(|u| u.len()).max().unwrap_or(1);
    let most = items.iter().map(|u| u.labels.len()).max().unwrap_or(1);
    let mut x = vec![0f32; items.len() * longest * BINS];
    let mut t = vec![0u32; items.len() * most];
    for (b, u) in items.iter().enumerate() {
        x[b * longest * BINS..][..u.frames.len()].copy_from_slice(&u.frames);
        t[b * most..][..u.labels.len()].copy_from_slice(&u.labels);
    }
    Ok(Batch {
        x: Tensor::from_vec(x, (items.len(), longest, BINS), device)?,
        targets: Tensor::from_vec(t, (items.len(), most), device)?,
        target_length: items.iter().map(|u| u.labels.len()).collect(),
        output_length: items.iter().map(|u| u.len().div_ceil(2)).collect(),
    })
}

/// The run's settings.
#[derive(Debug, Clone)]
pub struct SpeechConfig {
    /// Training utterances.
    pub train_size: usize,
    /// Held-out utterances.
    pub test_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Utterances per step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed of the data, the batch order and the model's dropout.
    pub seed: u64,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        SpeechConfig {
            train_size: 800,
            test_size: 200,
            epochs: 30,
            batch_size: 32,
            learning_rate: 1e-2,
            seed: 7,
        }
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, Copy)]
pub struct SpeechEpoch {
    /// 1-based.
    pub epoch: usize,
    /// Mean CTC loss per utterance over the epoch's steps.
    pub loss: f64,
    /// Held-out utterances transcribed exactly (greedy decoding).
    pub test_exact: f64,
    /// Seconds since training started.
    pub elapsed_s: f64,
}

/// What a run leaves: the epochs and the tuned model (its variables in `varmap`).
pub struct SpeechReport {
    /// One entry per epoch.
    pub epochs: Vec<SpeechEpoch>,
    /// The tuned model (`model.save(path)` writes it back as `.keras`).
    pub model: KerasModel,
    /// Its variables.
    pub varmap: VarMap,
    /// The held-out utterances the epochs were scored on.
    pub test_set: Vec<Utterance>,
}

/// The per-frame log-probabilities of the model for a batch (its softmax output, logged;
/// CTC's log-softmax leaves them as they are).
fn log_probs(model: &KerasModel, x: &Tensor, training: bool) -> gru_candle::Result<Tensor> {
    let call = ModelCall {
        mask: None,
        training,
    };
    let out = model.call_with(x, call)?;
    Ok(out.outputs[0].clamp(1e-7f32, 1.0)?.log()?)
}

/// How transcriptions are read from the per-frame distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// The best class of each frame (`ctc_greedy_decode`).
    Greedy,
    /// The most probable labeling a beam of this width finds (`ctc_beam_search_decode`).
    Beam(usize),
}

/// The share of utterances transcribed exactly.
pub fn exact(
    model: &KerasModel,
    set: &[Utterance],
    device: &Device,
    decoding: Decoding,
) -> gru_candle::Result<f64> {
    let mut right = 0usize;
    for chunk in set.chunks(64) {
        let items: Vec<&Utterance> = chunk.iter().collect();
        let b = batch(&items, device)?;
        let lp = log_probs(model, &b.x, false)?;
        let decoded = match decoding {
            Decoding::Greedy => ctc_greedy_decode(&lp, &b.output_length, true, PHONEMES)?,
            Decoding::Beam(width) => {
                let mut best = ctc_beam_search_decode(&lp, &b.output_length, width, 1, PHONEMES)?;
                best.swap_remove(0)
            }
        };
        right += decoded
            .labels
            .iter()
            .zip(chunk)
            .filter(|(d, u)| **d == u.labels)
            .count();
    }
    Ok(right as f64 / set.len() as f64)
}

/// Fine-tunes the DeepSpeech2 model of `keras_file` on the task; `on_epoch` sees each
/// epoch's numbers as they come.
pub fn train(
    keras_file: &Path,
    cfg: &SpeechConfig,
    device: &Device,
    mut on_epoch: impl FnMut(&SpeechEpoch),
) -> gru_candle::Result<SpeechReport> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let train_set: Vec<Utterance> = (0..cfg.train_size).map(|_| utterance(&mut rng)).collect();
    let test_set: Vec<Utterance> = (0..cfg.test_size).map(|_| utterance(&mut rng)).collect();
    let varmap = VarMap::new();
    let model = KerasModel::load_trainable(keras_file, DType::F32, device, &varmap)?;
    // The Dropout layers and the data draw from the one seed: the run repeats.
    model.reseed(cfg.seed)?;
    let mut opt = crate::demo::adam(&varmap, cfg.learning_rate)?;
    let start = Instant::now();
    let mut epochs = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let mut order: Vec<usize> = (0..train_set.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let (mut loss_sum, mut steps) = (0.0, 0);
        for idx in order.chunks(cfg.batch_size) {
            let items: Vec<&Utterance> = idx.iter().map(|&i| &train_set[i]).collect();
            let b = batch(&items, device)?;
            let lp = log_probs(&model, &b.x, true)?;
            let losses = ctc_loss(
                &b.targets,
                &lp,
                &b.target_length,
                &b.output_length,
                PHONEMES,
            )?;
            let loss = losses.mean(D::Minus1)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            steps += 1;
        }
        let stats = SpeechEpoch {
            epoch,
            loss: loss_sum / steps as f64,
            test_exact: exact(&model, &test_set, device, Decoding::Greedy)?,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        on_epoch(&stats);
        epochs.push(stats);
    }
    Ok(SpeechReport {
        epochs,
        model,
        varmap,
        test_set,
    })
}
