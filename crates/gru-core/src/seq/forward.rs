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
    let th = spec.threads;
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
/// candidate's columns (and the recurrent bias) with reset_after.
pub(crate) fn recurrent_product<T: Float>(
    spec: &SeqSpec,
    w: &SeqWeights<T>,
    h: &[T],
    rec_masks: &[Vec<T>],
    step_bias: Option<&[T]>,
    hp: &mut [T],
    scratch: &mut [T],
) {
    let (b, u) = (spec.batch, spec.units);
    let u3 = 3 * u;
    let gates = if spec.reset_after { 3 } else { 2 };
    // Start from the step bias and accumulate the product onto it.
    let accumulate = step_bias.is_some();
    if let Some(sb) = step_bias {
        for row in hp.chunks_exact_mut(u3) {
            row.copy_from_slice(sb);
        }
    }
    if rec_masks.is_empty() {
        gemm(
            hp,
            0,
            u3,
            View::rows(h, 0, b, u, u),
            View::rows(w.recurrent, 0, u, gates * u, u3),
            accumulate,
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
                accumulate,
                spec.threads,
            );
        }
    }
}

/// Buffers the fused path reuses from call to call (a layer keeps one per float type):
/// fresh multi-megabyte allocations cost page faults on every call.
#[derive(Debug, Default)]
pub struct Workspace<T> {
    pub(crate) xp: Vec<T>,
    pub(crate) hp: Vec<T>,
    pub(crate) scratch: Vec<T>,
    pub(crate) scratch2: Vec<T>,
    pub(crate) h: Vec<T>,
    pub(crate) out_prev: Vec<T>,
    pub(crate) step: Saved<T>,
    pub(crate) d_xp: Vec<T>,
    pub(crate) d_hp_all: Vec<T>,
    /// Saved activations handed back after a backward, reused by the next forward.
    pub pool: Option<Saved<T>>,
}

fn sized<T: Float>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.clear();
    v.resize(n, T::ZERO);
    v
}

