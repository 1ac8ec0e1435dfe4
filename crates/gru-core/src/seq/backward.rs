//! Backward through the whole sequence (BPTT), from the gradients of the sequence and of
//! the final state.
//!
//! Per step (newest first) only what is sequential: the masking rules, the gate
//! derivatives and `dh += dHP @ U^T`. The weight gradients are then one product each over
//! all steps: `dU = H^T @ dHP` with the states and recurrent gradients of every step
//! stacked, `dW = X^T @ dXP`, `dX = dXP @ W^T`. Every stacked array has one row per step
//! and batch row in processing order (k * batch + b). The input side's gradients `dXP`
//! are the recurrent side's `dHP` but for the candidate's columns under reset_after
//! (`da_h` against `da_h * r`), so only those are kept apart (a third of the copies per
//! step the gate pass made with a separate `dXP` in the input's order: 1.5 ms of a 33 ms
//! backward at 64,100,128,256); the inputs are laid out in processing order for `dW`, and
//! the `dX` products write straight into the input's order.

use super::forward::{overwritten, sized, Saved, Workspace};
use super::matmul::{gemm, Rhs, View};
use super::{clip_grad, validate, Float, SeqInputs, SeqSpec, SeqWeights};
use crate::error::{GruError, Result};

/// Gradients of a loss with respect to everything the sequence read (those that
/// `SeqSpec::wanted` leaves out are empty).
#[derive(Debug, Clone, PartialEq)]
pub struct SeqGrads<T> {
    /// (batch, time, input); empty unless `wanted.input`.
    pub x: Vec<T>,
    /// (input, 3u); empty unless `wanted.weights`.
    pub kernel: Vec<T>,
    /// (u, 3u); empty unless `wanted.weights`.
    pub recurrent: Vec<T>,
    /// (bias_rows, 3u); empty without bias or unless `wanted.weights`.
    pub bias: Vec<T>,
    /// (batch, units).
    pub h0: Vec<T>,
}

/// Backpropagates `d_sequence` (batch, time, units; processing order) and `d_state`
/// (batch, units) through the sequence whose forward pass saved `saved`.
pub fn backward<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    saved: &Saved<T>,
    d_sequence: &[T],
    d_state: &[T],
) -> Result<SeqGrads<T>> {
    backward_with(
        spec,
        w,
        inp,
        saved,
        d_sequence,
        d_state,
        &mut Workspace::default(),
    )
}

/// The saved states of every step (rows k * batch + b), each row times its batch row's
/// recurrent dropout mask.
fn masked_rows<T: Float>(h_prev: &[T], m: &[T], bsz: usize, u: usize) -> Vec<T> {
    h_prev
        .chunks_exact(u)
        .enumerate()
        .flat_map(|(row, src)| {
            let b = row % bsz;
            src.iter()
                .zip(&m[b * u..(b + 1) * u])
                .map(|(&s, &mv)| s * mv)
        })
        .collect()
}

cpu_dispatch! {
    /// [`backward`] with buffers from `ws`; like the forward, the step loop is compiled for
    /// the widest vectors the CPU has (chosen at run time).
    pub fn backward_with<T: Float>(
        spec: &SeqSpec,
        w: &SeqWeights<T>,
        inp: &SeqInputs<T>,
        saved: &Saved<T>,
        d_sequence: &[T],
        d_state: &[T],
        ws: &mut Workspace<T>,
    ) -> Result<SeqGrads<T>> => backward_body
}

/// The gradient inputs match the sequence and its forward.
fn check_grad_inputs<T>(
    spec: &SeqSpec,
    saved: &Saved<T>,
    d_sequence: &[T],
    d_state: &[T],
) -> Result<()> {
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let n = time * bsz * u;
    let pre_len = if spec.keeps_pre_activations() { n } else { 0 };
    let pre = [&saved.a_z, &saved.a_r, &saved.a_h];
    if d_sequence.len() != bsz * time * u
        || d_state.len() != bsz * u
        || saved.z.len() != n
        || pre.iter().any(|v| v.len() != pre_len && v.len() != n)
    {
        return Err(GruError::Shape {
            what: "backward inputs".into(),
            expected: format!(
                "d_sequence ({bsz}, {time}, {u}), d_state ({bsz}, {u}) and a matching forward"
            ),
            got: format!("{} and {} values", d_sequence.len(), d_state.len()),
        });
    }
    Ok(())
}

