//! Forward over the whole sequence.

use super::matmul::{gemm, Rhs, View};
use super::{clip_pre, masked_inputs, validate, Float, SeqInputs, SeqSpec, SeqWeights};
use crate::error::Result;

/// The outputs of a forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqOutput<T> {
    /// (batch, time, units), in processing order (Keras' `sequence`).
    pub sequence: Vec<T>,
    /// (batch, units): the final carried state.
    pub state: Vec<T>,
}

/// What the backward pass needs from the forward pass: per step k, (batch, units) blocks at
/// `(k * batch + b) * units`. `a_z`, `a_r` and `a_h` are empty when the backward does not
/// read them ([`SeqSpec::keeps_pre_activations`]).
#[derive(Debug, Clone, Default)]
pub struct Saved<T> {
    /// State before the step.
    pub h_prev: Vec<T>,
    /// Update gate z and its pre-activation.
    pub z: Vec<T>,
    /// `a_z`.
    pub a_z: Vec<T>,
    /// Reset gate r.
    pub r: Vec<T>,
    /// `a_r`.
    pub a_r: Vec<T>,
    /// Candidate hh.
    pub hh: Vec<T>,
    /// `a_h`.
    pub a_h: Vec<T>,
    /// reset_after: the recurrent candidate `h @ U_h + b_h` that r multiplies; reset_before:
    /// `r * h` (masked by the recurrent dropout mask), the left factor of `@ U_h`.
    pub extra: Vec<T>,
    /// One step's pre-activations when `a_z`, `a_r` and `a_h` are not kept (empty; see
    /// [`SeqSpec::keeps_pre_activations`]).
    pub(crate) pre_scratch: Vec<T>,
}

/// The input projection of every timestep, bias included: (batch * time, 3u), row b*T + t.
/// The input projection of every timestep, without bias (the biases are added per step,
/// into the small recurrent buffer): (batch * time, 3u), row b*T + t.
pub(crate) fn project_inputs_into<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    xp: &mut Vec<T>,
) {
    let (n, i, u) = (spec.batch * spec.time, spec.input, spec.units);
    let u3 = 3 * u;
    if xp.len() != n * u3 {
        xp.clear();
        xp.resize(n * u3, T::ZERO);
    }
    let th = spec.threads.over_all_steps();
    match inp.input_masks {
        [] => gemm(
            xp,
            0,
            u3,
            View::rows(inp.x, 0, n, i, i),
            View::rows(w.kernel, 0, i, u3, u3),
            false,
            th,
        ),
        [m] => {
            let xm = masked_inputs(spec, inp.x, m);
            gemm(
                xp,
                0,
                u3,
                View::rows(&xm, 0, n, i, i),
                View::rows(w.kernel, 0, i, u3, u3),
                false,
                th,
            )
        }
        masks => {
            for (g, m) in masks.iter().enumerate() {
                let xm = masked_inputs(spec, inp.x, m);
                gemm(
                    xp,
                    g * u,
                    u3,
                    View::rows(&xm, 0, n, i, i),
                    View::rows(w.kernel, g * u, i, u, u3),
                    false,
                    th,
                );
            }
        }
    }
}

/// The largest up-front projection (bytes) kept when the per-step one could run: it stays
/// in the caches.
const UP_FRONT_MAX_BYTES: usize = 4 << 20;

#[cfg(test)]
thread_local! {
    /// Tests: force the per-step projection on (or off) wherever the kernel is packed.
    pub(crate) static PER_STEP: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    /// Tests: how many forwards projected per step.
    pub(crate) static PER_STEP_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Where each step's input projection comes from. One product projects every timestep
/// first, into (batch * time, 3u); when that buffer would be larger than
/// [`UP_FRONT_MAX_BYTES`], the kernel packed (f32, one thread, AVX) and the batch at least
/// four rows, each step instead projects its own timestep just before its gate pass, into a
/// (batch, 3u) buffer that stays in cache. Measured on one core at the reference shape
/// (64, 100, 128, 256): the up-front projection's 20 MB, read back one strided row per batch
/// row at every step, made the gate pass wait on memory (forward 19.9 -> 18.6 ms per step);
/// at B = 1 the one large product wins (0.77 against 1.15 ms).
enum Projection<'a, T: Float> {
    /// The whole sequence's projection, computed up front (`ws.xp`).
    UpFront,
    /// The packed kernel and the (masked) inputs, one per input-dropout mask (or the
    /// inputs themselves).
    PerStep {
        kernel: Rhs<'a, T>,
        sources: Vec<std::borrow::Cow<'a, [T]>>,
    },
}

