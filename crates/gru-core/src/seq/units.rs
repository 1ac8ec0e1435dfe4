//! Forward with the hidden units split over threads, for batches too small to split by rows
//! (one sequence at a time, as in streaming inference).
//!
//! Thread j owns units `[u0, u1)`: the z, r and candidate columns of those units in the
//! kernel, the recurrent kernel and the bias. At each step it multiplies the whole previous
//! state by its own columns of the recurrent kernel (packed once per call, so they stay in
//! that core's cache), runs the gate math of its units and publishes its part of the new
//! state. One barrier per step makes the whole state visible to every thread before the next
//! step reads it. Outputs and saved activations come out in the layout of
//! [`forward_into`], so the backward is the same. The slices run on the call's
//! [`Team`](super::Team) (`spec.threads.team`), as many as it runs at once.
//!
//! reset_before is not split: `(r * h) @ U_h` needs the reset gate of every unit, a second
//! barrier per step. Such calls (and calls whose units make one slice) run [`forward_into`].

use super::forward::{
    activate_candidate, blend_and_output, candidate_input_bias, candidate_reset_after,
    check_outputs, forward_into, project_inputs_into, sized, step_bias, update_and_reset_gates,
    Saved, StepInputs, Workspace,
};
use super::matmul::{Rhs, View};
use super::team::{run_each, Threads};
use super::{validate, Float, SeqInputs, SeqSpec, SeqWeights};
use crate::error::Result;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The fewest units a slice gets: below this the per-step barrier costs more than the
/// slice's share of the product saves.
pub const MIN_SLICE_UNITS: usize = 64;

/// Unit ranges of at most `parts` slices of `units`, each at least [`MIN_SLICE_UNITS`] wide
/// and starting at a multiple of 16 (whole vectors for the kernels); one range when the
/// units are too few to split.
pub fn unit_ranges(units: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, (units / MIN_SLICE_UNITS).max(1));
    let mut bounds: Vec<usize> = (0..parts).map(|c| c * units / parts / 16 * 16).collect();
    bounds.push(units);
    bounds.dedup();
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Whether [`forward_units`] splits a call of this form over `threads` threads.
pub fn splits(spec: &SeqSpec, threads: usize) -> bool {
    spec.reset_after && threads > 1 && unit_ranges(spec.units, threads).len() > 1
}

/// Tests: the slice starting at unit `.1` of a call with `.0` steps panics at its third step.
#[cfg(test)]
pub(crate) static PANIC_IN_SLICE: Mutex<Option<(usize, usize)>> = Mutex::new(None);

/// Spins of a barrier wait before it yields the core.
const SPINS_BEFORE_YIELD: u32 = 1 << 11;

/// A barrier that spins (the wait is a few microseconds, far below a sleep's wake-up time),
/// yields once it has spun long, and lets every waiter go when a thread panicked.
pub(super) struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl SpinBarrier {
    pub(super) fn new(parties: usize) -> Self {
        SpinBarrier {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Waits for every party; false when a party panicked (the caller stops).
    pub(super) fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            let mut spins = 0u32;
            while self.generation.load(Ordering::Acquire) == generation {
                if self.poisoned.load(Ordering::Acquire) {
                    return false;
                }
                // About 2048 pauses (tens of microseconds) before yielding: a step's wait
                // is a few microseconds, and a yield is a system call each time (with 32
                // spins, B = 1 training on two cores took 1.45 ms against 0.93).
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        !self.poisoned.load(Ordering::Acquire)
    }
}

/// Poisons the barrier when its thread unwinds, so that no other thread waits forever.
pub(super) struct PoisonOnPanic<'a>(pub(super) &'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
        }
    }
}

/// What the slices of a split call share: one row buffer for even steps and one for odd
/// steps (a step writes its own while a slower thread may still read the other's: forward,
/// the state; backward, the recurrent gradient), and the barrier.
pub(super) struct Shared<T> {
    pub(super) rows: [Mutex<Vec<T>>; 2],
    pub(super) barrier: SpinBarrier,
}