/// The per-step gradient buffers, (batch, units) each.
struct StepGrads<T> {
    /// d(loss)/d(state) carried back from later steps.
    dh: Vec<T>,
    /// d(out_k) from the next step repeating it (masked steps).
    d_carry: Vec<T>,
    /// d(h_new) of this step.
    dh_new: Vec<T>,
    dz: Vec<T>,
    dr: Vec<T>,
    da_h: Vec<T>,
}

/// Step k's saved activations, (batch, units) each.
struct SavedStep<'a, T> {
    h_prev: &'a [T],
    z: &'a [T],
    r: &'a [T],
    hh: &'a [T],
    a_z: &'a [T],
    a_r: &'a [T],
    a_h: &'a [T],
    extra: &'a [T],
}

impl<T> Saved<T> {
    fn step(&self, k: usize, bu: usize) -> SavedStep<'_, T> {
        let s = k * bu..(k + 1) * bu;
        SavedStep {
            h_prev: &self.h_prev[s.clone()],
            z: &self.z[s.clone()],
            r: &self.r[s.clone()],
            hh: &self.hh[s.clone()],
            // Empty when not kept: the backward then does not read them.
            a_z: self.a_z.get(s.clone()).unwrap_or(&[]),
            a_r: self.a_r.get(s.clone()).unwrap_or(&[]),
            a_h: self.a_h.get(s.clone()).unwrap_or(&[]),
            extra: &self.extra[s],
        }
    }
}

/// The output and state rules of masked steps, backwards: a valid step's output and the
/// carried state flow into d(h_new); a masked step passes its output gradient to the step
/// whose output it repeated (none with `zero_output_for_mask`) and keeps `dh`.
#[inline(always)]
fn masked_step_rules<T: Float>(
    spec: &SeqSpec,
    mask: Option<&[u8]>,
    (k, t): (usize, usize),
    z: &[T],
    d_sequence: &[T],
    g: &mut StepGrads<T>,
) {
    let (time, u) = (spec.time, spec.units);
    for b in 0..spec.batch {
        let valid = mask.is_none_or(|m| m[b * time + t] != 0);
        let dseq = &d_sequence[(b * time + k) * u..(b * time + k + 1) * u];
        let row = b * u..(b + 1) * u;
        let cells = g.dh_new[row.clone()]
            .iter_mut()
            .zip(&mut g.d_carry[row.clone()])
            .zip(&mut g.dh[row.clone()])
            .zip(&z[row]);
        for ((((dn, dc), dhv), &zv), &ds) in cells.zip(dseq) {
            let dout = ds + *dc;
            if valid {
                *dn = *dhv + dout;
                *dc = T::ZERO;
                *dhv = *dn * zv;
            } else {
                *dn = T::ZERO;
                *dc = if spec.zero_output_for_mask {
                    T::ZERO
                } else {
                    dout
                };
            }
        }
    }
}

/// `h_new = z h + (1 - z) hh`: dz and d(hh) (into `da_h`, before hh's derivative).
#[inline(always)]
fn blend_grads<T: Float>(st: &SavedStep<T>, g: &mut StepGrads<T>) {
    let cells = g.dz.iter_mut().zip(g.da_h.iter_mut()).zip(&g.dh_new);
    for (((dzv, dav), &dn), ((&hp, &hv), &zv)) in cells.zip(st.h_prev.iter().zip(st.hh).zip(st.z)) {
        *dzv = dn * (hp - hv);
        *dav = dn * (T::ONE - zv);
    }
}

/// reset_before: `a_h = x_h + q @ U_h` with `q = r * (h * m_h)`: `dq = da_h @ U_h^T` gives
/// dr and adds to dh.
#[inline(always)]
fn reset_before_grads<T: Float>(
    spec: &SeqSpec,
    u_t: &Rhs<T>,
    h_mask: Option<&Vec<T>>,
    st: &SavedStep<T>,
    scratch: &mut [T],
    g: &mut StepGrads<T>,
) {
    let (bsz, u) = (spec.batch, spec.units);
    let da_h = View::rows(&g.da_h, 0, bsz, u, u);
    u_t.product(scratch, 0, u, da_h, 2 * u..3 * u, 0..u, false, spec.threads);
    let cells =
        g.dr.iter_mut()
            .zip(g.dh.iter_mut())
            .zip(scratch.iter())
            .zip(st.h_prev)
            .zip(st.r);
    match h_mask {
        Some(m) => {
            for (((((d, dhv), &sv), &hp), &rv), &mv) in cells.zip(m) {
                *d = sv * (hp * mv);
                *dhv += sv * rv * mv;
            }
        }
        None => {
            for ((((d, dhv), &sv), &hp), &rv) in cells {
                *d = sv * hp;
                *dhv += sv * rv;
            }
        }
    }
}

