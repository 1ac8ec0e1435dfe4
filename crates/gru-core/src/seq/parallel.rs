//! Batch-parallel forward and backward: GRU rows never interact, so each thread runs the
//! whole sequence for its own slice of the batch, with no synchronization per step. The
//! weight gradients of the slices are summed.

use super::backward::{backward_with, SeqGrads};
use super::forward::{forward_into, Saved, Workspace};
use super::team::run_each;
use super::{Float, SeqInputs, SeqSpec, SeqWeights};
use crate::error::Result;

/// Row ranges of `chunks` near-equal slices of `batch`.
pub fn split(batch: usize, chunks: usize) -> Vec<std::ops::Range<usize>> {
    let chunks = chunks.clamp(1, batch.max(1));
    (0..chunks)
        .map(|c| (c * batch / chunks)..((c + 1) * batch / chunks))
        .collect()
}

/// `buf` cut into consecutive disjoint pieces of `unit * range.len()` values, one per range
/// of `parts` (which cover `0..n` in order, as [`split`] gives them).
pub fn split_mut<'a, T>(
    mut buf: &'a mut [T],
    parts: &[std::ops::Range<usize>],
    unit: usize,
) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(parts.len());
    for r in parts {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(r.len() * unit);
        out.push(head);
        buf = tail;
    }
    out
}

fn sub_spec(spec: &SeqSpec, rows: &std::ops::Range<usize>) -> SeqSpec {
    SeqSpec {
        batch: rows.len(),
        threads: spec.threads.one_thread(),
        ..spec.clone()
    }
}

/// The inputs of rows `rows`; `owned` keeps the sliced dropout masks alive.
fn sub_inputs<'a, T: Float>(
    spec: &SeqSpec,
    inp: &SeqInputs<'a, T>,
    rows: &std::ops::Range<usize>,
    owned: &'a (Vec<Vec<T>>, Vec<Vec<T>>),
) -> SeqInputs<'a, T> {
    let (t, i, u) = (spec.time, spec.input, spec.units);
    SeqInputs {
        x: &inp.x[rows.start * t * i..rows.end * t * i],
        h0: &inp.h0[rows.start * u..rows.end * u],
        mask: inp.mask.map(|m| &m[rows.start * t..rows.end * t]),
        input_masks: &owned.0,
        recurrent_masks: &owned.1,
    }
}

fn sliced_masks<T: Float>(
    spec: &SeqSpec,
    inp: &SeqInputs<T>,
    rows: &std::ops::Range<usize>,
) -> (Vec<Vec<T>>, Vec<Vec<T>>) {
    let (i, u) = (spec.input, spec.units);
    (
        inp.input_masks
            .iter()
            .map(|m| m[rows.start * i..rows.end * i].to_vec())
            .collect(),
        inp.recurrent_masks
            .iter()
            .map(|m| m[rows.start * u..rows.end * u].to_vec())
            .collect(),
    )
}

/// [`forward_into`] over `chunks` batch slices in parallel (`wss` grows to one workspace per
/// slice), into `(sequence, state)`. Returns one `Saved` per slice when saving.
pub fn forward_chunked<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    save: bool,
    wss: &mut Vec<Workspace<T>>,
    (sequence, state): (&mut [T], &mut [T]),
    chunks: usize,
) -> Result<Vec<Option<Saved<T>>>> {
    let ranges = split(spec.batch, chunks);
    if ranges.len() == 1 {
        if wss.is_empty() {
            wss.push(Workspace::default());
        }
        return Ok(vec![forward_into(
            spec,
            w,
            inp,
            save,
            &mut wss[0],
            sequence,
            state,
        )?]);
    }
    while wss.len() < ranges.len() {
        wss.push(Workspace::default());
    }
    let (seq_row, u) = (spec.time * spec.units, spec.units);
    let masks: Vec<_> = ranges.iter().map(|r| sliced_masks(spec, inp, r)).collect();
    let mut outs: Vec<(&mut [T], &mut [T])> = Vec::new();
    let (mut rest_seq, mut rest_state) = (sequence, state);
    for r in &ranges {
        let (s_head, s_tail) = rest_seq.split_at_mut(r.len() * seq_row);
        let (h_head, h_tail) = rest_state.split_at_mut(r.len() * u);
        outs.push((s_head, h_head));
        rest_seq = s_tail;
        rest_state = h_tail;
    }
    let jobs = ranges.iter().zip(wss.iter_mut()).zip(outs).zip(&masks);
    let results = run_each(spec.threads.team, jobs, |(((r, ws), o), m)| {
        let sub = sub_spec(spec, r);
        let si = sub_inputs(spec, inp, r, m);
        forward_into(&sub, w, &si, save, ws, o.0, o.1)
    });
    collect(results)
}

/// Each slice's result, in slice order; an error when a slice left none (it cannot: see
/// [`run_each`]).
fn collect<R>(results: Option<Vec<Result<R>>>) -> Result<Vec<R>> {
    results
        .ok_or_else(|| crate::error::GruError::Internal {
            what: "a batch slice left no result".into(),
        })?
        .into_iter()
        .collect()
}

