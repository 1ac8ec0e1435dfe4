//! Which of a fused call's outputs take part in autograd, and how the op lays them out.
//!
//! A call returns the sequence or the last output, and the state with `return_state`
//! ([`crate::Gru::call`]). The fused op's output holds exactly those live parts (sequence, last
//! output, state, in that order); a single live part is the op's output itself, shaped as
//! the caller sees it. The parts no caller reads as a result of the call (the state of a
//! stateful layer, detached, or the sequence under `return_sequences = false`) come out
//! as constants from the op's host buffers, moved, not copied.
//!
//! Why: candle's backward of `narrow` pads the gradient back to the whole tensor and adds
//! it into a zero tensor of that size, and `reshape` adds once more. With one flat
//! `[sequence; state]` output, a training step at B = 256, T = 50, H = 512 spent about
//! 57 ms of 400 in those copies and their page faults (26 MB each); the last output of a
//! `return_sequences = false` call paid them for a (batch, units) gradient.

use crate::sequence::SequenceOutput;
use candle_core::{Device, Result, Shape, Tensor, WithDType};
use gru_core::GruConfig;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// The outputs of a call that are live (returned to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveOutputs {
    /// The sequence (batch, time, units): `return_sequences`.
    pub sequence: bool,
    /// The last output (batch, units): not `return_sequences`.
    pub last: bool,
    /// The final state (batch, units): `return_state`.
    pub state: bool,
}

impl LiveOutputs {
    /// What a call of `config` returns.
    pub fn of(config: &GruConfig) -> LiveOutputs {
        LiveOutputs {
            sequence: config.return_sequences,
            last: !config.return_sequences,
            state: config.return_state,
        }
    }

    /// The op output's length for a (batch, time, units) call.
    pub fn len(&self, (b, t, u): (usize, usize, usize)) -> usize {
        let bu = b * u;
        self.sequence as usize * t * bu + self.last as usize * bu + self.state as usize * bu
    }

    /// Whether no part is live (never: a call returns an output).
    pub fn is_empty(&self) -> bool {
        !(self.sequence || self.last || self.state)
    }

    /// The op output's shape: a single part shaped as the caller sees it, else flat.
    pub fn shape(&self, (b, t, u): (usize, usize, usize)) -> Shape {
        match (self.sequence, self.last, self.state) {
            (true, false, false) => Shape::from((b, t, u)),
            (false, true, false) | (false, false, true) => Shape::from((b, u)),
            _ => Shape::from(self.len((b, t, u))),
        }
    }
}

/// The parts a call computed that are not live: moved out of the op's forward.
#[derive(Debug)]
pub struct DeadOutputs<T> {
    /// The sequence, when not live.
    pub sequence: Option<Vec<T>>,
    /// The state, when not live.
    pub state: Option<Vec<T>>,
}

/// Where the op's forward hands its dead outputs to the call.
pub type DeadSlot<T> = Arc<Mutex<Option<DeadOutputs<T>>>>;

/// Lays out the op's output from the forward's `buf` (the sequence, then the state): the
/// live parts in order (the buffer itself when the sequence is live); the dead ones go to
/// the returned [`DeadOutputs`].
pub fn assemble<T: Copy>(
    live: LiveOutputs,
    (b, t, u): (usize, usize, usize),
    mut buf: Vec<T>,
) -> (Vec<T>, DeadOutputs<T>) {
    let btu = b * t * u;
    let mut dead = DeadOutputs {
        sequence: None,
        state: None,
    };
    if !live.state {
        dead.state = Some(buf[btu..].to_vec());
    }
    if live.sequence {
        if !live.state {
            buf.truncate(btu);
        }
        return (buf, dead);
    }
    let mut out = Vec::with_capacity(live.len((b, t, u)));
    for row in buf[..btu].chunks_exact(t * u) {
        out.extend_from_slice(&row[(t - 1) * u..]);
    }
    if live.state {
        out.extend_from_slice(&buf[btu..]);
    }
    buf.truncate(btu);
    dead.sequence = Some(buf);
    (out, dead)
}

