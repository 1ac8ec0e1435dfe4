//! Backward with the hidden units split over threads: the counterpart of
//! [`forward_units`](super::units::forward_units) for batches too small to split by rows.
//!
//! Thread j owns units `[u0, u1)`. Going back through the steps it carries its units of
//! `dh`, runs their masking rules and gate derivatives from its columns of the saved
//! activations, and publishes its columns of the step's recurrent gradient `dHP` (batch,
//! 3u). One barrier per step makes the whole `dHP` row visible; each thread then adds
//! `dHP @ U^T` for its own units (its rows of `U`, packed once per call, so they stay in
//! that core's cache). After the loop the calling thread runs the products over all steps
//! (`dU`, `dW`, `dX`) on the stacked gradients, as the one-thread backward does, with the
//! call's threads for the products over all steps.
//!
//! reset_before is not split (its `dq = da_h @ U_h^T` needs every unit's `da_h` before
//! `dr`: a second barrier per step); such calls run [`backward_with`].

use super::all_steps::{input_grads, recurrent_weight_grads};
use super::backward::{
    backward_with, check_grad_inputs, gate_grads, masked_step_rules, scatter_step_grads,
    state_grad_through_product, BiasSums, SeqGrads, StepGrads,
};
use super::forward::{overwritten, Saved, Workspace};
use super::matmul::{Rhs, View};
use super::team::run_each;
use super::units::{column_pieces, columns, lock, unit_ranges, PoisonOnPanic, Shared};
use super::{validate, Float, SeqInputs, SeqSpec, SeqWeights, Threads};
use crate::error::Result;
use std::ops::Range;

/// One slice's task.
struct Slice<'a, T> {
    spec: &'a SeqSpec,
    w: &'a SeqWeights<'a, T>,
    inp: &'a SeqInputs<'a, T>,
    saved: &'a Saved<T>,
    d_sequence: &'a [T],
    d_state: &'a [T],
    units: Range<usize>,
    shared: &'a Shared<T>,
}

/// A slice's pieces of the stacked gradients: its columns of each gate block of every
/// `dHP` row, and (reset_after) of every `d_ah` row.
struct Dest<'a, T> {
    dhp: [Vec<&'a mut [T]>; 3],
    d_ah: Vec<&'a mut [T]>,
}

/// What a slice computed besides the stacked gradients: its units of `dh0` (batch, uj) and
/// of the bias sums.
struct SliceOut<T> {
    dh: Vec<T>,
    sums: BiasSums<T>,
}

/// A slice's columns of the saved activations (fields not kept stay empty).
fn saved_columns<T: Float>(saved: &Saved<T>, u: usize, r: &Range<usize>) -> Saved<T> {
    let of = |v: &Vec<T>| columns(v, u, r);
    Saved {
        h_prev: of(&saved.h_prev),
        z: of(&saved.z),
        a_z: of(&saved.a_z),
        r: of(&saved.r),
        a_r: of(&saved.a_r),
        hh: of(&saved.hh),
        a_h: of(&saved.a_h),
        extra: of(&saved.extra),
        pre_scratch: Vec::new(),
    }
}

/// [`backward_with`] with the units split over up to `threads` threads (see the module
/// docs); `wss[0]` holds the stacked gradients. The same gradients as [`backward_with`],
/// to rounding (the per-step products run on other tiles).
#[allow(clippy::too_many_arguments)]
pub fn backward_units<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    saved: &Saved<T>,
    d_sequence: &[T],
    d_state: &[T],
    wss: &mut Vec<Workspace<T>>,
    threads: usize,
) -> Result<SeqGrads<T>> {
    if wss.is_empty() {
        wss.push(Workspace::default());
    }
    let ranges = unit_ranges(spec.units, spec.threads.at_once(threads));
    if !spec.reset_after || ranges.len() < 2 {
        return backward_with(spec, w, inp, saved, d_sequence, d_state, &mut wss[0]);
    }
    validate(spec, w, inp)?;
    check_grad_inputs(spec, saved, d_sequence, d_state)?;
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let ws = &mut wss[0];
    let mut dhp_all = std::mem::take(&mut ws.d_hp_all);
    let mut d_ah = std::mem::take(&mut ws.d_xp);
    overwritten(&mut dhp_all, time * bsz * 3 * u);
    overwritten(&mut d_ah, time * bsz * u);
    let d_out = (d_sequence, d_state);
    let (sums, h0) = run_slices(
        spec,
        (w, inp, saved),
        d_out,
        &ranges,
        (&mut dhp_all, &mut d_ah),
    )?;
    let recurrent = match spec.wanted.weights {
        true => recurrent_weight_grads(spec, inp.recurrent_masks, saved, &dhp_all),
        false => Vec::new(),
    };
    let (kernel, x) = input_grads(spec, w, inp, (&dhp_all, &d_ah));
    let ws = &mut wss[0];
    ws.d_hp_all = dhp_all;
    ws.d_xp = d_ah;
    Ok(SeqGrads {
        x,
        kernel,
        recurrent,
        bias: sums.into_grads(spec),
        h0,
    })
}