impl<'a, T: Float> Projection<'a, T> {
    fn new(spec: &SeqSpec, w: &'a SeqWeights<T>, inp: &SeqInputs<'a, T>, xp: &mut Vec<T>) -> Self {
        let (i, u3) = (spec.input, 3 * spec.units);
        let up_front_bytes = spec.batch * spec.time * u3 * std::mem::size_of::<T>();
        let per_step = up_front_bytes > UP_FRONT_MAX_BYTES && spec.batch >= 4;
        #[cfg(test)]
        let per_step = PER_STEP.with(|c| c.get()).unwrap_or(per_step);
        // Packed only when the per-step projection runs (it needs the packed kernel).
        let kernel = per_step.then(|| {
            let view = View::rows(w.kernel, 0, i, u3, u3);
            Rhs::new(view, spec.threads, spec.batch, spec.time)
        });
        let Some(kernel) = kernel.filter(Rhs::is_packed) else {
            project_inputs_into(spec, w, inp, xp);
            return Projection::UpFront;
        };
        #[cfg(test)]
        PER_STEP_RUNS.with(|c| c.set(c.get() + 1));
        let sources = match inp.input_masks {
            [] => vec![std::borrow::Cow::Borrowed(inp.x)],
            masks => masks
                .iter()
                .map(|m| std::borrow::Cow::Owned(masked_inputs(spec, inp.x, m)))
                .collect(),
        };
        Projection::PerStep { kernel, sources }
    }

    /// Step `t`'s rows: from the up-front projection, or projected now into `step_xp`.
    fn step<'b>(
        &self,
        spec: &SeqSpec,
        t: usize,
        xp: &'b [T],
        step_xp: &'b mut Vec<T>,
    ) -> StepInputs<'b, T> {
        let (bsz, time, i, u) = (spec.batch, spec.time, spec.input, spec.units);
        let u3 = 3 * u;
        let Projection::PerStep { kernel, sources } = self else {
            return StepInputs { xp, time, t, u3 };
        };
        if step_xp.len() != bsz * u3 {
            step_xp.clear();
            step_xp.resize(bsz * u3, T::ZERO);
        }
        let th = spec.threads;
        match sources.as_slice() {
            [x] => {
                let a = View::rows(x, t * i, bsz, i, time * i);
                kernel.product(step_xp, 0, u3, a, 0..i, 0..u3, false, th);
            }
            per_gate => {
                for (g, x) in per_gate.iter().enumerate() {
                    let a = View::rows(x, t * i, bsz, i, time * i);
                    kernel.product(step_xp, g * u, u3, a, 0..i, g * u..(g + 1) * u, false, th);
                }
            }
        }
        StepInputs {
            xp: step_xp,
            time: 1,
            t: 0,
            u3,
        }
    }
}

/// What the recurrent buffer starts from: z and r get the input and recurrent biases, the
/// candidate (reset_after) its recurrent bias; the candidate's input bias is added with x_h.
pub(crate) fn step_bias<T: Float>(spec: &SeqSpec, w: &SeqWeights<T>) -> Option<Vec<T>> {
    let u3 = 3 * spec.units;
    if !spec.use_bias {
        return None;
    }
    let mut b: Vec<T> = w.bias[..u3].to_vec();
    if spec.reset_after {
        for (j, v) in b.iter_mut().enumerate() {
            let rec = w.bias[u3 + j];
            *v = if j < 2 * spec.units { *v + rec } else { rec };
        }
    }
    Some(b)
}