impl<T: Float> Saved<T> {
    fn fields(&mut self) -> [&mut Vec<T>; 8] {
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

    /// Step k's blocks of `bu` values: (h_prev, z, a_z, r, a_r, hh, a_h, extra).
    #[allow(clippy::type_complexity)]
    fn block(
        &mut self,
        k: usize,
        bu: usize,
    ) -> (
        &mut [T],
        &mut [T],
        &mut [T],
        &mut [T],
        &mut [T],
        &mut [T],
        &mut [T],
        &mut [T],
    ) {
        let r = k * bu..(k + 1) * bu;
        (
            &mut self.h_prev[r.clone()],
            &mut self.z[r.clone()],
            &mut self.a_z[r.clone()],
            &mut self.r[r.clone()],
            &mut self.a_r[r.clone()],
            &mut self.hh[r.clone()],
            &mut self.a_h[r.clone()],
            &mut self.extra[r],
        )
    }

    fn sized(mut self, n: usize) -> Saved<T> {
        for v in self.fields() {
            // Every element is written before it is read; resize only fills new room.
            v.resize(n, T::ZERO);
            v.truncate(n);
        }
        self
    }
}

/// Runs the sequence. With `save`, keeps what [`super::backward`] needs.
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
    let (bsz, time, u) = (spec.batch, spec.time, spec.units);
    let (u3, bu) = (3 * u, bsz * u);
    if sequence.len() != bsz * time * u || state.len() != bu {
        return Err(crate::error::GruError::Shape {
            what: "output buffers".into(),
            expected: format!("({bsz}, {time}, {u}) and ({bsz}, {u})"),
            got: format!("{} and {} values", sequence.len(), state.len()),
        });
    }
    project_inputs_into(spec, w, inp, &mut ws.xp);
    let sbias = step_bias(spec, w);
    let b_in_h: Vec<T> = if spec.use_bias {
        w.bias[2 * u..u3].to_vec()
    } else {
        vec![T::ZERO; u]
    };
    let mut saved = if save {
        Some(ws.pool.take().unwrap_or_default().sized(time * bu))
    } else {
        None
    };
    let mut step = std::mem::take(&mut ws.step).sized(bu);
    let hp = sized(&mut ws.hp, bsz * u3);
    let scratch = sized(&mut ws.scratch, bu);
    let h = sized(&mut ws.h, bu);
    h.copy_from_slice(inp.h0);
    let out_prev = sized(&mut ws.out_prev, bu);
    let xp = &ws.xp;
    let h_gate_mask = inp.recurrent_masks.get(2);
    for k in 0..time {
        let t = spec.t_of(k);
        let (h_prev, z, a_z, r, a_r, hh, a_h, extra) = match saved.as_mut() {
            Some(sv) => sv.block(k, bu),
            None => step.block(0, bu),
        };
        h_prev.copy_from_slice(h);
        recurrent_product(
            spec,
            w,
            h,
            inp.recurrent_masks,
            sbias.as_deref(),
            hp,
            scratch,
        );
        let xrow = |b: usize| &xp[(b * time + t) * u3..(b * time + t + 1) * u3];
        for (b, ((az, ar), hrow)) in a_z
            .chunks_exact_mut(u)
            .zip(a_r.chunks_exact_mut(u))
            .zip(hp.chunks_exact(u3))
            .enumerate()
        {
            let x = xrow(b);
            for ((o, &xv), &hv) in az.iter_mut().zip(&x[..u]).zip(&hrow[..u]) {
                *o = xv + hv;
            }
            for ((o, &xv), &hv) in ar.iter_mut().zip(&x[u..2 * u]).zip(&hrow[u..2 * u]) {
                *o = xv + hv;
            }
        }
        T::activate(spec.recurrent_activation, a_z, z);
        T::activate(spec.recurrent_activation, a_r, r);
        if spec.reset_after {
            for (b, (((ah, pre), rr), hrow)) in a_h
                .chunks_exact_mut(u)
                .zip(extra.chunks_exact_mut(u))
                .zip(r.chunks_exact(u))
                .zip(hp.chunks_exact(u3))
                .enumerate()
            {
                let xh = &xrow(b)[2 * u..];
                pre.copy_from_slice(&hrow[2 * u..]);
                for ((((o, &xv), &bv), &rv), &pv) in ah
                    .iter_mut()
                    .zip(xh)
                    .zip(&b_in_h)
                    .zip(rr.iter())
                    .zip(pre.iter())
                {
                    *o = (xv + bv) + rv * pv;
                }
            }
        } else {
            // q = r * h (h masked for the candidate gate), then q @ U_h.
            match h_gate_mask {
                Some(m) => {
                    for (((q, &rv), &hv), &mv) in
                        extra.iter_mut().zip(r.iter()).zip(h.iter()).zip(m)
                    {
                        *q = rv * (hv * mv);
                    }
                }
                None => {
                    for ((q, &rv), &hv) in extra.iter_mut().zip(r.iter()).zip(h.iter()) {
                        *q = rv * hv;
                    }
                }
            }
            gemm(
                scratch,
                0,
                u,
                View::rows(extra, 0, bsz, u, u),
                View::rows(w.recurrent, 2 * u, u, u, u3),
                false,
                spec.threads,
            );
            for (b, (ah, rh)) in a_h
                .chunks_exact_mut(u)
                .zip(scratch.chunks_exact(u))
                .enumerate()
            {
                for (((o, &xv), &bv), &rv) in
                    ah.iter_mut().zip(&xrow(b)[2 * u..]).zip(&b_in_h).zip(rh)
                {
                    *o = (xv + bv) + rv;
                }
            }
        }
        T::activate(spec.activation, a_h, hh);
        for (b, ((hrow, orow), (zrow, hhrow))) in h
            .chunks_exact_mut(u)
            .zip(out_prev.chunks_exact_mut(u))
            .zip(z.chunks_exact(u).zip(hh.chunks_exact(u)))
            .enumerate()
        {
            let valid = inp.mask.is_none_or(|m| m[b * time + t] != 0);
            if valid {
                for (((hv, ov), &zv), &cv) in
                    hrow.iter_mut().zip(orow.iter_mut()).zip(zrow).zip(hhrow)
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
    state.copy_from_slice(h);
    ws.step = step;
    Ok(saved)
}