impl<T> Shared<T> {
    /// Row buffers `even` and `odd` for `parties` slices.
    pub(super) fn new(even: Vec<T>, odd: Vec<T>, parties: usize) -> Self {
        Shared {
            rows: [Mutex::new(even), Mutex::new(odd)],
            barrier: SpinBarrier::new(parties),
        }
    }
}

/// One thread's task: its units, and where its results go.
struct Slice<'a, T> {
    spec: &'a SeqSpec,
    w: &'a SeqWeights<'a, T>,
    inp: &'a SeqInputs<'a, T>,
    units: Range<usize>,
    shared: &'a Shared<T>,
}

/// A thread's pieces of the outputs: its units of every row of `sequence` (row b*T + k),
/// `state` (row b) and, when saving, of each [`Saved`] field (row k*B + b).
struct Dest<'a, T> {
    sequence: Vec<&'a mut [T]>,
    state: Vec<&'a mut [T]>,
    saved: Option<Vec<Vec<&'a mut [T]>>>,
}

/// Each range's pieces of every row of `data` (rows `width` wide); `ranges` tile `0..width`.
pub(super) fn column_pieces<'a, T>(
    data: &'a mut [T],
    width: usize,
    ranges: &[Range<usize>],
) -> Vec<Vec<&'a mut [T]>> {
    let mut out: Vec<Vec<&'a mut [T]>> = ranges.iter().map(|_| Vec::new()).collect();
    for row in data.chunks_exact_mut(width) {
        let mut rest = row;
        for (pieces, r) in out.iter_mut().zip(ranges) {
            let (head, tail) = rest.split_at_mut(r.len());
            pieces.push(head);
            rest = tail;
        }
    }
    out
}

/// The columns `r` of every row of `src` (rows `width` wide).
pub(super) fn columns<T: Float>(src: &[T], width: usize, r: &Range<usize>) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len() / width.max(1) * r.len());
    for row in src.chunks_exact(width) {
        out.extend_from_slice(&row[r.clone()]);
    }
    out
}

/// The columns of units `r` in each of the three gate blocks of every row of `src` (rows
/// `3 * units` wide): (rows, 3 * r.len()).
fn gate_columns<T: Float>(src: &[T], units: usize, r: &Range<usize>) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len() / units * r.len());
    for row in src.chunks_exact(3 * units) {
        for g in 0..3 {
            out.extend_from_slice(&row[g * units + r.start..g * units + r.end]);
        }
    }
    out
}

/// [`forward_into`] with the units split over up to `threads` threads (see the module
/// docs); `wss` grows to one workspace per slice. The same outputs as [`forward_into`].
#[allow(clippy::too_many_arguments)]
pub fn forward_units<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    save: bool,
    wss: &mut Vec<Workspace<T>>,
    (sequence, state): (&mut [T], &mut [T]),
    threads: usize,
) -> Result<Option<Saved<T>>> {
    if wss.is_empty() {
        wss.push(Workspace::default());
    }
    // A slice waits for the others at every step: only as many as the team runs at once.
    let ranges = unit_ranges(spec.units, spec.threads.at_once(threads));
    if !spec.reset_after || ranges.len() < 2 {
        return forward_into(spec, w, inp, save, &mut wss[0], sequence, state);
    }
    validate(spec, w, inp)?;
    check_outputs(spec, sequence, state)?;
    while wss.len() < ranges.len() {
        wss.push(Workspace::default());
    }
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let keep_pre = spec.keeps_pre_activations();
    let mut saved = save.then(|| {
        let pooled = wss[0].pool.take().unwrap_or_default();
        pooled.sized(time * bsz * u, keep_pre)
    });
    let dests = destinations(&ranges, u, sequence, state, saved.as_mut());
    let shared = Shared::new(inp.h0.to_vec(), vec![T::ZERO; bsz * u], ranges.len());
    let slices: Vec<Slice<T>> = ranges
        .iter()
        .map(|r| Slice {
            spec,
            w,
            inp,
            units: r.clone(),
            shared: &shared,
        })
        .collect();
    let jobs = slices.iter().zip(wss.iter_mut()).zip(dests);
    run_each(spec.threads.team, jobs, |((s, ws), d)| {
        run_guarded(s, ws, d)
    });
    Ok(saved)
}