/// The recurrent product of one step into `hp` (batch, 3u): z and r columns always, the
/// candidate's columns with reset_after. The step bias is added by the gate pass.
pub(crate) fn recurrent_product<T: Float>(
    spec: &SeqSpec,
    rhs: &Rhs<T>,
    h: &[T],
    rec_masks: &[Vec<T>],
    hp: &mut [T],
    scratch: &mut [T],
) {
    let (b, u) = (spec.batch, spec.units);
    let u3 = 3 * u;
    let gates = if spec.reset_after { 3 } else { 2 };
    let accumulate = false;
    let th = spec.threads;
    if rec_masks.is_empty() {
        let a = View::rows(h, 0, b, u, u);
        rhs.product(hp, 0, u3, a, 0..u, 0..gates * u, accumulate, th);
    } else {
        for (g, m) in rec_masks.iter().take(gates).enumerate() {
            for ((s, &hv), &mv) in scratch.iter_mut().zip(h).zip(m) {
                *s = hv * mv;
            }
            let a = View::rows(scratch, 0, b, u, u);
            rhs.product(hp, g * u, u3, a, 0..u, g * u..(g + 1) * u, accumulate, th);
        }
    }
}

/// Buffers the fused path reuses from call to call (a layer keeps one per float type):
/// fresh multi-megabyte allocations cost page faults on every call.
#[derive(Debug, Default)]
pub struct Workspace<T> {
    pub(crate) xp: Vec<T>,
    pub(crate) step_xp: Vec<T>,
    pub(crate) hp: Vec<T>,
    pub(crate) scratch: Vec<T>,
    pub(crate) scratch2: Vec<T>,
    pub(crate) scratch_rec: Vec<T>,
    pub(crate) h: Vec<T>,
    pub(crate) out_prev: Vec<T>,
    pub(crate) step: Saved<T>,
    pub(crate) d_xp: Vec<T>,
    pub(crate) d_hp_all: Vec<T>,
    /// A thread's own units of the output sequence (see `units`).
    pub(crate) sequence_part: Vec<T>,
    /// Saved activations handed back after a backward, reused by the next forward.
    pub pool: Option<Saved<T>>,
}

/// `n` zeros in `v`'s storage.
pub(super) fn sized<T: Float>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.clear();
    v.resize(n, T::ZERO);
    v
}

/// `n` values in `v`'s storage, for a buffer whose every element the caller writes before
/// reading it: values kept from an earlier call are not cleared (that was a memset of
/// tens of megabytes per call at the benchmark's shapes).
pub(super) fn overwritten<T: Float>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.resize(n, T::ZERO);
    v.truncate(n);
    v
}

impl<T: Float> Saved<T> {
    pub(super) fn fields(&mut self) -> [&mut Vec<T>; 8] {
        [
            &mut self.h_prev,
            &mut self.z,
            &mut self.a_z,
            &mut self.r,
            &mut self.a_r,
            &mut self.hh,
            &mut self.a_h,
            &mut self.extra,
        ]
    }

    /// Step k's blocks of `bu` values (the pre-activations in a one-step scratch when they
    /// are not kept).
    pub(super) fn block(&mut self, k: usize, bu: usize) -> StepBlock<'_, T> {
        let r = k * bu..(k + 1) * bu;
        let (a_z, a_r, a_h) = if self.a_z.is_empty() {
            let s = overwritten(&mut self.pre_scratch, 3 * bu);
            let (a_z, rest) = s.split_at_mut(bu);
            let (a_r, a_h) = rest.split_at_mut(bu);
            (a_z, a_r, a_h)
        } else {
            (
                &mut self.a_z[r.clone()],
                &mut self.a_r[r.clone()],
                &mut self.a_h[r.clone()],
            )
        };
        StepBlock {
            h_prev: &mut self.h_prev[r.clone()],
            z: &mut self.z[r.clone()],
            a_z,
            r: &mut self.r[r.clone()],
            a_r,
            hh: &mut self.hh[r.clone()],
            a_h,
            extra: &mut self.extra[r],
        }
    }

    /// Room for `n` values a field; the pre-activations only with `keep_pre` (else empty).
    pub(super) fn sized(mut self, n: usize, keep_pre: bool) -> Saved<T> {
        let [h_prev, z, a_z, r, a_r, hh, a_h, extra] = self.fields();
        for v in [h_prev, z, r, hh, extra] {
            // Every element is written before it is read.
            overwritten(v, n);
        }
        for v in [a_z, a_r, a_h] {
            match keep_pre {
                true => {
                    overwritten(v, n);
                }
                // Not grown first: that zeroed three (time, batch, units) arrays a call.
                false => v.clear(),
            }
        }
        self
    }
}

