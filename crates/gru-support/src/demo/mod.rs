//! A complete training run: a synthetic sequence task made in code, an
//! embedding -> GRU -> Dense classifier, Keras' regularization losses and constraints,
//! saved weights and a loss/accuracy plot. `examples/train.rs` runs it.
//!
//! **The task.** Each sequence holds 8..=40 tokens, right-padded with 0 to length 40.
//! Tokens 1, 2 and 3 are markers, token 4 is a reset, tokens 5.. are noise. The label is the
//! marker that occurs most often *after the last reset* (the whole sequence if there is
//! none; ties are never generated). A bag of tokens cannot solve it: the GRU's state has to
//! count, and clear its counts at each reset. Chance is 1/3.

pub mod plot;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, Optimizer, VarBuilder, VarMap};
use gru_candle::io::keras::{KerasLayer, KerasModel};
use gru_candle::keras_variable;
use gru_candle::{CallOptions, Gru};
use gru_core::GruConfig;
use gru_core::{Axis, Constraint, Initializer, Num, Regularizer, ScalingPreset};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Longest sequence (the padded length).
pub const MAX_LEN: usize = 40;
/// Vocabulary: 0 padding, 1..=3 markers, 4 reset, 5..16 noise.
pub const VOCAB: usize = 16;
/// Number of classes (markers).
pub const CLASSES: usize = 3;

/// A batch of the task: tokens (n, MAX_LEN) u32, mask (n, MAX_LEN) u8, labels (n,) u32.
#[derive(Debug, Clone)]
pub struct Data {
    /// Token ids, 0 = padding.
    pub tokens: Tensor,
    /// 1 where a token is present.
    pub mask: Tensor,
    /// The most frequent marker after the last reset, 0..3.
    pub labels: Tensor,
}

/// Makes `n` examples of the task.
pub fn make_data(n: usize, rng: &mut StdRng, device: &Device) -> candle_core::Result<Data> {
    let (mut tokens, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let len = rng.random_range(8..=MAX_LEN);
        let mut seq: Vec<u32>;
        loop {
            seq = (0..len)
                .map(|_| {
                    let u = rng.random::<f64>();
                    if u < 0.3 {
                        rng.random_range(1..=3)
                    } else if u < 0.38 {
                        4
                    } else {
                        rng.random_range(5..VOCAB as u32)
                    }
                })
                .collect();
            let start = seq.iter().rposition(|&t| t == 4).map_or(0, |p| p + 1);
            let mut counts = [0usize; 4];
            for &t in &seq[start..] {
                if (1..=3).contains(&t) {
                    counts[t as usize] += 1;
                }
            }
            let best = *counts[1..].iter().max().unwrap_or(&0);
            if best > 0 && counts[1..].iter().filter(|&&c| c == best).count() == 1 {
                let label = (1..=3).find(|&m| counts[m] == best).unwrap_or(1) as u32 - 1;
                labels.push(label);
                break;
            }
        }
        mask.extend((0..MAX_LEN).map(|t| (t < len) as u8));
        seq.resize(MAX_LEN, 0);
        tokens.extend(seq);
    }
    Ok(Data {
        tokens: Tensor::from_vec(tokens, (n, MAX_LEN), device)?,
        mask: Tensor::from_vec(mask, (n, MAX_LEN), device)?,
        labels: Tensor::from_vec(labels, n, device)?,
    })
}

/// Settings of a training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Training examples.
    pub train_size: usize,
    /// Held-out examples.
    pub test_size: usize,
    /// Batch size.
    pub batch_size: usize,
    /// GRU units.
    pub units: usize,
    /// Embedding size.
    pub embedding_dim: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed of the data, the weights and dropout.
    pub seed: u64,
    /// Device.
    pub device: Device,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 15,
            train_size: 2048,
            test_size: 1024,
            batch_size: 64,
            units: 32,
            embedding_dim: 16,
            learning_rate: 0.003,
            seed: 7,
            device: Device::Cpu,
        }
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss (cross-entropy + regularization).
    pub loss: f64,
    /// Training accuracy (training mode, dropout on).
    pub train_accuracy: f64,
    /// Held-out accuracy.
    pub test_accuracy: f64,
    /// Seconds since the start.
    pub elapsed_s: f64,
}

/// The model: embedding -> GRU (masked, dropout, L2 kernel regularizer, MaxNorm constraint)
/// -> Dense logits.
pub struct Classifier {
    embedding: Embedding,
    /// The GRU layer.
    pub gru: Gru,
    head: Linear,
}

