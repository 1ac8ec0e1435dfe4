//! Backward through the whole sequence (BPTT), from the gradients of the sequence and of
//! the final state.
//!
//! Per step (newest first) only what is sequential: the masking rules, the gate
//! derivatives and `dh += dHP @ U^T`. The weight gradients are then one product each over
//! all steps: `dU = H^T @ dHP` with the states and recurrent gradients of every step
//! stacked, `dW = X^T @ dXP`, `dX = dXP @ W^T` (`all_steps`). Every stacked array has one
//! row per step and batch row in processing order (k * batch + b). The input side's
//! gradients `dXP` are the recurrent side's `dHP` but for the candidate's columns under
//! reset_after (`da_h` against `da_h * r`), so only those are kept apart (a third of the
//! copies per step the gate pass made with a separate `dXP` in the input's order: 1.5 ms of
//! a 33 ms backward at 64,100,128,256).

use super::all_steps::{input_grads, recurrent_weight_grads};
use super::forward::{overwritten, sized, Saved, Workspace};
use super::matmul::{Rhs, View};
use super::team::Threads;
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
pub(super) fn check_grad_inputs<T>(
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
pub(super) struct StepGrads<T> {
    /// d(loss)/d(state) carried back from later steps.
    pub(super) dh: Vec<T>,
    /// d(out_k) from the next step repeating it (masked steps).
    pub(super) d_carry: Vec<T>,
    /// d(h_new) of this step.
    pub(super) dh_new: Vec<T>,
    pub(super) dz: Vec<T>,
    pub(super) dr: Vec<T>,
    pub(super) da_h: Vec<T>,
}

/// Step k's saved activations, (batch, units) each.
pub(super) struct SavedStep<'a, T> {
    pub(super) h_prev: &'a [T],
    pub(super) z: &'a [T],
    pub(super) r: &'a [T],
    pub(super) hh: &'a [T],
    pub(super) a_z: &'a [T],
    pub(super) a_r: &'a [T],
    pub(super) a_h: &'a [T],
    pub(super) extra: &'a [T],
}

impl<T> Saved<T> {
    pub(super) fn step(&self, k: usize, bu: usize) -> SavedStep<'_, T> {
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
pub(super) fn masked_step_rules<T: Float>(
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
pub(super) struct BiasSums<T> {
    pub(super) input: Vec<T>,
    pub(super) recurrent: Vec<T>,
}

impl<T: Float> BiasSums<T> {
    pub(super) fn new(u3: usize) -> Self {
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
    pub(super) fn into_grads(self, spec: &SeqSpec) -> Vec<T> {
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
pub(super) fn scatter_step_grads<T: Float>(
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
    let rhs = Rhs::new(view, spec.threads, spec.batch, spec.time);
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
    Rhs::new(
        View::rows(copy, 0, u3, u, u),
        spec.threads,
        spec.batch,
        spec.time,
    )
}

/// `dh += (dhp_g @ U_g^T) (* m_g)` over the gates that go through the recurrent product, on
/// `th`; `dh` (batch, width) takes columns `0..width` of `U^T` (a unit slice's own rows of
/// `U`, or all of them), and `rec_masks` those columns of the masks.
#[inline(always)]
pub(super) fn state_grad_through_product<T: Float>(
    spec: &SeqSpec,
    (u_t, th): (&Rhs<T>, Threads),
    rec_masks: &[Vec<T>],
    dhp: &[T],
    scratch: &mut [T],
    dh: &mut [T],
) {
    let (bsz, u) = (spec.batch, spec.units);
    let (u3, width) = (3 * u, dh.len() / bsz.max(1));
    let gates = if spec.reset_after { 3 } else { 2 };
    if rec_masks.is_empty() {
        let d = View::rows(dhp, 0, bsz, gates * u, u3);
        u_t.product(dh, 0, width, d, 0..gates * u, 0..width, true, th);
        return;
    }
    for (g, m) in rec_masks.iter().take(gates).enumerate() {
        let d = View::rows(dhp, g * u, bsz, u, u3);
        u_t.product(
            scratch,
            0,
            width,
            d,
            g * u..(g + 1) * u,
            0..width,
            false,
            th,
        );
        for ((d, &v), &mv) in dh.iter_mut().zip(scratch.iter()).zip(m) {
            *d += v * mv;
        }
    }
}

/// Step k's gate gradients from `d(h_new)`: dz, dr and the candidate's `da_h`, through
/// the activations' derivatives (and clip). reset_before's dr comes from `reset_before`
/// (which also adds to dh); reset_after's from `a_h = x_h + r * pre`.
#[inline(always)]
pub(super) fn gate_grads<T: Float>(
    spec: &SeqSpec,
    st: &SavedStep<T>,
    g: &mut StepGrads<T>,
    reset_before: Option<impl FnOnce(&mut StepGrads<T>)>,
) {
    blend_grads(st, g);
    T::mul_derivative(spec.activation, st.a_h, st.hh, &mut g.da_h);
    clip_grad(spec.clip, st.a_h, &mut g.da_h);
    match reset_before {
        Some(f) => f(g),
        None => {
            for ((d, &a), &p) in g.dr.iter_mut().zip(&g.da_h).zip(st.extra) {
                *d = a * p;
            }
        }
    }
    T::mul_derivative(spec.recurrent_activation, st.a_z, st.z, &mut g.dz);
    T::mul_derivative(spec.recurrent_activation, st.a_r, st.r, &mut g.dr);
    clip_grad(spec.clip, st.a_z, &mut g.dz);
    clip_grad(spec.clip, st.a_r, &mut g.dr);
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
        let h_mask = inp.recurrent_masks.get(2);
        let reset_before = (!spec.reset_after).then_some(|g: &mut StepGrads<T>| {
            reset_before_grads(spec, &u_t, h_mask, &st, scratch, g)
        });
        gate_grads(spec, &st, &mut g, reset_before);
        let dhp = &mut dhp_all[k * bsz * u3..(k + 1) * bsz * u3];
        let d_ah_k = d_ah.get_mut(k * bu..(k + 1) * bu).unwrap_or_default();
        scatter_step_grads(spec, st.r, &g, (d_ah_k, dhp), &mut sums);
        let product = (&u_t, spec.threads);
        state_grad_through_product(spec, product, inp.recurrent_masks, dhp, scratch2, &mut g.dh);
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