/// One step's activations, (batch, units) each (see [`Saved`] for their meaning).
pub(super) struct StepBlock<'a, T> {
    pub(super) h_prev: &'a mut [T],
    pub(super) z: &'a mut [T],
    pub(super) a_z: &'a mut [T],
    pub(super) r: &'a mut [T],
    pub(super) a_r: &'a mut [T],
    pub(super) hh: &'a mut [T],
    pub(super) a_h: &'a mut [T],
    pub(super) extra: &'a mut [T],
}

/// Runs the sequence. With `save`, keeps what [`backward()`](super::backward()) needs.
pub fn forward<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    save: bool,
) -> Result<(SeqOutput<T>, Option<Saved<T>>)> {
    let (b, t, u) = (spec.batch, spec.time, spec.units);
    let mut sequence = vec![T::ZERO; b * t * u];
    let mut state = vec![T::ZERO; b * u];
    let saved = forward_into(
        spec,
        w,
        inp,
        save,
        &mut Workspace::default(),
        &mut sequence,
        &mut state,
    )?;
    Ok((SeqOutput { sequence, state }, saved))
}

cpu_dispatch! {
    /// Runs the sequence into `sequence` (batch, time, units; processing order) and `state`
    /// (batch, units). Buffers come from `ws`; with `save`, the activations the backward
    /// needs are returned (in the pooled buffers when `ws` has them). The step loop is
    /// compiled for the widest vectors the CPU has (chosen at run time).
    pub fn forward_into<T: Float>(
        spec: &SeqSpec,
        w: &SeqWeights<T>,
        inp: &SeqInputs<T>,
        save: bool,
        ws: &mut Workspace<T>,
        sequence: &mut [T],
        state: &mut [T],
    ) -> Result<Option<Saved<T>>> => forward_body
}

/// The rows of step `t`'s input projection: row b is `xp[(b * time + t) * 3u..][..3u]`.
#[derive(Clone, Copy)]
pub(super) struct StepInputs<'a, T> {
    pub(super) xp: &'a [T],
    pub(super) time: usize,
    pub(super) t: usize,
    pub(super) u3: usize,
}

impl<'a, T> StepInputs<'a, T> {
    #[inline(always)]
    fn row(&self, b: usize) -> &'a [T] {
        let at = (b * self.time + self.t) * self.u3;
        &self.xp[at..at + self.u3]
    }
}

/// `a_z = x_z + (hp_z + b_z)`, `a_r = x_r + (hp_r + b_r)` (`b` the step bias, if any).
#[inline(always)]
fn gate_preactivations<T: Float>(
    u: usize,
    x: StepInputs<T>,
    hp: &[T],
    sbias: Option<&[T]>,
    blk: &mut StepBlock<T>,
) {
    let rows = blk.a_z.chunks_exact_mut(u).zip(blk.a_r.chunks_exact_mut(u));
    for (b, ((az, ar), hrow)) in rows.zip(hp.chunks_exact(3 * u)).enumerate() {
        let xr = x.row(b);
        let (hz, hr) = (&hrow[..u], &hrow[u..2 * u]);
        match sbias {
            Some(sb) => {
                add3(az, &xr[..u], hz, &sb[..u]);
                add3(ar, &xr[u..2 * u], hr, &sb[u..2 * u]);
            }
            None => {
                add2(az, &xr[..u], hz);
                add2(ar, &xr[u..2 * u], hr);
            }
        }
    }
}

/// z and r of `u` units: their pre-activations (clipped, with a clip) and activations.
#[inline(always)]
pub(super) fn update_and_reset_gates<T: Float>(
    spec: &SeqSpec,
    u: usize,
    x: StepInputs<T>,
    hp: &[T],
    sbias: Option<&[T]>,
    blk: &mut StepBlock<T>,
) {
    gate_preactivations(u, x, hp, sbias, blk);
    clip_pre(spec.clip, blk.a_z);
    clip_pre(spec.clip, blk.a_r);
    T::activate(spec.recurrent_activation, blk.a_z, blk.z);
    T::activate(spec.recurrent_activation, blk.a_r, blk.r);
}

