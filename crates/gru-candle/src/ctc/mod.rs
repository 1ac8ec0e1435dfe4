//! Connectionist temporal classification, as Keras computes it: `keras.ops.ctc_loss` (the
//! loss of speech and text-recognition models whose GRUs emit one distribution per frame,
//! such as keras.io's DeepSpeech2 and captcha OCR models) and `keras.ops.ctc_decode`,
//! greedy and beam search.
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
//! use gru_candle::ctc::{ctc_beam_search_decode, ctc_greedy_decode, ctc_loss};
//!
//! let dev = Device::Cpu;
//! // Two samples, 6 frames, 4 classes (0 is the blank).
//! let logits = Tensor::randn(0f32, 1.0, (2, 6, 4), &dev)?;
//! let targets = Tensor::new(&[[1u32, 2, 2], [3, 0, 0]], &dev)?;
//! let loss = ctc_loss(&targets, &logits, &[3, 1], &[6, 4], 0)?; // (2,)
//! let decoded = ctc_greedy_decode(&logits, &[6, 4], true, 0)?;
//! assert_eq!(decoded.labels.len(), 2);
//! // The 3 most probable labelings of each sample, a beam of 10.
//! let best = ctc_beam_search_decode(&logits, &[6, 4], 10, 3, 0)?;
//! assert_eq!((best.len(), best[0].labels.len()), (3, 2));
//! # Ok::<(), gru_candle::Error>(())
//! ```

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use gru_core::ctc_beam::beam_search_batch;
use gru_core::GruError;

mod graph;
mod host;