/// Runs one slice per range on the call's team: fills `dhp_all` and `d_ah`, returns the
/// bias sums and `dh0`.
fn run_slices<T: Float>(
    spec: &SeqSpec,
    (w, inp, saved): (&SeqWeights<T>, &SeqInputs<T>, &Saved<T>),
    (d_sequence, d_state): (&[T], &[T]),
    ranges: &[Range<usize>],
    (dhp_all, d_ah): (&mut [T], &mut [T]),
) -> Result<(BiasSums<T>, Vec<T>)> {
    let (bsz, u) = (spec.batch, spec.units);
    let row = || vec![T::ZERO; bsz * 3 * u];
    let shared = Shared::new(row(), row(), ranges.len());
    let slices = ranges.iter().map(|r| Slice {
        spec,
        w,
        inp,
        saved,
        d_sequence,
        d_state,
        units: r.clone(),
        shared: &shared,
    });
    let jobs = slices.zip(destinations(ranges, u, dhp_all, d_ah));
    let outs = run_each(spec.threads.team, jobs, |(s, d)| {
        let _guard = PoisonOnPanic(&s.shared.barrier);
        run_slice(&s, d)
    });
    let mut sums = BiasSums::new(3 * u);
    let mut h0 = vec![T::ZERO; bsz * u];
    let no_result = || crate::error::GruError::Internal {
        what: "a unit slice of the backward left no result".into(),
    };
    for (r, out) in ranges.iter().zip(outs.ok_or_else(no_result)?) {
        merge(u, r, out.ok_or_else(no_result)?, &mut sums, &mut h0);
    }
    Ok((sums, h0))
}

/// Each slice's pieces of `dhp_all` (rows `3u` wide) and `d_ah` (rows `u` wide).
fn destinations<'a, T>(
    ranges: &[Range<usize>],
    u: usize,
    dhp_all: &'a mut [T],
    d_ah: &'a mut [T],
) -> Vec<Dest<'a, T>> {
    let gate_ranges: Vec<Range<usize>> = (0..3)
        .flat_map(|g| ranges.iter().map(move |r| g * u + r.start..g * u + r.end))
        .collect();
    // Gate-major: gate g's pieces are the g-th run of `ranges.len()` entries.
    let n = ranges.len();
    let mut by_range = column_pieces(dhp_all, 3 * u, &gate_ranges).into_iter();
    let mut gates: Vec<std::vec::IntoIter<Vec<&'a mut [T]>>> = (0..3)
        .map(|_| by_range.by_ref().take(n).collect::<Vec<_>>().into_iter())
        .collect();
    let mut d_ah_pieces = column_pieces(d_ah, u, ranges).into_iter();
    (0..n)
        .map(|_| Dest {
            dhp: [0, 1, 2].map(|g| gates[g].next().unwrap_or_default()),
            d_ah: d_ah_pieces.next().unwrap_or_default(),
        })
        .collect()
}

/// Adds a slice's bias sums and `dh0` into the whole call's.
fn merge<T: Float>(
    u: usize,
    r: &Range<usize>,
    out: SliceOut<T>,
    sums: &mut BiasSums<T>,
    h0: &mut [T],
) {
    let uj = r.len();
    for g in 0..3 {
        let (dst, src) = (g * u + r.start..g * u + r.end, g * uj..(g + 1) * uj);
        sums.input[dst.clone()].copy_from_slice(&out.sums.input[src.clone()]);
        sums.recurrent[dst].copy_from_slice(&out.sums.recurrent[src]);
    }
    for (row, part) in h0.chunks_exact_mut(u).zip(out.dh.chunks_exact(uj)) {
        row[r.clone()].copy_from_slice(part);
    }
}

