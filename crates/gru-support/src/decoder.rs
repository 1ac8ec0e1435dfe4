//! Train on whole sequences, decode one step at a time: an encoder-decoder that learns to
//! reverse a short sequence of digits. The decoder GRU trains with teacher forcing over
//! the whole target (one fused call per batch) and decodes greedily with its cell
//! ([`Gru::cell`]: the same weights, one [`GruCell`] step per token). `examples/seq2seq.rs`
//! runs it.
//!
//! **The task.** A source is 3..=6 digits (tokens 1..=10), right-padded with 0 to length
//! 6 and masked; the target is the digits reversed, then the end token. The decoder starts
//! from the encoder's final state and the start token.

use crate::demo::TrainConfig;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, Optimizer, VarBuilder, VarMap};
use gru_candle::{keras_variable, CallOptions, Gru, GruCell};
use gru_core::{GruConfig, Initializer, Num, ScalingPreset};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Longest source.
pub const MAX_LEN: usize = 6;
/// Shortest source.
pub const MIN_LEN: usize = 3;
/// The decoder's first input.
pub const START: u32 = 11;
/// The target's last token.
pub const END: u32 = 12;
/// Vocabulary: 0 padding, 1..=10 digits, start, end.
pub const VOCAB: usize = 13;

/// Examples of the task.
#[derive(Debug, Clone)]
pub struct Pairs {
    /// (n, MAX_LEN) u32 sources, 0-padded.
    pub source: Tensor,
    /// (n, MAX_LEN) u8: 1 where a source token is.
    pub source_mask: Tensor,
    /// (n, MAX_LEN + 1) u32: the start token, then the target without its end.
    pub decoder_inputs: Tensor,
    /// (n, MAX_LEN + 1) u32: the reversed digits, then the end token, 0-padded.
    pub targets: Tensor,
    /// (n, MAX_LEN + 1) u8: 1 where a target token is.
    pub target_mask: Tensor,
    /// Each example's target tokens (the reversed digits and the end token).
    pub expected: Vec<Vec<u32>>,
}

/// Makes `n` examples.
pub fn make_pairs(n: usize, rng: &mut StdRng, dev: &Device) -> candle_core::Result<Pairs> {
    let t = MAX_LEN + 1;
    let (mut src, mut src_mask, mut dec, mut tgt, mut tgt_mask) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut expected = Vec::with_capacity(n);
    for _ in 0..n {
        let len = rng.random_range(MIN_LEN..=MAX_LEN);
        let digits: Vec<u32> = (0..len).map(|_| rng.random_range(1..=10)).collect();
        let mut target: Vec<u32> = digits.iter().rev().copied().collect();
        target.push(END);
        let mut dec_in = vec![START];
        dec_in.extend(&target[..len]);
        src.extend(
            digits
                .iter()
                .copied()
                .chain(std::iter::repeat(0))
                .take(MAX_LEN),
        );
        src_mask.extend((0..MAX_LEN).map(|k| (k < len) as u8));
        dec.extend(dec_in.iter().copied().chain(std::iter::repeat(0)).take(t));
        tgt.extend(target.iter().copied().chain(std::iter::repeat(0)).take(t));
        tgt_mask.extend((0..t).map(|k| (k <= len) as u8));
        expected.push(target);
    }
    Ok(Pairs {
        source: Tensor::from_vec(src, (n, MAX_LEN), dev)?,
        source_mask: Tensor::from_vec(src_mask, (n, MAX_LEN), dev)?,
        decoder_inputs: Tensor::from_vec(dec, (n, t), dev)?,
        targets: Tensor::from_vec(tgt, (n, t), dev)?,
        target_mask: Tensor::from_vec(tgt_mask, (n, t), dev)?,
        expected,
    })
}

/// The run's settings: the classifier demo's settings ([`TrainConfig`]) with this task's
/// values.
pub fn config() -> TrainConfig {
    TrainConfig {
        epochs: 12,
        train_size: 4096,
        test_size: 512,
        batch_size: 64,
        units: 64,
        embedding_dim: 16,
        learning_rate: 0.005,
        seed: 11,
        device: Device::Cpu,
    }
}

/// The model: a shared embedding, an encoder GRU (its final state), a decoder GRU started
/// from it, and a Dense head over the decoder's outputs.
pub struct Reverser {
    embedding: Embedding,
    /// The encoder.
    pub encoder: Gru,
    /// The decoder (whole targets in training; its cell decodes).
    pub decoder: Gru,
    head: Linear,
}

impl Reverser {
    /// Builds the model's variables in `vb`.
    pub fn new(cfg: &TrainConfig, vb: VarBuilder) -> gru_candle::Result<Reverser> {
        let glorot = |s: u64| Initializer::preset(ScalingPreset::GlorotUniform, Some(cfg.seed + s));
        let uniform = Initializer::RandomUniform {
            minval: Num::Float(-0.05),
            maxval: Num::Float(0.05),
            seed: Some(cfg.seed),
        };
        let (e, u) = (cfg.embedding_dim, cfg.units);
        let embedding = Embedding::new(
            keras_variable(&vb, "embedding.embeddings", &[VOCAB, e], &uniform)?,
            e,
        );
        let head = Linear::new(
            keras_variable(&vb, "head.kernel", &[u, VOCAB], &glorot(1))?.t()?,
            Some(keras_variable(
                &vb,
                "head.bias",
                &[VOCAB],
                &Initializer::Zeros,
            )?),
        );
        let gru = |name: &str, seed: u64, sequences: bool| {
            let mut g = GruConfig::new(u);
            g.name = name.into();
            g.return_sequences = sequences;
            g.return_state = !sequences;
            g.kernel_initializer = glorot(seed);
            g.recurrent_initializer = Initializer::Orthogonal {
                gain: Num::Float(1.0),
                seed: Some(cfg.seed + seed + 1),
            };
            Gru::new(g, e, vb.pp(name))
        };
        Ok(Reverser {
            embedding,
            encoder: gru("encoder", 2, false)?,
            decoder: gru("decoder", 4, true)?,
            head,
        })
    }

