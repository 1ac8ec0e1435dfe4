//! Backward through the whole sequence (BPTT), from the gradients of the sequence and of
//! the final state.
//!
//! Per step (newest first) only what is sequential: the masking rules, the gate
//! derivatives and `dh += dHP @ U^T`. The weight gradients are then one product each over
//! all steps: `dU = H^T @ dHP` with the states and recurrent gradients of every step
//! stacked, `dW = X^T @ dXP`, `dX = dXP @ W^T`.

use super::forward::{Saved, Workspace};
use super::matmul::{gemm, View};
use super::{masked_inputs, validate, Float, SeqInputs, SeqSpec, SeqWeights};
use crate::error::{GruError, Result};

/// Gradients of a loss with respect to everything the sequence read.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqGrads<T> {
    /// (batch, time, input).
    pub x: Vec<T>,
    /// (input, 3u).
    pub kernel: Vec<T>,
    /// (u, 3u).
    pub recurrent: Vec<T>,
    /// (bias_rows, 3u); empty without bias.
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

fn sized<T: Float>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.clear();
    v.resize(n, T::ZERO);
    v
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
    let (bsz, time, n_in, u) = (spec.batch, spec.time, spec.input, spec.units);
    let (u3, bu) = (3 * u, bsz * u);
    if d_sequence.len() != bsz * time * u || d_state.len() != bu || saved.z.len() != time * bu {
        return Err(GruError::Shape {
            what: "backward inputs".into(),
            expected: format!(
                "d_sequence ({bsz}, {time}, {u}), d_state ({bsz}, {u}) and a matching forward"
            ),
            got: format!("{} and {} values", d_sequence.len(), d_state.len()),
        });
    }
    let th = spec.threads;
    let rec_masks = inp.recurrent_masks;
    let gates = if spec.reset_after { 3 } else { 2 };
    let d_xp = sized(&mut ws.d_xp, bsz * time * u3);
    let dhp_all = sized(&mut ws.d_hp_all, time * bsz * u3); // rows k * B + b
    let mut dh: Vec<T> = d_state.to_vec();
    let buf = |v: &mut Vec<T>| sized(v, bu).to_vec();
    let mut d_carry = buf(&mut ws.out_prev); // d(out_k) from the next step repeating it
    let mut dh_new = vec![T::ZERO; bu];
    let mut dz = vec![T::ZERO; bu];
    let mut dr = vec![T::ZERO; bu];
    let mut da_h = vec![T::ZERO; bu];
    let scratch = sized(&mut ws.scratch, bu);
    let scratch2 = sized(&mut ws.scratch2, bu);
    for k in (0..time).rev() {
        let t = spec.t_of(k);
        let s = k * bu..(k + 1) * bu;
        let (h_prev, z, r, hh, extra) = (
            &saved.h_prev[s.clone()],
            &saved.z[s.clone()],
            &saved.r[s.clone()],
            &saved.hh[s.clone()],
            &saved.extra[s.clone()],
        );
        // The output and state rules of masked steps.
        for b in 0..bsz {
            let valid = inp.mask.is_none_or(|m| m[b * time + t] != 0);
            let dseq = &d_sequence[(b * time + k) * u..(b * time + k + 1) * u];
            let row = b * u..(b + 1) * u;
            for ((((dn, dc), dhv), &zv), &ds) in dh_new[row.clone()]
                .iter_mut()
                .zip(&mut d_carry[row.clone()])
                .zip(&mut dh[row.clone()])
                .zip(&z[row.clone()])
                .zip(dseq)
            {
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
        // h_new = z h + (1 - z) hh.
        for ((((dzv, dav), &dn), (&hp, &hv)), &zv) in dz
            .iter_mut()
            .zip(da_h.iter_mut())
            .zip(&dh_new)
            .zip(h_prev.iter().zip(hh))
            .zip(z)
        {
            *dzv = dn * (hp - hv);
            *dav = dn * (T::ONE - zv);
        }
        T::mul_derivative(spec.activation, &saved.a_h[s.clone()], hh, &mut da_h);
        if spec.reset_after {
            // a_h = x_h + r * pre.
            for ((d, &a), &p) in dr.iter_mut().zip(&da_h).zip(extra) {
                *d = a * p;
            }
        } else {
            // a_h = x_h + q @ U_h with q = r * h_h: dq = da_h @ U_h^T.
            gemm(
                scratch,
                0,
                u,
                View::rows(&da_h, 0, bsz, u, u),
                View::rows(w.recurrent, 2 * u, u, u, u3).t(),
                false,
                th,
            );
            match rec_masks.get(2) {
                Some(m) => {
                    for (((((d, dhv), &sv), &hp), &rv), &mv) in dr
                        .iter_mut()
                        .zip(dh.iter_mut())
                        .zip(scratch.iter())
                        .zip(h_prev)
                        .zip(r)
                        .zip(m)
                    {
                        *d = sv * (hp * mv);
                        *dhv += sv * rv * mv;
                    }
                }
                None => {
                    for ((((d, dhv), &sv), &hp), &rv) in dr
                        .iter_mut()
                        .zip(dh.iter_mut())
                        .zip(scratch.iter())
                        .zip(h_prev)
                        .zip(r)
                    {
                        *d = sv * hp;
                        *dhv += sv * rv;
                    }
                }
            }
        }
        T::mul_derivative(spec.recurrent_activation, &saved.a_z[s.clone()], z, &mut dz);
        T::mul_derivative(spec.recurrent_activation, &saved.a_r[s.clone()], r, &mut dr);
        // d(xp) of this step; d(recurrent product) into row block k of dhp_all (reset_before
        // keeps da_h in the third block, for dU_h = q^T @ da_h).
        let dhp = &mut dhp_all[k * bsz * u3..(k + 1) * bsz * u3];
        for b in 0..bsz {
            let row = (b * time + t) * u3;
            let (zr, rr, hr) = (
                &dz[b * u..(b + 1) * u],
                &dr[b * u..(b + 1) * u],
                &da_h[b * u..(b + 1) * u],
            );
            d_xp[row..row + u].copy_from_slice(zr);
            d_xp[row + u..row + 2 * u].copy_from_slice(rr);
            d_xp[row + 2 * u..row + u3].copy_from_slice(hr);
            let drow = &mut dhp[b * u3..(b + 1) * u3];
            drow[..u].copy_from_slice(zr);
            drow[u..2 * u].copy_from_slice(rr);
            if spec.reset_after {
                for ((d, &a), &rv) in drow[2 * u..].iter_mut().zip(hr).zip(&r[b * u..(b + 1) * u]) {
                    *d = a * rv;
                }
            } else {
                drow[2 * u..].copy_from_slice(hr);
            }
        }
        // dh += (dhp_g @ U_g^T) (* m_g).
        if rec_masks.is_empty() {
            let cols = gates * u;
            gemm(
                &mut dh,
                0,
                u,
                View::rows(dhp, 0, bsz, cols, u3),
                View::rows(w.recurrent, 0, u, cols, u3).t(),
                true,
                th,
            );
        } else {
            for (g, m) in rec_masks.iter().take(gates).enumerate() {
                gemm(
                    scratch2,
                    0,
                    u,
                    View::rows(dhp, g * u, bsz, u, u3),
                    View::rows(w.recurrent, g * u, u, u, u3).t(),
                    false,
                    th,
                );
                for ((d, &v), &mv) in dh.iter_mut().zip(scratch2.iter()).zip(m) {
                    *d += v * mv;
                }
            }
        }
    }
    // Recurrent weights over all steps at once: dU_g = H_g^T @ dHP_g (k = time * batch).
    let tb = time * bsz;
    let mut d_rec = vec![T::ZERO; u * u3];
    if rec_masks.is_empty() {
        gemm(
            &mut d_rec,
            0,
            u3,
            View::rows(&saved.h_prev, 0, tb, u, u).t(),
            View::rows(dhp_all, 0, tb, 2 * u, u3),
            false,
            th,
        );
    } else {
        for (g, m) in rec_masks.iter().take(2).enumerate() {
            let hm = masked_rows(&saved.h_prev, m, bsz, u);
            gemm(
                &mut d_rec,
                g * u,
                u3,
                View::rows(&hm, 0, tb, u, u).t(),
                View::rows(dhp_all, g * u, tb, u, u3),
                false,
                th,
            );
        }
    }
    // The candidate block: reset_after H_h^T @ d(pre); reset_before q^T @ da_h.
    let h_left: Vec<T>;
    let left: &[T] = if spec.reset_after {
        match rec_masks.get(2) {
            Some(m) => {
                h_left = masked_rows(&saved.h_prev, m, bsz, u);
                &h_left
            }
            None => &saved.h_prev,
        }
    } else {
        &saved.extra
    };
    gemm(
        &mut d_rec,
        2 * u,
        u3,
        View::rows(left, 0, tb, u, u).t(),
        View::rows(dhp_all, 2 * u, tb, u, u3),
        false,
        th,
    );
    // Input side: xp_g = (x * mi_g) @ W_g + b_in.
    let n = bsz * time;
    let mut d_kernel = vec![T::ZERO; n_in * u3];
    let mut d_x = vec![T::ZERO; n * n_in];
    match inp.input_masks {
        [] => {
            gemm(
                &mut d_kernel,
                0,
                u3,
                View::rows(inp.x, 0, n, n_in, n_in).t(),
                View::rows(d_xp, 0, n, u3, u3),
                false,
                th,
            );
            gemm(
                &mut d_x,
                0,
                n_in,
                View::rows(d_xp, 0, n, u3, u3),
                View::rows(w.kernel, 0, n_in, u3, u3).t(),
                false,
                th,
            );
        }
        masks => {
            let per_gate = masks.len() == 3;
            let mut dxg = vec![T::ZERO; n * n_in];
            for g in 0..3 {
                let m = &masks[if per_gate { g } else { 0 }];
                let xm = masked_inputs(spec, inp.x, m);
                gemm(
                    &mut d_kernel,
                    g * u,
                    u3,
                    View::rows(&xm, 0, n, n_in, n_in).t(),
                    View::rows(d_xp, g * u, n, u, u3),
                    false,
                    th,
                );
                gemm(
                    &mut dxg,
                    0,
                    n_in,
                    View::rows(d_xp, g * u, n, u, u3),
                    View::rows(w.kernel, g * u, n_in, u, u3).t(),
                    false,
                    th,
                );
                for (row, (d, v)) in d_x.chunks_mut(n_in).zip(dxg.chunks(n_in)).enumerate() {
                    let b = row / time;
                    for ((dd, &vv), &mm) in d.iter_mut().zip(v).zip(&m[b * n_in..(b + 1) * n_in]) {
                        *dd += vv * mm;
                    }
                }
            }
        }
    }
    let mut d_bias = Vec::new();
    if spec.use_bias {
        d_bias = vec![T::ZERO; u3];
        for row in d_xp.chunks_exact(u3) {
            for (acc, &v) in d_bias.iter_mut().zip(row) {
                *acc += v;
            }
        }
        if spec.reset_after {
            let mut d_brec = vec![T::ZERO; u3];
            for row in dhp_all.chunks_exact(u3) {
                for (acc, &v) in d_brec.iter_mut().zip(row) {
                    *acc += v;
                }
            }
            d_bias.extend_from_slice(&d_brec);
        }
    }
    ws.out_prev = d_carry;
    Ok(SeqGrads {
        x: d_x,
        kernel: d_kernel,
        recurrent: d_rec,
        bias: d_bias,
        h0: dh,
    })
}