/// The bias gradients, summed step by step while each step's rows are in cache (a pass
/// over the stacked gradients afterwards would read them all again from memory): the input
/// bias sums `d_xp`'s rows, reset_after's recurrent bias the recurrent product's.
struct BiasSums<T> {
    input: Vec<T>,
    recurrent: Vec<T>,
}

impl<T: Float> BiasSums<T> {
    fn new(u3: usize) -> Self {
        BiasSums {
            input: vec![T::ZERO; u3],
            recurrent: vec![T::ZERO; u3],
        }
    }

    #[inline(always)]
    fn add(acc: &mut [T], row: &[T]) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }

    /// The layer's bias gradient: (bias_rows, 3u), empty without bias.
    fn into_grads(self, spec: &SeqSpec) -> Vec<T> {
        match (spec.use_bias && spec.wanted.weights, spec.reset_after) {
            (false, _) => Vec::new(),
            (true, false) => self.input,
            (true, true) => {
                let mut d = self.input;
                d.extend(self.recurrent);
                d
            }
        }
    }
}

/// Writes step k's gradients into `dhp`, the gradient of the recurrent product (rows b;
/// reset_after: `da_h * r` for the candidate; reset_before keeps da_h there, for dU_h =
/// q^T @ da_h), under reset_after `da_h` into `d_ah` (the input side's candidate
/// gradient), and adds them to the bias sums.
#[inline(always)]
fn scatter_step_grads<T: Float>(
    spec: &SeqSpec,
    r: &[T],
    g: &StepGrads<T>,
    (d_ah, dhp): (&mut [T], &mut [T]),
    sums: &mut BiasSums<T>,
) {
    let u = spec.units;
    let u3 = 3 * u;
    if spec.reset_after {
        d_ah.copy_from_slice(&g.da_h);
    }
    for b in 0..spec.batch {
        let rows = b * u..(b + 1) * u;
        let (zr, rr, hr) = (
            &g.dz[rows.clone()],
            &g.dr[rows.clone()],
            &g.da_h[rows.clone()],
        );
        let drow = &mut dhp[b * u3..(b + 1) * u3];
        drow[..u].copy_from_slice(zr);
        drow[u..2 * u].copy_from_slice(rr);
        if spec.reset_after {
            for ((d, &a), &rv) in drow[2 * u..].iter_mut().zip(hr).zip(&r[rows]) {
                *d = a * rv;
            }
        } else {
            drow[2 * u..].copy_from_slice(hr);
        }
        if spec.use_bias && spec.wanted.weights {
            for (gate, v) in [zr, rr, hr].into_iter().enumerate() {
                BiasSums::add(&mut sums.input[gate * u..(gate + 1) * u], v);
            }
            BiasSums::add(&mut sums.recurrent, drow);
        }
    }
}

/// `U^T` ((3u, u)) for the per-step state products: packed once per backward (f32 with
/// AVX; see `kernel`); otherwise, for batches of two rows or more, a row-major copy (a
/// product over a transposed right-hand side runs about 30% slower through gemm: measured
/// 146 against 213 GFLOP/s at 64x768x256); for one row the transposed view (gemm's vector
/// path reads `U`'s rows directly).
fn recurrent_transposed<'a, T: Float>(
    spec: &SeqSpec,
    w: &'a SeqWeights<T>,
    copy: &'a mut Vec<T>,
) -> Rhs<'a, T> {
    let u = spec.units;
    let u3 = 3 * u;
    let view = View::rows(w.recurrent, 0, u, u3, u3).t();
    let rhs = Rhs::new(view, spec.threads, spec.batch);
    if rhs.is_packed() || spec.batch < 2 {
        return rhs;
    }
    copy.clear();
    copy.resize(u3 * u, T::ZERO);
    for (k, row) in w.recurrent.chunks_exact(u3).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            copy[j * u + k] = v;
        }
    }
    Rhs::new(View::rows(copy, 0, u3, u, u), spec.threads, spec.batch)
}