    /// The encoder's final state (n, units).
    pub fn encode(&self, source: &Tensor, mask: &Tensor) -> gru_candle::Result<Tensor> {
        let opts = CallOptions {
            mask: Some(mask),
            ..Default::default()
        };
        let out = self.encoder.call(&self.embedding.forward(source)?, opts)?;
        Ok(out.state.unwrap_or(out.output))
    }

    /// Teacher-forced logits (n, MAX_LEN + 1, VOCAB): the decoder over the whole target.
    pub fn logits(&self, p: &Pairs) -> gru_candle::Result<Tensor> {
        let h0 = self.encode(&p.source, &p.source_mask)?;
        let opts = CallOptions {
            mask: Some(&p.target_mask),
            initial_state: Some(&h0),
            training: true,
        };
        let out = self
            .decoder
            .call(&self.embedding.forward(&p.decoder_inputs)?, opts)?;
        Ok(self.head.forward(&out.output)?)
    }

    /// Greedy decoding, one [`GruCell`] step per token (at most MAX_LEN + 1 steps): each
    /// example's tokens up to and with its end token.
    pub fn decode(&self, source: &Tensor, mask: &Tensor) -> gru_candle::Result<Vec<Vec<u32>>> {
        let cell: GruCell = self.decoder.cell()?;
        let n = source.dim(0)?;
        let mut h = self.encode(source, mask)?;
        let mut tokens = Tensor::full(START, n, source.device())?;
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
        for _ in 0..=MAX_LEN {
            h = cell.call(&self.embedding.forward(&tokens)?, &h, false)?;
            tokens = self.head.forward(&h)?.argmax(D::Minus1)?;
            for (seq, t) in out.iter_mut().zip(tokens.to_vec1::<u32>()?) {
                if seq.last() != Some(&END) {
                    seq.push(t);
                }
            }
        }
        Ok(out)
    }
}

/// The mean cross-entropy over the target tokens (padding left out).
fn masked_cross_entropy(logits: &Tensor, p: &Pairs) -> candle_core::Result<Tensor> {
    let (n, t, v) = logits.dims3()?;
    let logp = candle_nn::ops::log_softmax(&logits.reshape((n * t, v))?, D::Minus1)?;
    let picked = logp
        .gather(&p.targets.reshape((n * t, 1))?, 1)?
        .squeeze(1)?;
    let m = p.target_mask.reshape(n * t)?.to_dtype(DType::F32)?;
    (picked * &m)?.sum_all()?.neg()? / m.sum_all()?.to_scalar::<f32>()? as f64
}

/// One epoch's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seq2SeqEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Held-out sources whose greedy, step-by-step decoding is exactly the target.
    pub exact: f64,
    /// Seconds since the start.
    pub elapsed_s: f64,
}

/// What a run leaves.
pub struct Seq2SeqReport {
    /// One entry per epoch.
    pub epochs: Vec<Seq2SeqEpoch>,
    /// The model.
    pub model: Reverser,
    /// The held-out examples.
    pub test: Pairs,
    /// The model's variables.
    pub varmap: VarMap,
}

/// Trains the model; `on_epoch` sees each epoch's numbers as they come.
pub fn train(
    cfg: &TrainConfig,
    mut on_epoch: impl FnMut(&Seq2SeqEpoch),
) -> gru_candle::Result<Seq2SeqReport> {
    let dev = &cfg.device;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let train = make_pairs(cfg.train_size, &mut rng, dev)?;
    let test = make_pairs(cfg.test_size, &mut rng, dev)?;
    let varmap = VarMap::new();
    let model = Reverser::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    let mut opt = crate::demo::adam(&varmap, cfg.learning_rate)?;
    let (start, batches) = (Instant::now(), cfg.train_size / cfg.batch_size);
    let mut epochs = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let mut loss_sum = 0.0;
        for b in 0..batches {
            let batch = slice(&train, b * cfg.batch_size, cfg.batch_size)?;
            let loss = masked_cross_entropy(&model.logits(&batch)?, &batch)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
        }
        let decoded = model.decode(&test.source, &test.source_mask)?;
        let right = decoded
            .iter()
            .zip(&test.expected)
            .filter(|(d, e)| d == e)
            .count();
        let stats = Seq2SeqEpoch {
            epoch,
            loss: loss_sum / batches as f64,
            exact: right as f64 / test.expected.len() as f64,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        on_epoch(&stats);
        epochs.push(stats);
    }
    Ok(Seq2SeqReport {
        epochs,
        model,
        test,
        varmap,
    })
}

/// Examples `from..from + n` of `p`.
fn slice(p: &Pairs, from: usize, n: usize) -> candle_core::Result<Pairs> {
    Ok(Pairs {
        source: p.source.narrow(0, from, n)?,
        source_mask: p.source_mask.narrow(0, from, n)?,
        decoder_inputs: p.decoder_inputs.narrow(0, from, n)?,
        targets: p.targets.narrow(0, from, n)?,
        target_mask: p.target_mask.narrow(0, from, n)?,
        expected: p.expected[from..from + n].to_vec(),
    })
}