/// Each slice's [`Dest`].
fn destinations<'a, T: Float>(
    ranges: &[Range<usize>],
    u: usize,
    sequence: &'a mut [T],
    state: &'a mut [T],
    saved: Option<&'a mut Saved<T>>,
) -> Vec<Dest<'a, T>> {
    let mut saved_pieces: Vec<Vec<Vec<&'a mut [T]>>> = ranges.iter().map(|_| Vec::new()).collect();
    let is_saved = saved.is_some();
    if let Some(sv) = saved {
        for field in sv.fields() {
            for (d, p) in saved_pieces.iter_mut().zip(column_pieces(field, u, ranges)) {
                d.push(p);
            }
        }
    }
    column_pieces(sequence, u, ranges)
        .into_iter()
        .zip(column_pieces(state, u, ranges))
        .zip(saved_pieces)
        .map(|((sequence, state), saved)| Dest {
            sequence,
            state,
            saved: is_saved.then_some(saved),
        })
        .collect()
}

/// [`run_slice`], poisoning the barrier if it panics.
fn run_guarded<T: Float>(s: &Slice<T>, ws: &mut Workspace<T>, dest: Dest<T>) {
    let _guard = PoisonOnPanic(&s.shared.barrier);
    run_slice(s, ws, dest);
}

cpu_dispatch! {
    /// One thread's whole sequence, compiled for the widest vectors the CPU has.
    fn run_slice<T: Float>(s: &Slice<'_, T>, ws: &mut Workspace<T>, dest: Dest<'_, T>) => run_slice_body
}

#[inline(always)]
fn run_slice_body<T: Float>(s: &Slice<'_, T>, ws: &mut Workspace<T>, mut dest: Dest<'_, T>) {
    let spec = s.spec;
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let (r, uj) = (s.units.clone(), s.units.len());
    let sub = SeqSpec {
        units: uj,
        threads: spec.threads.one_thread(),
        ..spec.clone()
    };
    let (kernel, recurrent, bias) = (
        gate_columns(s.w.kernel, u, &r),
        gate_columns(s.w.recurrent, u, &r),
        gate_columns(s.w.bias, u, &r),
    );
    let w = SeqWeights {
        kernel: &kernel,
        recurrent: &recurrent,
        bias: &bias,
    };
    project_inputs_into(&sub, &w, s.inp, &mut ws.xp);
    let sbias = step_bias(&sub, &w);
    let b_in_h = candidate_input_bias(&sub, &w);
    // This slice's columns of the recurrent kernel, over every unit of the state.
    let rhs = Rhs::new(
        View::rows(&recurrent, 0, u, 3 * uj, 3 * uj),
        sub.threads,
        bsz,
        time,
    );
    let save = dest.saved.is_some();
    let steps = if save { time } else { 1 };
    let keep_pre = save && spec.keeps_pre_activations();
    let mut local = std::mem::take(&mut ws.step).sized(steps * bsz * uj, keep_pre);
    let hp = sized(&mut ws.hp, bsz * 3 * uj);
    let masked = sized(&mut ws.scratch, bsz * u);
    let h_all = sized(&mut ws.h, bsz * u);
    let h = sized(&mut ws.scratch2, bsz * uj);
    let out_prev = sized(&mut ws.out_prev, bsz * uj);
    let seq_part = sized(&mut ws.sequence_part, bsz * time * uj);
    for k in 0..time {
        #[cfg(test)]
        if k == 2 && *PANIC_IN_SLICE.lock().unwrap() == Some((time, r.start)) {
            panic!("injected panic in the slice at unit {}", r.start);
        }
        let t = spec.t_of(k);
        h_all.copy_from_slice(&lock(&s.shared.rows[k % 2]));
        for (hrow, all) in h.chunks_exact_mut(uj).zip(h_all.chunks_exact(u)) {
            hrow.copy_from_slice(&all[r.clone()]);
        }
        let mut blk = local.block(if save { k } else { 0 }, bsz * uj);
        blk.h_prev.copy_from_slice(h);
        slice_product(spec, &rhs, (h_all, s.inp.recurrent_masks), masked, uj, hp);
        let x = StepInputs {
            xp: &ws.xp,
            time,
            t,
            u3: 3 * uj,
        };
        update_and_reset_gates(spec, uj, x, hp, sbias.as_deref(), &mut blk);
        candidate_reset_after(uj, x, hp, sbias.as_deref(), &b_in_h, &mut blk);
        activate_candidate(spec, &mut blk);
        blend_and_output(
            &sub,
            s.inp.mask,
            (k, t),
            blk.z,
            blk.hh,
            h,
            out_prev,
            seq_part,
        );
        if k + 1 < time {
            let mut next = lock(&s.shared.rows[(k + 1) % 2]);
            for (all, hrow) in next.chunks_exact_mut(u).zip(h.chunks_exact(uj)) {
                all[r.clone()].copy_from_slice(hrow);
            }
            drop(next);
            if !s.shared.barrier.wait() {
                return;
            }
        }
    }
    dest.write(uj, h, seq_part, &mut local);
    ws.step = local;
}