/// `dh += (dhp_g @ U_g^T) (* m_g)` over the gates that go through the recurrent product.
#[inline(always)]
fn state_grad_through_product<T: Float>(
    spec: &SeqSpec,
    u_t: &Rhs<T>,
    rec_masks: &[Vec<T>],
    dhp: &[T],
    scratch: &mut [T],
    dh: &mut [T],
) {
    let (bsz, u, th) = (spec.batch, spec.units, spec.threads);
    let u3 = 3 * u;
    let gates = if spec.reset_after { 3 } else { 2 };
    if rec_masks.is_empty() {
        let d = View::rows(dhp, 0, bsz, gates * u, u3);
        u_t.product(dh, 0, u, d, 0..gates * u, 0..u, true, th);
        return;
    }
    for (g, m) in rec_masks.iter().take(gates).enumerate() {
        let d = View::rows(dhp, g * u, bsz, u, u3);
        u_t.product(scratch, 0, u, d, g * u..(g + 1) * u, 0..u, false, th);
        for ((d, &v), &mv) in dh.iter_mut().zip(scratch.iter()).zip(m) {
            *d += v * mv;
        }
    }
}

/// The recurrent weights over all steps at once: `dU_g = H_g^T @ dHP_g` (rows k * batch + b;
/// H masked per gate with recurrent dropout), and the candidate block from reset_after's
/// `H_h^T @ d(pre)` or reset_before's `q^T @ da_h`.
fn recurrent_weight_grads<T: Float>(
    spec: &SeqSpec,
    rec_masks: &[Vec<T>],
    saved: &Saved<T>,
    dhp_all: &[T],
) -> Vec<T> {
    let (bsz, u, th) = (spec.batch, spec.units, spec.threads);
    let (u3, tb) = (3 * u, spec.time * bsz);
    let mut d_rec = vec![T::ZERO; u * u3];
    if rec_masks.is_empty() && spec.reset_after {
        // Every gate's left factor is the stacked states: one product over all columns.
        let (h, d) = (
            View::rows(&saved.h_prev, 0, tb, u, u).t(),
            View::rows(dhp_all, 0, tb, u3, u3),
        );
        gemm(&mut d_rec, 0, u3, h, d, false, th);
        return d_rec;
    }
    if rec_masks.is_empty() {
        let (h, d) = (
            View::rows(&saved.h_prev, 0, tb, u, u).t(),
            View::rows(dhp_all, 0, tb, 2 * u, u3),
        );
        gemm(&mut d_rec, 0, u3, h, d, false, th);
    } else {
        for (g, m) in rec_masks.iter().take(2).enumerate() {
            let hm = masked_rows(&saved.h_prev, m, bsz, u);
            let (h, d) = (
                View::rows(&hm, 0, tb, u, u).t(),
                View::rows(dhp_all, g * u, tb, u, u3),
            );
            gemm(&mut d_rec, g * u, u3, h, d, false, th);
        }
    }
    let h_left: Vec<T>;
    let left: &[T] = match (spec.reset_after, rec_masks.get(2)) {
        (false, _) => &saved.extra,
        (true, None) => &saved.h_prev,
        (true, Some(m)) => {
            h_left = masked_rows(&saved.h_prev, m, bsz, u);
            &h_left
        }
    };
    let (h, d) = (
        View::rows(left, 0, tb, u, u).t(),
        View::rows(dhp_all, 2 * u, tb, u, u3),
    );
    gemm(&mut d_rec, 2 * u, u3, h, d, false, th);
    d_rec
}

/// The input rows in processing order (row k * batch + b is `x[b, t_of(k)]`), each times
/// its batch row's input mask `m` when given.
fn inputs_in_step_order<T: Float>(spec: &SeqSpec, x: &[T], m: Option<&[T]>) -> Vec<T> {
    let (bsz, n_in) = (spec.batch, spec.input);
    let mut out = Vec::with_capacity(spec.time * bsz * n_in);
    for k in 0..spec.time {
        let t = spec.t_of(k);
        for b in 0..bsz {
            let src = &x[(b * spec.time + t) * n_in..][..n_in];
            match m {
                None => out.extend_from_slice(src),
                Some(m) => {
                    let mb = &m[b * n_in..(b + 1) * n_in];
                    out.extend(src.iter().zip(mb).map(|(&v, &mv)| v * mv));
                }
            }
        }
    }
    out
}

/// The input side's gradients `dXP` of gates `first..end`, (time * batch, (end - first) *
/// u) in processing order: the recurrent side's columns, but for reset_after's candidate
/// (`d_ah`).
fn input_side<'a, T>(
    spec: &SeqSpec,
    (dhp_all, d_ah): (&'a [T], &'a [T]),
    (first, end): (usize, usize),
) -> View<'a, T> {
    let (n, u) = (spec.batch * spec.time, spec.units);
    match (first, spec.reset_after) {
        (2, true) => View::rows(d_ah, 0, n, u, u),
        _ => View::rows(dhp_all, first * u, n, (end - first) * u, 3 * u),
    }
}

