//! Connectionist temporal classification, as Keras computes it: `keras.ops.ctc_loss` (the
//! loss of speech and text-recognition models whose GRUs emit one distribution per frame,
//! such as keras.io's DeepSpeech2 and captcha OCR models) and the greedy
//! `keras.ops.ctc_decode`.
//!
//! The loss is the forward algorithm in log space over the target with a blank between and
//! around its labels, written in differentiable tensor ops: its gradient is the exact
//! gradient of the loss (TensorFlow's `ctc_loss` gives the same). A target its frames
//! cannot hold (more labels plus repeats than frames) has no path: its log-probability
//! starts from TensorFlow's "log zero", `ln(1e-307)`, so its loss is about 700 or more,
//! with a finite gradient. Keras' backends disagree there (TensorFlow's `ctc_loss` gives
//! about 710 on such a case, its numpy and JAX backends 1e5), and so does this function.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use gru_candle::ctc::{ctc_greedy_decode, ctc_loss};
//!
//! let dev = Device::Cpu;
//! // Two samples, 6 frames, 4 classes (0 is the blank).
//! let logits = Tensor::randn(0f32, 1.0, (2, 6, 4), &dev)?;
//! let targets = Tensor::new(&[[1u32, 2, 2], [3, 0, 0]], &dev)?;
//! let loss = ctc_loss(&targets, &logits, &[3, 1], &[6, 4], 0)?; // (2,)
//! let decoded = ctc_greedy_decode(&logits, &[6, 4], true, 0)?;
//! assert_eq!(decoded.labels.len(), 2);
//! # Ok::<(), gru_candle::Error>(())
//! ```

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use gru_core::GruError;

/// TensorFlow's log-probability of an impossible path: `ln(1e-307)`.
const LOG_ZERO: f64 = -706.893_623_549_172_6;

fn shape_error(what: &str, expected: String, got: String) -> Error {
    Error::Gru(GruError::Shape {
        what: what.into(),
        expected,
        got,
    })
}

/// Keras' `keras.ops.ctc_loss(target, output, target_length, output_length, mask_index)`:
/// the negative log-probability of each sample's target under its frames, shape (batch,).
///
/// `target`: (batch, max target length) integer labels (padding after `target_length`
/// is ignored); `output`: (batch, frames, classes) logits (a log-softmax is taken, so
/// log-probabilities work too; probabilities do not); `target_length[b]` labels and
/// `output_length[b]` frames count for sample `b`; `mask_index`: the blank class.
/// Half-precision logits are computed in f32, as Keras does. Differentiable in `output`.
pub fn ctc_loss(
    target: &Tensor,
    output: &Tensor,
    target_length: &[usize],
    output_length: &[usize],
    mask_index: usize,
) -> Result<Tensor> {
    let (b, frames, classes) = output_dims(output, output_length, mask_index)?;
    let labels = read_targets(target, target_length, b, classes, mask_index)?;
    let dtype = match output.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let dev = output.device();
    let logp = candle_nn::ops::log_softmax(&output.to_dtype(dtype)?, D::Minus1)?;
    let states = 2 * target.dim(1)? + 1;
    let ext = Extended::new(&labels, states, mask_index);
    // (b, frames, states): each state's log-probability at each frame.
    let index = Tensor::from_vec(ext.classes.clone(), (b, 1, states), dev)?
        .broadcast_as((b, frames, states))?
        .contiguous()?;
    let emit = logp.gather(&index, 2)?;
    let log_zero = |shape: (usize, usize)| -> Result<Tensor> {
        Ok(Tensor::full(LOG_ZERO, shape, dev)?.to_dtype(dtype)?)
    };
    let skip = Tensor::from_vec(ext.skip.clone(), (b, states), dev)?;
    let starts = Tensor::from_vec(ext.starts(), (b, states), dev)?;
    let mut alpha =
        starts.where_cond(&emit.narrow(1, 0, 1)?.squeeze(1)?, &log_zero((b, states))?)?;
    for t in 1..frames {
        let pad = |n: usize| -> Result<Tensor> {
            Ok(Tensor::cat(
                &[&log_zero((b, n))?, &alpha.narrow(1, 0, states - n)?],
                1,
            )?)
        };
        let one = pad(1)?;
        let two = skip.where_cond(&pad(2)?, &log_zero((b, states))?)?;
        let next = (log_sum_exp3(&alpha, &one, &two)? + emit.narrow(1, t, 1)?.squeeze(1)?)?;
        let live: Vec<u8> = output_length.iter().map(|&n| u8::from(t < n)).collect();
        let live = Tensor::from_vec(live, (b, 1), dev)?.broadcast_as((b, states))?;
        alpha = live.where_cond(&next, &alpha)?;
    }
    // The path ends on the last label or the blank after it.
    let ends = Tensor::from_vec(ext.ends(), (b, states), dev)?;
    let last = ends.where_cond(&alpha, &log_zero((b, states))?)?;
    let m = last.max_keepdim(1)?.detach();
    let total = (last.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m)?;
    Ok(total.squeeze(1)?.neg()?)
}