/// The candidate `hh` from its pre-activation (clipped first, with a clip).
#[inline(always)]
pub(super) fn activate_candidate<T: Float>(spec: &SeqSpec, blk: &mut StepBlock<T>) {
    clip_pre(spec.clip, blk.a_h);
    T::activate(spec.activation, blk.a_h, blk.hh);
}

/// `o = x + (h + b)`.
#[inline(always)]
fn add3<T: Float>(o: &mut [T], x: &[T], h: &[T], b: &[T]) {
    for (((o, &xv), &hv), &bv) in o.iter_mut().zip(x).zip(h).zip(b) {
        *o = xv + (hv + bv);
    }
}

/// `o = x + h`.
#[inline(always)]
fn add2<T: Float>(o: &mut [T], x: &[T], h: &[T]) {
    for ((o, &xv), &hv) in o.iter_mut().zip(x).zip(h) {
        *o = xv + hv;
    }
}

/// reset_after: `a_h = (x_h + b_in_h) + r * pre` with `pre = hp_h + b_rec_h` (the step
/// bias's candidate part, if any; kept in `extra`, which the backward reads).
#[inline(always)]
pub(super) fn candidate_reset_after<T: Float>(
    u: usize,
    x: StepInputs<T>,
    hp: &[T],
    sbias: Option<&[T]>,
    b_in_h: &[T],
    blk: &mut StepBlock<T>,
) {
    let rows = blk
        .a_h
        .chunks_exact_mut(u)
        .zip(blk.extra.chunks_exact_mut(u));
    for (b, (((ah, extra), rr), hrow)) in rows
        .zip(blk.r.chunks_exact(u))
        .zip(hp.chunks_exact(3 * u))
        .enumerate()
    {
        let ph = &hrow[2 * u..];
        match sbias {
            Some(sb) => add2(extra, ph, &sb[2 * u..]),
            None => extra.copy_from_slice(ph),
        }
        let xh = &x.row(b)[2 * u..];
        for ((((o, &xv), &bv), &rv), &pv) in ah
            .iter_mut()
            .zip(xh)
            .zip(b_in_h)
            .zip(rr.iter())
            .zip(extra.iter())
        {
            *o = (xv + bv) + rv * pv;
        }
    }
}

/// reset_before: `q = r * h` (h times the candidate's recurrent dropout mask, if any; saved
/// in `extra`), then `a_h = (x_h + b_in_h) + q @ U_h`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn candidate_reset_before<T: Float>(
    spec: &SeqSpec,
    rhs: &Rhs<T>,
    x: StepInputs<T>,
    h: &[T],
    h_mask: Option<&Vec<T>>,
    b_in_h: &[T],
    scratch: &mut [T],
    blk: &mut StepBlock<T>,
) {
    let (bsz, u) = (spec.batch, spec.units);
    match h_mask {
        Some(m) => {
            for (((q, &rv), &hv), &mv) in blk.extra.iter_mut().zip(blk.r.iter()).zip(h).zip(m) {
                *q = rv * (hv * mv);
            }
        }
        None => {
            for ((q, &rv), &hv) in blk.extra.iter_mut().zip(blk.r.iter()).zip(h) {
                *q = rv * hv;
            }
        }
    }
    let q = View::rows(blk.extra, 0, bsz, u, u);
    rhs.product(scratch, 0, u, q, 0..u, 2 * u..3 * u, false, spec.threads);
    for (b, (ah, rh)) in blk
        .a_h
        .chunks_exact_mut(u)
        .zip(scratch.chunks_exact(u))
        .enumerate()
    {
        for (((o, &xv), &bv), &rv) in ah.iter_mut().zip(&x.row(b)[2 * u..]).zip(b_in_h).zip(rh) {
            *o = (xv + bv) + rv;
        }
    }
}

