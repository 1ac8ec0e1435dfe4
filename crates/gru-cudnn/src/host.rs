//! Host reference of the mask handling the cuDNN path needs, testable without a GPU.
//!
//! cuDNN runs variable-length sequences only when each row's valid steps come first (right
//! padding, every length >= 1). Any other Keras mask (holes, left padding) runs on cuDNN
//! too by *compacting*: each row's valid steps, in processing order (reversed with
//! go_backwards), are moved to the front, cuDNN runs forward with per-row lengths, and the
//! outputs are *expanded* back to Keras' rule. A masked step repeats the previous
//! processed output (zeros before the first valid step), or is zero with
//! `zero_output_for_mask`. The state is the output of the last valid step, or the initial
//! state for an all-False row. The device kernels (kernels/) implement these functions
//! and are tested against them.

/// Row b's valid steps in processing order: input indices `t` and their processing
/// positions `k` (t = k, or T-1-k with go_backwards).
pub fn valid_steps(
    mask: &[bool],
    time: usize,
    go_backwards: bool,
    b: usize,
) -> Vec<(usize, usize)> {
    (0..time)
        .filter_map(|k| {
            let t = if go_backwards { time - 1 - k } else { k };
            mask[b * time + t].then_some((t, k))
        })
        .collect()
}

/// Per-row lengths (valid steps), as cuDNN's `seqLengthArray` takes them.
pub fn lengths(mask: &[bool], batch: usize, time: usize) -> Vec<i32> {
    (0..batch)
        .map(|b| {
            mask[b * time..(b + 1) * time]
                .iter()
                .filter(|&&m| m)
                .count() as i32
        })
        .collect()
}

/// Moves each row's valid steps (in processing order) to the front: (batch, time, feat),
/// zeros after. Running this forward (never backwards) with [`lengths`] processes exactly
/// the steps the loop processes.
pub fn compact<T: Copy + Default>(
    x: &[T],
    mask: &[bool],
    batch: usize,
    time: usize,
    feat: usize,
    go_backwards: bool,
) -> Vec<T> {
    let mut out = vec![T::default(); batch * time * feat];
    for b in 0..batch {
        for (j, (t, _)) in valid_steps(mask, time, go_backwards, b)
            .into_iter()
            .enumerate()
        {
            let (src, dst) = ((b * time + t) * feat, (b * time + j) * feat);
            out[dst..dst + feat].copy_from_slice(&x[src..src + feat]);
        }
    }
    out
}