/// The forward's `(d_sequence, d_state)` from the gradient of the op's output: the live
/// parts' gradients (borrowed), zeros for the dead ones, the last output's gradient in the
/// sequence's last step.
pub fn split_grad<T: Copy + Default>(
    live: LiveOutputs,
    (b, t, u): (usize, usize, usize),
    grad: &[T],
) -> (Cow<'_, [T]>, Cow<'_, [T]>) {
    let (btu, bu) = (b * t * u, b * u);
    let mut rest = grad;
    let mut take = |n: usize, is: bool| {
        is.then(|| {
            let (head, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            head
        })
    };
    let (seq, last, state) = (
        take(btu, live.sequence),
        take(bu, live.last),
        take(bu, live.state),
    );
    let d_seq = match (seq, last) {
        (Some(s), _) => Cow::Borrowed(s),
        (None, last) => {
            let mut d = vec![T::default(); btu];
            for (row, g) in d
                .chunks_exact_mut(t * u)
                .zip(last.unwrap_or(&[]).chunks_exact(u))
            {
                row[(t - 1) * u..].copy_from_slice(g);
            }
            Cow::Owned(d)
        }
    };
    let d_state = state.map_or_else(|| Cow::Owned(vec![T::default(); bu]), Cow::Borrowed);
    (d_seq, d_state)
}

/// The call's [`SequenceOutput`] from the op's output `out` and its dead parts.
pub fn sequence_output<T: WithDType>(
    live: LiveOutputs,
    (b, t, u): (usize, usize, usize),
    out: &Tensor,
    dead: DeadOutputs<T>,
    dev: &Device,
) -> Result<SequenceOutput> {
    let (btu, bu) = (b * t * u, b * u);
    let single = live.shape((b, t, u)).rank() > 1;
    let mut at = 0;
    let mut part = |n: usize| -> Result<Tensor> {
        let p = if single {
            out.clone()
        } else {
            out.narrow(0, at, n)?
        };
        at += n;
        Ok(p)
    };
    let constant = |v: Option<Vec<T>>, shape: Shape| -> Result<Tensor> {
        match v {
            Some(v) => Tensor::from_vec(v, shape, dev),
            None => candle_core::bail!("gru-fused: the op kept no {shape:?} output"),
        }
    };
    let sequence = match live.sequence {
        true => part(btu)?.reshape((b, t, u))?,
        false => constant(dead.sequence, Shape::from((b, t, u)))?,
    };
    let last_output = match live.last {
        true => part(bu)?.reshape((b, u))?,
        false => sequence.narrow(1, t - 1, 1)?.squeeze(1)?,
    };
    let state = match live.state {
        true => part(bu)?.reshape((b, u))?,
        false => constant(dead.state, Shape::from((b, u)))?,
    };
    Ok(SequenceOutput {
        sequence,
        last_output,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(sequence: bool, state: bool) -> LiveOutputs {
        LiveOutputs {
            sequence,
            last: !sequence,
            state,
        }
    }

    /// Every form: the live parts in order, the dead ones kept, the gradient split back
    /// with the last output's gradient in the sequence's last step.
    #[test]
    fn outputs_hold_the_live_parts_and_gradients_split_back() {
        let dims = (2, 3, 2);
        let seq: Vec<f64> = (0..12).map(f64::from).collect();
        let state: Vec<f64> = vec![100.0, 101.0, 102.0, 103.0];
        let last = [4.0, 5.0, 10.0, 11.0];
        for (sq, st) in [(true, false), (true, true), (false, false), (false, true)] {
            let l = live(sq, st);
            let buf: Vec<f64> = seq.iter().chain(&state).copied().collect();
            let (out, dead) = assemble(l, dims, buf);
            let mut want = Vec::new();
            if sq {
                want.extend_from_slice(&seq);
            } else {
                want.extend_from_slice(&last);
            }
            if st {
                want.extend_from_slice(&state);
            }
            assert_eq!(out, want, "{l:?}");
            assert_eq!(out.len(), l.len(dims));
            assert_eq!(dead.sequence.is_some(), !sq);
            assert_eq!(dead.state.is_some(), !st);
            let (d_seq, d_state) = split_grad(l, dims, &out);
            let mut seq_want = if sq { seq.clone() } else { vec![0.0; 12] };
            if !sq {
                for (b, row) in seq_want.chunks_mut(6).enumerate() {
                    row[4..].copy_from_slice(&last[2 * b..2 * b + 2]);
                }
            }
            assert_eq!(*d_seq, seq_want, "{l:?}");
            assert_eq!(*d_state, if st { state.clone() } else { vec![0.0; 4] });
        }
        assert_eq!(live(true, false).shape(dims).dims(), &[2, 3, 2]);
        assert_eq!(live(false, false).shape(dims).dims(), &[2, 2]);
        assert_eq!(live(true, true).shape(dims).dims(), &[16]);
    }

    /// The call's outputs from each form equal the ones cut from the whole flat output.
    #[test]
    fn sequence_outputs_agree_with_the_flat_layout() -> Result<()> {
        let dev = Device::Cpu;
        let dims = (2, 3, 2);
        let seq: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let state: Vec<f32> = vec![100.0, 101.0, 102.0, 103.0];
        let mut flat = seq.clone();
        flat.extend_from_slice(&state);
        let whole = SequenceOutput::from_flat(&Tensor::new(flat.as_slice(), &dev)?, dims)?;
        for (sq, st) in [(true, false), (true, true), (false, false), (false, true)] {
            let l = live(sq, st);
            let (out, dead) = assemble(l, dims, flat.clone());
            let out = Tensor::from_vec(out, l.shape(dims), &dev)?;
            let got = sequence_output(l, dims, &out, dead, &dev)?;
            for (a, b) in [
                (&got.sequence, &whole.sequence),
                (&got.last_output, &whole.last_output),
                (&got.state, &whole.state),
            ] {
                assert_eq!(a.dims(), b.dims());
                let (a, b) = (a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?);
                assert_eq!(a, b.to_vec1::<f32>()?, "{l:?}");
            }
        }
        Ok(())
    }
}
