//! Forward over the whole sequence.

use super::matmul::{gemm, View};
use super::{masked_inputs, validate, Float, SeqInputs, SeqSpec, SeqWeights};
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
/// `(k * batch + b) * units`.
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
}

/// The input projection of every timestep, bias included: (batch * time, 3u), row b*T + t.
pub(crate) fn project_inputs<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
) -> Vec<T> {
    let (n, i, u) = (spec.batch * spec.time, spec.input, spec.units);
    let u3 = 3 * u;
    let mut xp = vec![T::ZERO; n * u3];
    let th = spec.threads;
    match inp.input_masks {
        [] => gemm(
            &mut xp,
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
                &mut xp,
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
                    &mut xp,
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
    if spec.use_bias {
        let b_in = &w.bias[..u3];
        for row in xp.chunks_mut(u3) {
            for (v, &b) in row.iter_mut().zip(b_in) {
                *v += b;
            }
        }
    }
    xp
}

/// The recurrent product of one step into `hp` (batch, 3u): z and r columns always, the
/// candidate's columns (and the recurrent bias) with reset_after.
pub(crate) fn recurrent_product<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    h: &[T],
    rec_masks: &[Vec<T>],
    hp: &mut [T],
    scratch: &mut [T],
) {
    let (b, u) = (spec.batch, spec.units);
    let u3 = 3 * u;
    let gates = if spec.reset_after { 3 } else { 2 };
    if rec_masks.is_empty() {
        gemm(
            hp,
            0,
            u3,
            View::rows(h, 0, b, u, u),
            View::rows(w.recurrent, 0, u, gates * u, u3),
            false,
            spec.threads,
        );
    } else {
        for (g, m) in rec_masks.iter().take(gates).enumerate() {
            for ((s, &hv), &mv) in scratch.iter_mut().zip(h).zip(m) {
                *s = hv * mv;
            }
            gemm(
                hp,
                g * u,
                u3,
                View::rows(scratch, 0, b, u, u),
                View::rows(w.recurrent, g * u, u, u, u3),
                false,
                spec.threads,
            );
        }
    }
    if spec.use_bias && spec.reset_after {
        let b_rec = &w.bias[u3..2 * u3];
        for row in hp.chunks_mut(u3) {
            for (v, &bv) in row.iter_mut().zip(b_rec) {
                *v += bv;
            }
        }
    }
}

/// Runs the sequence. With `save`, keeps what [`super::backward`] needs.
pub fn forward<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    inp: &SeqInputs<T>,
    save: bool,
) -> Result<(SeqOutput<T>, Option<Saved<T>>)> {
    validate(spec, w, inp)?;
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let (u3, bu) = (3 * u, bsz * u);
    let xp = project_inputs(spec, w, inp);
    let mut saved = if save {
        let z = vec![T::ZERO; time * bu];
        Some(Saved {
            h_prev: z.clone(),
            z: z.clone(),
            a_z: z.clone(),
            r: z.clone(),
            a_r: z.clone(),
            hh: z.clone(),
            a_h: z.clone(),
            extra: z,
        })
    } else {
        None
    };
    // Per-step buffers, reused when nothing is saved.
    let mut step = Saved {
        h_prev: vec![T::ZERO; bu],
        z: vec![T::ZERO; bu],
        a_z: vec![T::ZERO; bu],
        r: vec![T::ZERO; bu],
        a_r: vec![T::ZERO; bu],
        hh: vec![T::ZERO; bu],
        a_h: vec![T::ZERO; bu],
        extra: vec![T::ZERO; bu],
    };
    let mut hp = vec![T::ZERO; bsz * u3];
    let mut scratch = vec![T::ZERO; bu];
    let mut h = inp.h0.to_vec();
    let mut out_prev = vec![T::ZERO; bu];
    let mut sequence = vec![T::ZERO; bsz * time * u];
    let h_gate_mask = inp.recurrent_masks.get(2);
    for k in 0..time {
        let t = spec.t_of(k);
        step.h_prev.copy_from_slice(&h);
        recurrent_product(spec, w, &h, inp.recurrent_masks, &mut hp, &mut scratch);
        for b in 0..bsz {
            let xrow = &xp[(b * time + t) * u3..(b * time + t + 1) * u3];
            let hrow = &hp[b * u3..(b + 1) * u3];
            for j in 0..u {
                step.a_z[b * u + j] = xrow[j] + hrow[j];
                step.a_r[b * u + j] = xrow[u + j] + hrow[u + j];
            }
        }
        T::activate(spec.recurrent_activation, &step.a_z, &mut step.z);
        T::activate(spec.recurrent_activation, &step.a_r, &mut step.r);
        if spec.reset_after {
            for b in 0..bsz {
                let xrow = &xp[(b * time + t) * u3 + 2 * u..(b * time + t + 1) * u3];
                let pre = &hp[b * u3 + 2 * u..(b + 1) * u3];
                for j in 0..u {
                    let i = b * u + j;
                    step.extra[i] = pre[j];
                    step.a_h[i] = xrow[j] + step.r[i] * pre[j];
                }
            }
        } else {
            // q = r * h (h masked for the candidate gate), then q @ U_h.
            for i in 0..bu {
                let hv = match h_gate_mask {
                    Some(m) => h[i] * m[i],
                    None => h[i],
                };
                step.extra[i] = step.r[i] * hv;
            }
            gemm(
                &mut scratch,
                0,
                u,
                View::rows(&step.extra, 0, bsz, u, u),
                View::rows(w.recurrent, 2 * u, u, u, u3),
                false,
                spec.threads,
            );
            for b in 0..bsz {
                let xrow = &xp[(b * time + t) * u3 + 2 * u..(b * time + t + 1) * u3];
                for j in 0..u {
                    step.a_h[b * u + j] = xrow[j] + scratch[b * u + j];
                }
            }
        }
        T::activate(spec.activation, &step.a_h, &mut step.hh);
        for b in 0..bsz {
            let valid = inp.mask.is_none_or(|m| m[b * time + t] != 0);
            let row = b * u..(b + 1) * u;
            if valid {
                for i in row.clone() {
                    let z = step.z[i];
                    h[i] = z * h[i] + (T::ONE - z) * step.hh[i];
                    out_prev[i] = h[i];
                }
            } else if spec.zero_output_for_mask {
                out_prev[row.clone()].fill(T::ZERO);
            }
            sequence[(b * time + k) * u..(b * time + k + 1) * u].copy_from_slice(&out_prev[row]);
        }
        if let Some(s) = saved.as_mut() {
            let dst = k * bu..(k + 1) * bu;
            s.h_prev[dst.clone()].copy_from_slice(&step.h_prev);
            s.z[dst.clone()].copy_from_slice(&step.z);
            s.a_z[dst.clone()].copy_from_slice(&step.a_z);
            s.r[dst.clone()].copy_from_slice(&step.r);
            s.a_r[dst.clone()].copy_from_slice(&step.a_r);
            s.hh[dst.clone()].copy_from_slice(&step.hh);
            s.a_h[dst.clone()].copy_from_slice(&step.a_h);
            s.extra[dst].copy_from_slice(&step.extra);
        }
    }
    Ok((SeqOutput { sequence, state: h }, saved))
}