/// `log(exp a + exp b + exp c)`, elementwise and stable (every input is at least
/// `LOG_ZERO`, so no NaN reaches a gradient).
fn log_sum_exp3(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    let m = a.maximum(b)?.maximum(c)?.detach();
    let sum = ((a - &m)?.exp()? + (b - &m)?.exp()?)?;
    Ok(((sum + (c - &m)?.exp()?)?.log()? + m)?)
}

/// The target with a blank before, between and after its labels: each state's class,
/// whether it may be reached from two states back (a label unlike the one before it), and
/// the target lengths.
struct Extended {
    classes: Vec<u32>,
    skip: Vec<u8>,
    lengths: Vec<usize>,
    states: usize,
}

impl Extended {
    fn new(labels: &[Vec<u32>], states: usize, blank: usize) -> Extended {
        let (mut classes, mut skip) = (Vec::new(), Vec::new());
        for row in labels {
            for s in 0..states {
                let class = match s % 2 {
                    0 => blank as u32,
                    _ => row.get(s / 2).copied().unwrap_or(blank as u32),
                };
                classes.push(class);
                let repeat = s >= 3 && row.get(s / 2 - 1) == row.get(s / 2);
                skip.push(u8::from(
                    s % 2 == 1 && s >= 3 && s / 2 < row.len() && !repeat,
                ));
            }
        }
        let lengths = labels.iter().map(Vec::len).collect();
        Extended {
            classes,
            skip,
            lengths,
            states,
        }
    }

    /// The states a path may start in: the first blank and the first label.
    fn starts(&self) -> Vec<u8> {
        self.per_state(|s, len| s == 0 || (s == 1 && len > 0))
    }

    /// The states a path may end in: the last label and the blank after it.
    fn ends(&self) -> Vec<u8> {
        self.per_state(|s, len| s == 2 * len || (len > 0 && s == 2 * len - 1))
    }

    fn per_state(&self, f: impl Fn(usize, usize) -> bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lengths.len() * self.states);
        for &len in &self.lengths {
            out.extend((0..self.states).map(|s| u8::from(f(s, len))));
        }
        out
    }
}

/// The (batch, frames, classes) dims of CTC logits, checked against the lengths.
fn output_dims(
    output: &Tensor,
    output_length: &[usize],
    blank: usize,
) -> Result<(usize, usize, usize)> {
    let (b, frames, classes) = match *output.dims() {
        [b, t, c] if c > 0 && t > 0 => (b, t, c),
        _ => {
            let expected = "(batch, frames >= 1, classes >= 1) logits".into();
            return Err(shape_error(
                "CTC output",
                expected,
                format!("{:?}", output.dims()),
            ));
        }
    };
    if !output.dtype().is_float() {
        return Err(Error::Gru(GruError::DType {
            what: "CTC output".into(),
            expected: "a float dtype (logits)".into(),
            got: format!("{:?}", output.dtype()),
        }));
    }
    if output_length.len() != b || output_length.iter().any(|&n| n == 0 || n > frames) {
        let expected = format!("{b} frame counts in 1..={frames}");
        return Err(shape_error(
            "CTC output_length",
            expected,
            format!("{output_length:?}"),
        ));
    }
    if blank >= classes {
        let expected = format!("a blank class below {classes}");
        return Err(shape_error("CTC mask_index", expected, blank.to_string()));
    }
    Ok((b, frames, classes))
}