/// `h = z h + (1 - z) hh` on valid steps (masked ones keep h), and Keras' output rule:
/// the new state, or on a masked step the previous output (zeros with
/// `zero_output_for_mask`), written to step k of `sequence`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn blend_and_output<T: Float>(
    spec: &SeqSpec,
    mask: Option<&[u8]>,
    (k, t): (usize, usize),
    z: &[T],
    hh: &[T],
    h: &mut [T],
    out_prev: &mut [T],
    sequence: &mut [T],
) {
    let (time, u) = (spec.time, spec.units);
    let rows = h.chunks_exact_mut(u).zip(out_prev.chunks_exact_mut(u));
    for (b, ((hrow, orow), (zrow, hhrow))) in rows
        .zip(z.chunks_exact(u).zip(hh.chunks_exact(u)))
        .enumerate()
    {
        let valid = mask.is_none_or(|m| m[b * time + t] != 0);
        if valid {
            for (((hv, ov), &zv), &cv) in hrow.iter_mut().zip(orow.iter_mut()).zip(zrow).zip(hhrow)
            {
                *hv = zv * *hv + (T::ONE - zv) * cv;
                *ov = *hv;
            }
        } else if spec.zero_output_for_mask {
            orow.fill(T::ZERO);
        }
        sequence[(b * time + k) * u..(b * time + k + 1) * u].copy_from_slice(orow);
    }
}

/// The output buffers hold (batch, time, units) and (batch, units).
pub(super) fn check_outputs<T>(spec: &SeqSpec, sequence: &[T], state: &[T]) -> Result<()> {
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    if sequence.len() != bsz * time * u || state.len() != bsz * u {
        return Err(crate::error::GruError::Shape {
            what: "output buffers".into(),
            expected: format!("({bsz}, {time}, {u}) and ({bsz}, {u})"),
            got: format!("{} and {} values", sequence.len(), state.len()),
        });
    }
    Ok(())
}

/// The candidate's input bias (zeros without bias).
pub(super) fn candidate_input_bias<T: Float>(spec: &SeqSpec, w: &SeqWeights<T>) -> Vec<T> {
    let u = spec.units;
    match spec.use_bias {
        true => w.bias[2 * u..3 * u].to_vec(),
        false => vec![T::ZERO; u],
    }
}

#[inline(always)]
fn forward_body<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    save: bool,
    ws: &mut Workspace<T>,
    sequence: &mut [T],
    state: &mut [T],
) -> Result<Option<Saved<T>>> {
    validate(spec, w, inp)?;
    check_outputs(spec, sequence, state)?;
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let (u3, bu) = (3 * u, bsz * u);
    let projection = Projection::new(spec, w, inp, &mut ws.xp);
    let sbias = step_bias(spec, w);
    let b_in_h = candidate_input_bias(spec, w);
    let keep_pre = spec.keeps_pre_activations();
    let mut saved = save.then(|| {
        ws.pool
            .take()
            .unwrap_or_default()
            .sized(time * bu, keep_pre)
    });
    let mut step = std::mem::take(&mut ws.step).sized(bu, false);
    let hp = sized(&mut ws.hp, bsz * u3);
    let scratch = sized(&mut ws.scratch, bu);
    let h = sized(&mut ws.h, bu);
    h.copy_from_slice(inp.h0);
    let out_prev = sized(&mut ws.out_prev, bu);
    // The recurrent weights, packed once for every step's product.
    let rhs = Rhs::new(
        View::rows(w.recurrent, 0, u, u3, u3),
        spec.threads,
        bsz,
        time,
    );
    for k in 0..time {
        let t = spec.t_of(k);
        let x = projection.step(spec, t, &ws.xp, &mut ws.step_xp);
        let mut blk = match saved.as_mut() {
            Some(sv) => sv.block(k, bu),
            None => step.block(0, bu),
        };
        if save {
            blk.h_prev.copy_from_slice(h);
        }
        recurrent_product(spec, &rhs, h, inp.recurrent_masks, hp, scratch);
        update_and_reset_gates(spec, u, x, hp, sbias.as_deref(), &mut blk);
        if spec.reset_after {
            candidate_reset_after(u, x, hp, sbias.as_deref(), &b_in_h, &mut blk);
        } else {
            let h_mask = inp.recurrent_masks.get(2);
            candidate_reset_before(spec, &rhs, x, h, h_mask, &b_in_h, scratch, &mut blk);
        }
        activate_candidate(spec, &mut blk);
        blend_and_output(spec, inp.mask, (k, t), blk.z, blk.hh, h, out_prev, sequence);
    }
    state.copy_from_slice(h);
    ws.step = step;
    Ok(saved)
}