impl Classifier {
    /// Builds the model's variables in `vb`.
    pub fn new(cfg: &TrainConfig, vb: VarBuilder) -> gru_candle::Result<Classifier> {
        // Keras' defaults (Embedding: uniform(-0.05, 0.05); Dense: glorot_uniform, zeros),
        // seeded so that a run is reproducible.
        let var = |name: &str, shape: &[usize], init: Initializer| {
            keras_variable(&vb, name, shape, &init)
        };
        let uniform = Initializer::RandomUniform {
            minval: Num::Float(-0.05),
            maxval: Num::Float(0.05),
            seed: Some(cfg.seed),
        };
        let glorot = |s: u64| Initializer::preset(ScalingPreset::GlorotUniform, Some(cfg.seed + s));
        let embedding = Embedding::new(
            var("embedding.embeddings", &[VOCAB, cfg.embedding_dim], uniform)?,
            cfg.embedding_dim,
        );
        // candle's Linear keeps (out, in); a Keras Dense kernel is (in, out).
        let head = Linear::new(
            var("head.kernel", &[cfg.units, CLASSES], glorot(1))?.t()?,
            Some(var("head.bias", &[CLASSES], Initializer::Zeros)?),
        );
        let mut g = GruConfig::new(cfg.units);
        g.name = "gru".into();
        g.dropout = 0.1;
        g.seed = Some(cfg.seed);
        g.kernel_initializer = glorot(2);
        g.recurrent_initializer = Initializer::Orthogonal {
            gain: Num::Float(1.0),
            seed: Some(cfg.seed + 3),
        };
        g.kernel_regularizer = Some(Regularizer::L2 { l2: 1e-4 });
        g.kernel_constraint = Some(Constraint::MaxNorm {
            max_value: Num::Float(3.0),
            axis: Axis::One(0),
        });
        let gru = Gru::new(g, cfg.embedding_dim, vb.pp("gru"))?;
        Ok(Classifier {
            embedding,
            gru,
            head,
        })
    }

    /// The classifier as a Keras 3 model (`Embedding(mask_zero=True) -> GRU -> Dense`),
    /// for [`KerasModel::save`]: padding is token 0, so Keras' `mask_zero` mask is the mask
    /// [`Classifier::logits`] takes. It computes the same logits from the token ids alone.
    pub fn keras_model(&self) -> gru_candle::Result<KerasModel> {
        KerasModel::from_layers(&[
            KerasLayer::Embedding {
                table: &self.embedding,
                mask_zero: true,
            },
            KerasLayer::Gru(&self.gru),
            KerasLayer::Dense {
                linear: &self.head,
                activation: "linear",
            },
        ])
    }

    /// Logits (n, CLASSES).
    pub fn logits(
        &self,
        tokens: &Tensor,
        mask: &Tensor,
        training: bool,
    ) -> gru_candle::Result<Tensor> {
        let x = self.embedding.forward(tokens)?;
        let h = self
            .gru
            .call(
                &x,
                CallOptions {
                    mask: Some(mask),
                    initial_state: None,
                    training,
                },
            )?
            .output;
        Ok(self.head.forward(&h)?)
    }
}

fn accuracy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<f64> {
    let pred = logits.argmax(D::Minus1)?;
    let right = pred
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(right as f64 / labels.dim(0)? as f64)
}

/// Adam (no weight decay) at `lr` over every variable of `varmap`, as the demos train.
pub(crate) fn adam(varmap: &VarMap, lr: f64) -> candle_core::Result<candle_nn::AdamW> {
    let params = candle_nn::ParamsAdamW {
        lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    candle_nn::AdamW::new(varmap.all_vars(), params)
}

/// What a run leaves: the per-epoch numbers and the trained variables.
pub struct TrainReport {
    /// One entry per epoch.
    pub epochs: Vec<EpochStats>,
    /// The model's variables (save with `varmap.save(path)`).
    pub varmap: VarMap,
    /// The model.
    pub model: Classifier,
}

/// Trains the classifier; `on_epoch` sees each epoch's numbers as they come.
pub fn train(
    cfg: &TrainConfig,
    mut on_epoch: impl FnMut(&EpochStats),
) -> gru_candle::Result<TrainReport> {
    let dev = &cfg.device;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let train = make_data(cfg.train_size, &mut rng, dev)?;
    let test = make_data(cfg.test_size, &mut rng, dev)?;
    let varmap = VarMap::new();
    let model = Classifier::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    let mut opt = adam(&varmap, cfg.learning_rate)?;
    let start = Instant::now();
    let mut epochs = Vec::with_capacity(cfg.epochs);
    let batches = cfg.train_size.div_ceil(cfg.batch_size);
    for epoch in 1..=cfg.epochs {
        // A new order each epoch.
        let mut order: Vec<u32> = (0..cfg.train_size as u32).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let (mut loss_sum, mut right) = (0.0, 0.0);
        for b in 0..batches {
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(cfg.train_size)];
            let idx = Tensor::new(idx, dev)?;
            let (tok, mask, lab) = (
                train.tokens.index_select(&idx, 0)?,
                train.mask.index_select(&idx, 0)?,
                train.labels.index_select(&idx, 0)?,
            );
            let logits = model.logits(&tok, &mask, true)?;
            let ce = candle_nn::loss::cross_entropy(&logits, &lab)?;
            let loss = (ce + model.gru.regularization_loss()?)?;
            opt.backward_step(&loss)?;
            model.gru.apply_constraints()?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            right += accuracy(&logits, &lab)? * idx.dim(0)? as f64;
        }
        let test_logits = model.logits(&test.tokens, &test.mask, false)?;
        let stats = EpochStats {
            epoch,
            loss: loss_sum / batches as f64,
            train_accuracy: right / cfg.train_size as f64,
            test_accuracy: accuracy(&test_logits, &test.labels)?,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        on_epoch(&stats);
        epochs.push(stats);
    }
    Ok(TrainReport {
        epochs,
        varmap,
        model,
    })
}