/// Each sample's labels (the first `target_length[b]` of its row), checked.
fn read_targets(
    target: &Tensor,
    target_length: &[usize],
    b: usize,
    classes: usize,
    blank: usize,
) -> Result<Vec<Vec<u32>>> {
    let (tb, width) = match *target.dims() {
        [tb, w] => (tb, w),
        _ => {
            let expected = "(batch, labels) integer labels".into();
            return Err(shape_error(
                "CTC target",
                expected,
                format!("{:?}", target.dims()),
            ));
        }
    };
    if target.dtype().is_float() || tb != b {
        let expected = format!("({b}, labels) of an integer dtype");
        let got = format!("{:?} {:?}", target.dims(), target.dtype());
        return Err(shape_error("CTC target", expected, got));
    }
    if target_length.len() != b || target_length.iter().any(|&n| n > width) {
        let expected = format!("{b} label counts of at most {width}");
        return Err(shape_error(
            "CTC target_length",
            expected,
            format!("{target_length:?}"),
        ));
    }
    let rows = target.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    let mut labels = Vec::with_capacity(b);
    for (row, &n) in rows.iter().zip(target_length) {
        let kept = &row[..n];
        if let Some(bad) = kept
            .iter()
            .find(|&&l| l < 0 || l as usize >= classes || l as usize == blank)
        {
            let expected = format!("labels in 0..{classes} other than the blank {blank}");
            return Err(shape_error("CTC target", expected, format!("label {bad}")));
        }
        labels.push(kept.iter().map(|&l| l as u32).collect());
    }
    Ok(labels)
}

/// What [`ctc_greedy_decode`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct CtcDecoded {
    /// Each sample's labels: the most likely class of each of its frames, repeats merged
    /// (with `merge_repeated`), blanks removed.
    pub labels: Vec<Vec<u32>>,
    /// Each sample's score as Keras gives it: minus the sum over its frames of the
    /// largest logit.
    pub scores: Vec<f64>,
}

impl CtcDecoded {
    /// Keras' dense form of the labels: (batch, frames) with `-1` after each sample's
    /// labels (`keras.ops.ctc_decode(...)[0][0]`).
    pub fn dense(&self, frames: usize, device: &Device) -> Result<Tensor> {
        let mut all = vec![-1i64; self.labels.len() * frames];
        for (b, row) in self.labels.iter().enumerate() {
            for (k, &l) in row.iter().enumerate().take(frames) {
                all[b * frames + k] = i64::from(l);
            }
        }
        Ok(Tensor::from_vec(all, (self.labels.len(), frames), device)?)
    }
}

/// Keras' `keras.ops.ctc_decode(output, output_length, strategy="greedy", merge_repeated,
/// mask_index)`: the best class of each of the first `output_length[b]` frames, repeats
/// merged, blanks removed.
pub fn ctc_greedy_decode(
    output: &Tensor,
    output_length: &[usize],
    merge_repeated: bool,
    mask_index: usize,
) -> Result<CtcDecoded> {
    output_dims(output, output_length, mask_index)?;
    let wide = output.to_dtype(DType::F64)?;
    let best = wide.argmax(D::Minus1)?.to_vec2::<u32>()?;
    let top = wide.max(D::Minus1)?.to_vec2::<f64>()?;
    let mut labels = Vec::with_capacity(best.len());
    let mut scores = Vec::with_capacity(best.len());
    for ((row, top), &n) in best.iter().zip(&top).zip(output_length) {
        let mut out = Vec::new();
        let mut previous = None;
        for &class in &row[..n] {
            let repeat = merge_repeated && previous == Some(class);
            if class as usize != mask_index && !repeat {
                out.push(class);
            }
            previous = Some(class);
        }
        labels.push(out);
        scores.push(-top[..n].iter().sum::<f64>());
    }
    Ok(CtcDecoded { labels, scores })
}