/// Gate groups (first, end) whose input-side products are one each: the gates sharing an
/// input (each of three masks is its own) whose gradients are adjacent columns.
fn gate_groups<T>(spec: &SeqSpec, inp: &SeqInputs<T>) -> &'static [(usize, usize)] {
    match (inp.input_masks.len(), spec.reset_after) {
        (3, _) => &[(0, 1), (1, 2), (2, 3)],
        (_, true) => &[(0, 2), (2, 3)],
        (_, false) => &[(0, 3)],
    }
}

/// The input mask of the gates from `first` (none, the shared one, or its own).
fn input_mask<'a, T>(inp: &SeqInputs<'a, T>, first: usize) -> Option<&'a [T]> {
    match inp.input_masks {
        [] => None,
        [m] => Some(m),
        ms => Some(&ms[first]),
    }
}

/// `dW_g = (x * mi_g)^T @ dXP_g`, the inputs in processing order (laid out once per mask).
fn kernel_grads<T: Float>(spec: &SeqSpec, inp: &SeqInputs<T>, d: (&[T], &[T])) -> Vec<T> {
    let (n, n_in, u3) = (spec.batch * spec.time, spec.input, 3 * spec.units);
    let mut d_kernel = vec![T::ZERO; n_in * u3];
    let mut xs: Option<(usize, Vec<T>)> = None;
    for &gates in gate_groups(spec, inp) {
        let m = input_mask(inp, gates.0);
        let key = if inp.input_masks.len() == 3 {
            gates.0
        } else {
            0
        };
        if xs.as_ref().is_none_or(|(k, _)| *k != key) {
            xs = Some((key, inputs_in_step_order(spec, inp.x, m)));
        }
        let x_s = xs.as_ref().map_or(&[][..], |(_, v)| v.as_slice());
        let x_t = View::rows(x_s, 0, n, n_in, n_in).t();
        let dxp = input_side(spec, d, gates);
        gemm(
            &mut d_kernel,
            gates.0 * spec.units,
            u3,
            x_t,
            dxp,
            false,
            spec.threads,
        );
    }
    d_kernel
}

/// `dX = sum_g (dXP_g @ W_g^T) * mi_g`, written straight into the input's order by products
/// of one batch row's steps each (rows `batch` apart in `dXP`, adjacent in `dX`) or, when
/// the batch has more rows than the steps or the steps run backwards, of one step's batch
/// rows each (rows `time` apart in `dX`).
fn input_x_grads<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    d: (&[T], &[T]),
) -> Vec<T> {
    let (bsz, time, n_in, u, th) = (spec.batch, spec.time, spec.input, spec.units, spec.threads);
    let per_row = !spec.go_backwards && time >= bsz;
    // W^T ((3u, input)), packed once when it can be.
    let rows = if per_row { time } else { bsz };
    let k_t = Rhs::new(View::rows(w.kernel, 0, n_in, 3 * u, 3 * u).t(), th, rows);
    let mut d_x = vec![T::ZERO; bsz * time * n_in];
    let mut dxg = Vec::new();
    for &gates in gate_groups(spec, inp) {
        let (dxp, cols) = (input_side(spec, d, gates), gates.0 * u..gates.1 * u);
        let m = input_mask(inp, gates.0);
        let (dst, acc) = match m {
            None => (&mut d_x, gates.0 > 0),
            Some(_) => {
                dxg.resize(d_x.len(), T::ZERO);
                (&mut dxg, false)
            }
        };
        for j in 0..if per_row { bsz } else { time } {
            // Batch row j's steps, or step j's batch rows; where they go in dX, rows apart.
            let (a, at, rs) = match per_row {
                true => {
                    let (offset, rs) = (dxp.offset + j * dxp.rs, bsz * dxp.rs);
                    let a = View {
                        offset,
                        rows: time,
                        rs,
                        ..dxp
                    };
                    (a, j * time * n_in, n_in)
                }
                false => {
                    let offset = dxp.offset + j * bsz * dxp.rs;
                    let a = View {
                        offset,
                        rows: bsz,
                        ..dxp
                    };
                    (a, spec.t_of(j) * n_in, time * n_in)
                }
            };
            k_t.product(dst, at, rs, a, cols.clone(), 0..n_in, acc, th);
        }
        if let Some(m) = m {
            for (row, (dd, v)) in d_x.chunks_mut(n_in).zip(dxg.chunks(n_in)).enumerate() {
                let b = row / time;
                for ((o, &vv), &mm) in dd.iter_mut().zip(v).zip(&m[b * n_in..(b + 1) * n_in]) {
                    *o += vv * mm;
                }
            }
        }
    }
    d_x
}