/// TensorFlow's log-probability of an impossible path: `ln(1e-307)`.
use gru_core::ctc::LOG_ZERO;

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
    let (b, _, classes) = output_dims(output, output_length, mask_index)?;
    let labels = read_targets(target, target_length, b, classes, mask_index)?;
    let dtype = match output.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let logp = candle_nn::ops::log_softmax(&output.to_dtype(dtype)?, D::Minus1)?;
    match logp.device().is_cpu() {
        true => host::loss(&logp, labels, output_length, mask_index),
        false => graph::loss(&logp, &labels, target.dim(1)?, output_length, mask_index),
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

/// What [`ctc_greedy_decode`] returns, and [`ctc_beam_search_decode`] for each rank.
#[derive(Debug, Clone, PartialEq)]
pub struct CtcDecoded {
    /// Each sample's labels, blanks removed: for greedy decoding the most likely class of
    /// each of its frames, repeats merged (with `merge_repeated`); for beam search the
    /// labeling found.
    pub labels: Vec<Vec<u32>>,
    /// Each sample's score as Keras gives it: for greedy decoding minus the sum over its
    /// frames of the largest logit; for beam search the labeling's log-probability
    /// ([`ctc_beam_search_decode`]).
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

/// The most bytes a beam search's prefix tree may take (about 48 bytes per prefix, at most
/// `beam_width` new prefixes per frame): 8 GiB.
const MAX_BEAM_BYTES: u128 = 8 << 30;

/// Keras' `keras.ops.ctc_decode(output, output_length, strategy="beam_search", beam_width,
/// top_paths, mask_index)` as its TensorFlow backend computes it (TensorFlow's CTC beam
/// search, [`gru_core::ctc_beam`]): the `top_paths` most probable labelings of each sample,
/// best first, element `k` holding every sample's `k`-th labeling.
///
/// Each frame goes through a log-softmax first, as in TensorFlow, so `output` may hold
/// logits or log-probabilities, and the scores (`CtcDecoded::scores`, Keras'
/// `scores[:, k]`) are the log-probabilities the search gathered for each labeling (with a
/// beam as wide as every labeling, exactly `-ctc_loss` of it). Keras' `merge_repeated` has
/// no effect on this strategy in Keras' TensorFlow backend, and has none here: a
/// labeling's repeats are those its frames put a blank between.
///
/// Errors: `beam_width` 0, `top_paths` 0 or above `beam_width`, a sample whose beam holds
/// fewer labelings than `top_paths` (TensorFlow refuses these too), inputs that are NaN or
/// plus infinity or a frame minus infinity for every class, and a beam past 8 GiB of
/// prefixes.
pub fn ctc_beam_search_decode(
    output: &Tensor,
    output_length: &[usize],
    beam_width: usize,
    top_paths: usize,
    mask_index: usize,
) -> Result<Vec<CtcDecoded>> {
    let dims = output_dims(output, output_length, mask_index)?;
    if beam_width == 0 || top_paths == 0 || top_paths > beam_width {
        let expected = "beam_width >= 1 and top_paths in 1..=beam_width".into();
        let got = format!("beam_width {beam_width}, top_paths {top_paths}");
        return Err(shape_error("CTC beam search", expected, got));
    }
    check_beam_size(dims, beam_width)?;
    let values = output
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    check_beam_input(&values, dims, output_length)?;
    let params = (mask_index, beam_width, top_paths);
    let found = beam_search_batch(&values, dims, output_length, params, host::threads());
    let mut paths: Vec<CtcDecoded> = (0..top_paths)
        .map(|_| CtcDecoded {
            labels: Vec::with_capacity(dims.0),
            scores: Vec::with_capacity(dims.0),
        })
        .collect();
    for (b, sample) in found.into_iter().enumerate() {
        if sample.len() < top_paths {
            let expected = format!("at least {top_paths} labelings (top_paths)");
            let got = format!("{} for sample {b}", sample.len());
            return Err(shape_error("CTC beam search", expected, got));
        }
        for (k, path) in sample.into_iter().enumerate() {
            paths[k].labels.push(path.labels);
            paths[k].scores.push(path.score);
        }
    }
    Ok(paths)
}

/// Every frame a sample decodes holds no NaN and no plus infinity, and some class that is
/// not minus infinity (frames past a sample's length are not read).
fn check_beam_input(
    values: &[f64],
    (_, frames, classes): (usize, usize, usize),
    output_length: &[usize],
) -> Result<()> {
    for (b, &n) in output_length.iter().enumerate() {
        for t in 0..n {
            let frame = &values[(b * frames + t) * classes..][..classes];
            let bad = frame.iter().any(|v| v.is_nan() || *v == f64::INFINITY)
                || frame.iter().all(|v| *v == f64::NEG_INFINITY);
            if bad {
                let expected = "finite logits or log-probabilities (minus infinity allowed, \
                                not for every class)";
                let got = format!("{frame:?} at frame {t} of sample {b}");
                return Err(shape_error("CTC beam search input", expected.into(), got));
            }
        }
    }
    Ok(())
}

/// A beam's prefix tree within [`MAX_BEAM_BYTES`]: at most `beam_width` new prefixes a frame
/// (fewer while the labelings are fewer), each about 48 bytes.
fn check_beam_size((_, frames, classes): (usize, usize, usize), beam_width: usize) -> Result<()> {
    let mut reachable: u128 = 1;
    let mut prefixes: u128 = 0;
    for _ in 0..frames {
        reachable = reachable.saturating_mul(classes as u128);
        prefixes = prefixes.saturating_add(reachable.min(beam_width as u128));
    }
    let needed = prefixes.saturating_mul(48);
    match needed <= MAX_BEAM_BYTES {
        true => Ok(()),
        false => Err(Error::Gru(GruError::TooLarge {
            what: format!("a CTC beam search of width {beam_width} over {frames} frames"),
            limit: format!("{MAX_BEAM_BYTES} bytes of prefixes"),
            needed: format!("{needed} bytes"),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The CPU's recursions and the tensor-op recursion (the path off the CPU) agree:
    /// losses, and gradients with respect to the logits.
    #[test]
    fn host_and_graph_agree() {
        let dev = Device::Cpu;
        let logits = Var::randn(0f64, 2.0, (4, 9, 5), &dev).unwrap();
        let labels = vec![vec![1, 1, 2], vec![3], vec![], vec![4, 2, 4, 2]];
        let frames = [9, 6, 3, 9];
        let logp = candle_nn::ops::log_softmax(logits.as_tensor(), D::Minus1).unwrap();
        let a = host::loss(&logp, labels.clone(), &frames, 0).unwrap();
        let b = graph::loss(&logp, &labels, 4, &frames, 0).unwrap();
        let w = Tensor::new(&[0.5f64, -1.0, 2.0, 1.5], &dev).unwrap();
        let diff = |x: &Tensor, y: &Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(diff(&a, &b) < 1e-9, "{a} {b}");
        let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (
            ga.get(logits.as_tensor()).unwrap(),
            gb.get(logits.as_tensor()).unwrap(),
        );
        assert!(diff(ga, gb) < 1e-9, "{}", diff(ga, gb));
    }
}