cpu_dispatch! {
    /// One slice's step loop, compiled for the widest vectors the CPU has.
    fn run_slice<T: Float>(s: &Slice<'_, T>, dest: Dest<'_, T>) -> Option<SliceOut<T>> => run_slice_body
}

#[inline(always)]
fn run_slice_body<T: Float>(s: &Slice<'_, T>, mut dest: Dest<'_, T>) -> Option<SliceOut<T>> {
    let spec = s.spec;
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let (r, uj) = (s.units.clone(), s.units.len());
    let (u3, uj3, bu) = (3 * u, 3 * uj, bsz * uj);
    let sub = SeqSpec {
        units: uj,
        threads: spec.threads.one_thread(),
        ..spec.clone()
    };
    let saved = saved_columns(s.saved, u, &r);
    let d_seq = columns(s.d_sequence, u, &r);
    let rec_masks: Vec<Vec<T>> = (s.inp.recurrent_masks.iter())
        .map(|m| columns(m, u, &r))
        .collect();
    // U^T's columns of this slice's units: its rows of U, transposed ((3u, uj)).
    let view = View::rows(s.w.recurrent, r.start * u3, uj, u3, u3).t();
    let u_t = Rhs::new(view, Threads::ONE, bsz, time);
    let mut g = StepGrads {
        dh: columns(s.d_state, u, &r),
        d_carry: vec![T::ZERO; bu],
        dh_new: vec![T::ZERO; bu],
        dz: vec![T::ZERO; bu],
        dr: vec![T::ZERO; bu],
        da_h: vec![T::ZERO; bu],
    };
    let mut sums = BiasSums::new(uj3);
    let (mut dhp, mut d_ah) = (vec![T::ZERO; bsz * uj3], vec![T::ZERO; bu]);
    let (mut row, mut scratch) = (vec![T::ZERO; bsz * u3], vec![T::ZERO; bu]);
    for k in (0..time).rev() {
        let st = saved.step(k, bu);
        masked_step_rules(&sub, s.inp.mask, (k, spec.t_of(k)), st.z, &d_seq, &mut g);
        gate_grads(&sub, &st, &mut g, None::<fn(&mut StepGrads<T>)>);
        scatter_step_grads(&sub, st.r, &g, (&mut d_ah, &mut dhp), &mut sums);
        dest.write(k, bsz, uj, &dhp, &d_ah);
        let mut whole = lock(&s.shared.rows[k % 2]);
        for (all, part) in whole.chunks_exact_mut(u3).zip(dhp.chunks_exact(uj3)) {
            for gate in 0..3 {
                let cols = gate * u + r.start..gate * u + r.end;
                all[cols].copy_from_slice(&part[gate * uj..(gate + 1) * uj]);
            }
        }
        drop(whole);
        if !s.shared.barrier.wait() {
            return None;
        }
        row.copy_from_slice(&lock(&s.shared.rows[k % 2]));
        let product = (&u_t, Threads::ONE);
        state_grad_through_product(spec, product, &rec_masks, &row, &mut scratch, &mut g.dh);
    }
    Some(SliceOut { dh: g.dh, sums })
}

impl<T: Float> Dest<'_, T> {
    /// Copies step k's gradients of this slice (`dhp` (batch, 3uj), `d_ah` (batch, uj))
    /// into its pieces of the stacked arrays.
    fn write(&mut self, k: usize, bsz: usize, uj: usize, dhp: &[T], d_ah: &[T]) {
        for (b, part) in dhp.chunks_exact(3 * uj).enumerate() {
            for (gate, pieces) in self.dhp.iter_mut().enumerate() {
                pieces[k * bsz + b].copy_from_slice(&part[gate * uj..(gate + 1) * uj]);
            }
            if let Some(piece) = self.d_ah.get_mut(k * bsz + b) {
                piece.copy_from_slice(&d_ah[b * uj..(b + 1) * uj]);
            }
        }
    }
}