/// The input side, `xp_g = (x * mi_g) @ W_g + b_in`: (d_kernel, d_x), each empty when
/// `spec.wanted` leaves it out.
fn input_grads<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    d: (&[T], &[T]),
) -> (Vec<T>, Vec<T>) {
    let d_kernel = match spec.wanted.weights {
        true => kernel_grads(spec, inp, d),
        false => Vec::new(),
    };
    let d_x = match spec.wanted.input {
        true => input_x_grads(spec, w, inp, d),
        false => Vec::new(),
    };
    (d_kernel, d_x)
}

#[inline(always)]
fn backward_body<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    saved: &Saved<T>,
    d_sequence: &[T],
    d_state: &[T],
    ws: &mut Workspace<T>,
) -> Result<SeqGrads<T>> {
    validate(spec, w, inp)?;
    check_grad_inputs(spec, saved, d_sequence, d_state)?;
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let (u3, bu) = (3 * u, bsz * u);
    // Every step writes all its rows of both (`scatter_step_grads`); rows k * B + b.
    let d_ah_len = if spec.reset_after { time * bu } else { 0 };
    let d_ah = overwritten(&mut ws.d_xp, d_ah_len);
    let dhp_all = overwritten(&mut ws.d_hp_all, time * bsz * u3);
    let mut g = StepGrads {
        dh: d_state.to_vec(),
        d_carry: sized(&mut ws.out_prev, bu).to_vec(),
        dh_new: vec![T::ZERO; bu],
        dz: vec![T::ZERO; bu],
        dr: vec![T::ZERO; bu],
        da_h: vec![T::ZERO; bu],
    };
    let scratch = sized(&mut ws.scratch, bu);
    let scratch2 = sized(&mut ws.scratch2, bu);
    let mut u_t_copy = std::mem::take(&mut ws.scratch_rec);
    let u_t = recurrent_transposed(spec, w, &mut u_t_copy);
    let mut sums = BiasSums::new(u3);
    for k in (0..time).rev() {
        let t = spec.t_of(k);
        let st = saved.step(k, bu);
        masked_step_rules(spec, inp.mask, (k, t), st.z, d_sequence, &mut g);
        blend_grads(&st, &mut g);
        T::mul_derivative(spec.activation, st.a_h, st.hh, &mut g.da_h);
        clip_grad(spec.clip, st.a_h, &mut g.da_h);
        if spec.reset_after {
            // a_h = x_h + r * pre.
            for ((d, &a), &p) in g.dr.iter_mut().zip(&g.da_h).zip(st.extra) {
                *d = a * p;
            }
        } else {
            reset_before_grads(spec, &u_t, inp.recurrent_masks.get(2), &st, scratch, &mut g);
        }
        T::mul_derivative(spec.recurrent_activation, st.a_z, st.z, &mut g.dz);
        T::mul_derivative(spec.recurrent_activation, st.a_r, st.r, &mut g.dr);
        clip_grad(spec.clip, st.a_z, &mut g.dz);
        clip_grad(spec.clip, st.a_r, &mut g.dr);
        let dhp = &mut dhp_all[k * bsz * u3..(k + 1) * bsz * u3];
        let d_ah_k = d_ah.get_mut(k * bu..(k + 1) * bu).unwrap_or_default();
        scatter_step_grads(spec, st.r, &g, (d_ah_k, dhp), &mut sums);
        state_grad_through_product(spec, &u_t, inp.recurrent_masks, dhp, scratch2, &mut g.dh);
    }
    drop(u_t);
    ws.scratch_rec = u_t_copy;
    let recurrent = match spec.wanted.weights {
        true => recurrent_weight_grads(spec, inp.recurrent_masks, saved, dhp_all),
        false => Vec::new(),
    };
    let (kernel, x) = input_grads(spec, w, inp, (dhp_all, d_ah));
    let bias = sums.into_grads(spec);
    ws.out_prev = g.d_carry;
    Ok(SeqGrads {
        x,
        kernel,
        recurrent,
        bias,
        h0: g.dh,
    })
}