impl<T: Float> Dest<'_, T> {
    /// Copies a slice's results (its units of the state, the sequence and the saved
    /// activations, each `uj` wide) into its pieces of the outputs.
    fn write(&mut self, uj: usize, state: &[T], sequence: &[T], saved: &mut Saved<T>) {
        let copy = |pieces: &mut Vec<&mut [T]>, src: &[T]| {
            for (d, v) in pieces.iter_mut().zip(src.chunks_exact(uj)) {
                d.copy_from_slice(v);
            }
        };
        copy(&mut self.state, state);
        copy(&mut self.sequence, sequence);
        if let Some(fields) = self.saved.as_mut() {
            for (pieces, src) in fields.iter_mut().zip(saved.fields()) {
                copy(pieces, src);
            }
        }
    }
}

/// `hp (batch, 3 * uj) = h @ U_j` over the whole state `h` (each gate's columns from `h`
/// times that gate's recurrent dropout mask, when there are masks).
#[inline(always)]
fn slice_product<T: Float>(
    spec: &SeqSpec,
    rhs: &Rhs<T>,
    (h, rec_masks): (&[T], &[Vec<T>]),
    masked: &mut [T],
    uj: usize,
    hp: &mut [T],
) {
    let (bsz, u) = (spec.batch, spec.units);
    if rec_masks.is_empty() {
        let a = View::rows(h, 0, bsz, u, u);
        rhs.product(hp, 0, 3 * uj, a, 0..u, 0..3 * uj, false, Threads::ONE);
        return;
    }
    for (g, m) in rec_masks.iter().enumerate() {
        for ((o, &hv), &mv) in masked.iter_mut().zip(h).zip(m) {
            *o = hv * mv;
        }
        let a = View::rows(masked, 0, bsz, u, u);
        rhs.product(
            hp,
            g * uj,
            3 * uj,
            a,
            0..u,
            g * uj..(g + 1) * uj,
            false,
            Threads::ONE,
        );
    }
}

/// The lock's data; a lock poisoned by a panicking thread still holds valid values (the
/// barrier stops the other threads).
pub(super) fn lock<T>(m: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
