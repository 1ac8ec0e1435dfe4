//! The CTC loss written in Candle tensor ops (the forward recursion, one step per frame):
//! differentiable on any device, used off the CPU.

use super::LOG_ZERO;
use crate::error::Result;
use candle_core::Tensor;

/// Each sample's loss from log-probabilities `logp` (batch, frames, classes) for `labels`
/// (the target tensor `width` labels wide) and `output_length` frames.
pub(super) fn loss(
    logp: &Tensor,
    labels: &[Vec<u32>],
    width: usize,
    output_length: &[usize],
    mask_index: usize,
) -> Result<Tensor> {
    let (b, frames, _) = logp.dims3()?;
    let (dtype, dev) = (logp.dtype(), logp.device());
    let states = 2 * width + 1;
    let ext = Extended::new(labels, states, mask_index);
    // (b, frames, states): each state's log-probability at each frame.
    let index = Tensor::from_vec(ext.classes.clone(), (b, 1, states), dev)?
        .broadcast_as((b, frames, states))?
        .contiguous()?;
    let emit = logp.gather(&index, 2)?;
    let log_zero = |shape: (usize, usize)| -> Result<Tensor> {
        Ok(Tensor::full(LOG_ZERO, shape, dev)?.to_dtype(dtype)?)
    };
    // Made once, not per frame: the padding, and which samples are still inside their
    // frames at each frame.
    let (zero_states, zero_one, zero_two) =
        (log_zero((b, states))?, log_zero((b, 1))?, log_zero((b, 2))?);
    let live: Vec<u8> = output_length
        .iter()
        .flat_map(|&n| (0..frames).map(move |t| u8::from(t < n)))
        .collect();
    let live = Tensor::from_vec(live, (b, frames), dev)?;
    let skip = Tensor::from_vec(ext.skip.clone(), (b, states), dev)?;
    let starts = Tensor::from_vec(ext.starts(), (b, states), dev)?;
    let mut alpha = starts.where_cond(&emit.narrow(1, 0, 1)?.squeeze(1)?, &zero_states)?;
    for t in 1..frames {
        let one = Tensor::cat(&[&zero_one, &alpha.narrow(1, 0, states - 1)?], 1)?;
        let two = match states {
            1 => zero_states.clone(),
            _ => Tensor::cat(&[&zero_two, &alpha.narrow(1, 0, states - 2)?], 1)?,
        };
        let two = skip.where_cond(&two, &zero_states)?;
        let next = (log_sum_exp3(&alpha, &one, &two)? + emit.narrow(1, t, 1)?.squeeze(1)?)?;
        let live_t = live.narrow(1, t, 1)?.broadcast_as((b, states))?;
        alpha = live_t.where_cond(&next, &alpha)?;
    }
    // The path ends on the last label or the blank after it.
    let ends = Tensor::from_vec(ext.ends(), (b, states), dev)?;
    let last = ends.where_cond(&alpha, &zero_states)?;
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