/// [`backward_with`] over the slices of [`forward_chunked`], in parallel.
pub fn backward_chunked<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    saved: &[Saved<T>],
    d_sequence: &[T],
    d_state: &[T],
    wss: &mut Vec<Workspace<T>>,
) -> Result<SeqGrads<T>> {
    let ranges = split(spec.batch, saved.len());
    if ranges.len() == 1 {
        if wss.is_empty() {
            wss.push(Workspace::default());
        }
        return backward_with(spec, w, inp, &saved[0], d_sequence, d_state, &mut wss[0]);
    }
    while wss.len() < ranges.len() {
        wss.push(Workspace::default());
    }
    let (seq_row, u) = (spec.time * spec.units, spec.units);
    let masks: Vec<_> = ranges.iter().map(|r| sliced_masks(spec, inp, r)).collect();
    let jobs = ranges.iter().zip(wss.iter_mut()).zip(saved).zip(&masks);
    let results = run_each(spec.threads.team, jobs, |(((r, ws), sv), m)| {
        let sub = sub_spec(spec, r);
        let si = sub_inputs(spec, inp, r, m);
        let ds = &d_sequence[r.start * seq_row..r.end * seq_row];
        let dh = &d_state[r.start * u..r.end * u];
        backward_with(&sub, w, &si, sv, ds, dh, ws)
    });
    let parts = collect(results)?;
    let mut total: Option<SeqGrads<T>> = None;
    for p in parts {
        total = Some(match total {
            None => p,
            Some(mut acc) => {
                acc.x.extend_from_slice(&p.x);
                acc.h0.extend_from_slice(&p.h0);
                for (a, b) in [
                    (&mut acc.kernel, &p.kernel),
                    (&mut acc.recurrent, &p.recurrent),
                    (&mut acc.bias, &p.bias),
                ] {
                    for (x, &y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                }
                acc
            }
        });
    }
    total.ok_or_else(|| crate::error::GruError::Shape {
        what: "batch".into(),
        expected: "at least one row".into(),
        got: "0".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::seq::Threads;

    #[test]
    fn chunked_equals_whole() {
        let spec = SeqSpec {
            batch: 5,
            time: 4,
            input: 3,
            units: 2,
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            reset_after: true,
            use_bias: true,
            go_backwards: true,
            zero_output_for_mask: false,
            threads: Threads::ONE,
            clip: None,
            wanted: Default::default(),
        };
        let f = |n: usize, s: f64| {
            (0..n)
                .map(|k| (k as f64 * 0.37 + s).sin())
                .collect::<Vec<f64>>()
        };
        let (k, r, b, x, h0) = (f(18, 0.1), f(12, 0.2), f(12, 0.3), f(60, 0.4), f(10, 0.5));
        let mask: Vec<u8> = (0..20).map(|i| (i % 3 != 1) as u8).collect();
        let rm: Vec<Vec<f64>> = (0..3)
            .map(|g| {
                f(10, g as f64)
                    .iter()
                    .map(|v| if *v > 0.0 { 2.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let w = SeqWeights {
            kernel: &k,
            recurrent: &r,
            bias: &b,
        };
        let inp = SeqInputs {
            x: &x,
            h0: &h0,
            mask: Some(&mask),
            input_masks: &[],
            recurrent_masks: &rm,
        };
        let (n, ns) = (5 * 4 * 2, 5 * 2);
        let (mut o1, mut o2, mut h1, mut h2) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; ns], vec![0.0; ns]);
        let s1 = forward_chunked(
            &spec,
            &w,
            &inp,
            true,
            &mut Vec::new(),
            (&mut o1, &mut h1),
            1,
        )
        .unwrap();
        let s2 = forward_chunked(
            &spec,
            &w,
            &inp,
            true,
            &mut Vec::new(),
            (&mut o2, &mut h2),
            2,
        )
        .unwrap();
        assert_eq!((&o1, &h1), (&o2, &h2));
        let (d, dstate): (Vec<f64>, Vec<f64>) = (f(n, 0.9), f(ns, 1.3));
        let s1: Vec<_> = s1.into_iter().map(|s| s.unwrap()).collect();
        let s2: Vec<_> = s2.into_iter().map(|s| s.unwrap()).collect();
        let g1 = backward_chunked(&spec, &w, &inp, &s1, &d, &dstate, &mut Vec::new()).unwrap();
        let g2 = backward_chunked(&spec, &w, &inp, &s2, &d, &dstate, &mut Vec::new()).unwrap();
        assert_eq!(g1.x, g2.x);
        assert_eq!(g1.h0, g2.h0);
        for (a, b) in g1
            .kernel
            .iter()
            .chain(&g1.recurrent)
            .chain(&g1.bias)
            .zip(g2.kernel.iter().chain(&g2.recurrent).chain(&g2.bias))
        {
            assert!((a - b).abs() < 1e-14);
        }
    }
}
