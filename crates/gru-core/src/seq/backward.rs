//! Backward through the whole sequence (BPTT), from the gradients of the sequence and of
//! the final state.

use super::forward::Saved;
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
    let mut d_xp = vec![T::ZERO; bsz * time * u3];
    let mut d_rec = vec![T::ZERO; u * u3];
    let mut d_brec = vec![T::ZERO; u3];
    let mut dh = d_state.to_vec();
    let mut d_carry = vec![T::ZERO; bu]; // d(out_k) from the next step repeating it
    let mut dh_new = vec![T::ZERO; bu];
    let mut dz = vec![T::ZERO; bu];
    let mut dr = vec![T::ZERO; bu];
    let mut da_h = vec![T::ZERO; bu];
    let mut dhp = vec![T::ZERO; bsz * u3]; // d(recurrent product) per gate column
    let mut scratch = vec![T::ZERO; bu];
    let mut scratch2 = vec![T::ZERO; bu];
    let gates = if spec.reset_after { 3 } else { 2 };
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
            for j in 0..u {
                let i = b * u + j;
                let dout = d_sequence[(b * time + k) * u + j] + d_carry[i];
                if valid {
                    dh_new[i] = dh[i] + dout;
                    d_carry[i] = T::ZERO;
                    dh[i] = dh_new[i] * z[i];
                } else {
                    dh_new[i] = T::ZERO;
                    d_carry[i] = if spec.zero_output_for_mask {
                        T::ZERO
                    } else {
                        dout
                    };
                    // dh passes through unchanged.
                }
            }
        }
        // h_new = z h + (1 - z) hh.
        for i in 0..bu {
            dz[i] = dh_new[i] * (h_prev[i] - hh[i]);
            da_h[i] = dh_new[i] * (T::ONE - z[i]);
        }
        T::mul_derivative(spec.activation, &saved.a_h[s.clone()], hh, &mut da_h);
        if spec.reset_after {
            // a_h = x_h + r * pre.
            for i in 0..bu {
                dr[i] = da_h[i] * extra[i];
            }
        } else {
            // a_h = x_h + q @ U_h with q = r * h_h: dq = da_h @ U_h^T.
            gemm(
                &mut scratch,
                0,
                u,
                View::rows(&da_h, 0, bsz, u, u),
                View::rows(w.recurrent, 2 * u, u, u, u3).t(),
                false,
                th,
            );
            gemm(
                &mut d_rec,
                2 * u,
                u3,
                View::rows(extra, 0, bsz, u, u).t(),
                View::rows(&da_h, 0, bsz, u, u),
                true,
                th,
            );
            for i in 0..bu {
                let h_h = match rec_masks.get(2) {
                    Some(m) => h_prev[i] * m[i],
                    None => h_prev[i],
                };
                dr[i] = scratch[i] * h_h;
                let d_hh = scratch[i] * r[i];
                dh[i] += match rec_masks.get(2) {
                    Some(m) => d_hh * m[i],
                    None => d_hh,
                };
            }
        }
        T::mul_derivative(spec.recurrent_activation, &saved.a_z[s.clone()], z, &mut dz);
        T::mul_derivative(spec.recurrent_activation, &saved.a_r[s.clone()], r, &mut dr);
        // d(xp) of this step and d(recurrent product).
        for b in 0..bsz {
            let row = (b * time + t) * u3;
            for j in 0..u {
                let i = b * u + j;
                d_xp[row + j] = dz[i];
                d_xp[row + u + j] = dr[i];
                d_xp[row + 2 * u + j] = da_h[i];
                dhp[b * u3 + j] = dz[i];
                dhp[b * u3 + u + j] = dr[i];
                if spec.reset_after {
                    dhp[b * u3 + 2 * u + j] = da_h[i] * r[i];
                }
            }
        }
        if spec.reset_after && spec.use_bias {
            for row in dhp.chunks(u3) {
                for (acc, &v) in d_brec.iter_mut().zip(row) {
                    *acc += v;
                }
            }
        }
        // Through the recurrent products: d U_g += h_g^T dhp_g, dh += (dhp_g U_g^T) (* m_g).
        if rec_masks.is_empty() {
            let cols = gates * u;
            gemm(
                &mut d_rec,
                0,
                u3,
                View::rows(h_prev, 0, bsz, u, u).t(),
                View::rows(&dhp, 0, bsz, cols, u3),
                true,
                th,
            );
            gemm(
                &mut dh,
                0,
                u,
                View::rows(&dhp, 0, bsz, cols, u3),
                View::rows(w.recurrent, 0, u, cols, u3).t(),
                true,
                th,
            );
        } else {
            for (g, m) in rec_masks.iter().take(gates).enumerate() {
                for ((sv, &hv), &mv) in scratch.iter_mut().zip(h_prev).zip(m) {
                    *sv = hv * mv;
                }
                gemm(
                    &mut d_rec,
                    g * u,
                    u3,
                    View::rows(&scratch, 0, bsz, u, u).t(),
                    View::rows(&dhp, g * u, bsz, u, u3),
                    true,
                    th,
                );
                gemm(
                    &mut scratch2,
                    0,
                    u,
                    View::rows(&dhp, g * u, bsz, u, u3),
                    View::rows(w.recurrent, g * u, u, u, u3).t(),
                    false,
                    th,
                );
                for ((d, &v), &mv) in dh.iter_mut().zip(&scratch2).zip(m) {
                    *d += v * mv;
                }
            }
        }
    }
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
                View::rows(&d_xp, 0, n, u3, u3),
                false,
                th,
            );
            gemm(
                &mut d_x,
                0,
                n_in,
                View::rows(&d_xp, 0, n, u3, u3),
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
                    View::rows(&d_xp, g * u, n, u, u3),
                    false,
                    th,
                );
                gemm(
                    &mut dxg,
                    0,
                    n_in,
                    View::rows(&d_xp, g * u, n, u, u3),
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
        for row in d_xp.chunks(u3) {
            for (acc, &v) in d_bias.iter_mut().zip(row) {
                *acc += v;
            }
        }
        if spec.reset_after {
            d_bias.extend_from_slice(&d_brec);
        }
    }
    Ok(SeqGrads {
        x: d_x,
        kernel: d_kernel,
        recurrent: d_rec,
        bias: d_bias,
        h0: dh,
    })
}