/// Expands compacted outputs `y` (batch, time, units; the j-th valid step of each row at
/// position j) to Keras' output sequence in processing order, and returns it with the
/// final state.
#[allow(clippy::too_many_arguments)]
pub fn expand<T: Copy + Default>(
    y: &[T],
    h0: &[T],
    mask: &[bool],
    batch: usize,
    time: usize,
    units: usize,
    go_backwards: bool,
    zero_output_for_mask: bool,
) -> (Vec<T>, Vec<T>) {
    let mut seq = vec![T::default(); batch * time * units];
    let mut state = h0.to_vec();
    for b in 0..batch {
        let steps = valid_steps(mask, time, go_backwards, b);
        let mut j = 0; // valid steps processed so far
        for k in 0..time {
            let here = j < steps.len() && steps[j].1 == k;
            if here {
                j += 1;
            }
            let dst = (b * time + k) * units;
            if here || (!zero_output_for_mask && j > 0) {
                let src = (b * time + j - 1) * units;
                seq[dst..dst + units].copy_from_slice(&y[src..src + units]);
            }
        }
        if !steps.is_empty() {
            let src = (b * time + steps.len() - 1) * units;
            state[b * units..(b + 1) * units].copy_from_slice(&y[src..src + units]);
        }
    }
    (seq, state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gru_core::seq::{forward, SeqInputs, SeqSpec, SeqWeights};
    use gru_core::{Activation, GruConfig};

    fn vals(n: usize, s: f64) -> Vec<f64> {
        (0..n)
            .map(|k| ((k as f64) * 0.61 + s).sin() * 0.7)
            .collect()
    }

    /// The loop's result on `mask` equals: compact, run right-padded (no go_backwards),
    /// expand. This is what the cuDNN path will do, checked on the host.
    #[test]
    fn compaction_reproduces_the_loop_on_every_mask_kind() {
        let (b, t, i, u) = (4, 6, 3, 2);
        let masks: Vec<(&str, Vec<bool>)> = vec![
            ("right", (0..b * t).map(|k| k % t < t - k / t).collect()),
            ("left", (0..b * t).map(|k| k % t >= k / t).collect()),
            ("holes", (0..b * t).map(|k| (k * 7 + 3) % 4 != 0).collect()),
            (
                "all_false_row",
                (0..b * t).map(|k| k / t != 2 && k % 2 == 0).collect(),
            ),
        ];
        let (k, r, bias, x, h0) = (
            vals(i * 3 * u, 0.1),
            vals(u * 3 * u, 0.2),
            vals(2 * 3 * u, 0.3),
            vals(b * t * i, 0.4),
            vals(b * u, 0.5),
        );
        let w = SeqWeights {
            kernel: &k,
            recurrent: &r,
            bias: &bias,
        };
        let mut checked = 0;
        for (name, mask) in &masks {
            for go_backwards in [false, true] {
                for zero in [false, true] {
                    let mut cfg = GruConfig::new(u);
                    cfg.go_backwards = go_backwards;
                    cfg.zero_output_for_mask = zero;
                    cfg.activation = Activation::Tanh;
                    let spec = SeqSpec::new(&cfg, b, t, i);
                    let m8: Vec<u8> = mask.iter().map(|&m| m as u8).collect();
                    let inp = SeqInputs {
                        x: &x,
                        h0: &h0,
                        mask: Some(&m8),
                        input_masks: &[],
                        recurrent_masks: &[],
                    };
                    let (want, _) = forward(&spec, &w, &inp, false).unwrap();

                    let xc = compact(&x, mask, b, t, i, go_backwards);
                    let lens = lengths(mask, b, t);
                    let right: Vec<u8> = (0..b * t)
                        .map(|q| ((q % t) < lens[q / t] as usize) as u8)
                        .collect();
                    let mut plain = cfg.clone();
                    plain.go_backwards = false;
                    plain.zero_output_for_mask = true; // what cuDNN writes at padding (0)
                    let spec_c = SeqSpec::new(&plain, b, t, i);
                    let inp_c = SeqInputs {
                        x: &xc,
                        h0: &h0,
                        mask: Some(&right),
                        input_masks: &[],
                        recurrent_masks: &[],
                    };
                    let (yc, _) = forward(&spec_c, &w, &inp_c, false).unwrap();
                    let (seq, state) = expand(&yc.sequence, &h0, mask, b, t, u, go_backwards, zero);
                    for (a, e) in seq.iter().zip(&want.sequence) {
                        assert!(
                            (a - e).abs() < 1e-14,
                            "{name} gb={go_backwards} zero={zero}: {a} vs {e}"
                        );
                    }
                    for (a, e) in state.iter().zip(&want.state) {
                        assert!((a - e).abs() < 1e-14, "{name} state");
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 16);
    }

    #[test]
    fn lengths_and_compaction_by_hand() {
        // Row 0: [x, _, x, _], row 1: [_, _, x, x].
        let mask = [true, false, true, false, false, false, true, true];
        assert_eq!(lengths(&mask, 2, 4), vec![2, 2]);
        let x: Vec<i32> = (1..=8).collect();
        assert_eq!(
            compact(&x, &mask, 2, 4, 1, false),
            vec![1, 3, 0, 0, 7, 8, 0, 0]
        );
        assert_eq!(
            compact(&x, &mask, 2, 4, 1, true),
            vec![3, 1, 0, 0, 8, 7, 0, 0]
        );
    }
}
