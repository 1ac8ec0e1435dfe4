//! The backward's products over all steps at once, from the gradients the step loop
//! stacked (one row per step and batch row, in processing order k * batch + b): the
//! recurrent weights `dU = H^T @ dHP`, and the input side's `dW = X^T @ dXP` and
//! `dX = dXP @ W^T`. The input side's `dXP` is the recurrent side's `dHP` but for
//! reset_after's candidate (`da_h` against `da_h * r`), which the loop keeps apart (`d_ah`);
//! the inputs are laid out in processing order for `dW`, and the `dX` products write
//! straight into the input's order.

use super::matmul::{gemm, Rhs, View};
use super::{Float, Saved, SeqInputs, SeqSpec, SeqWeights};

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

/// The recurrent weights over all steps at once: `dU_g = H_g^T @ dHP_g` (rows k * batch + b;
/// H masked per gate with recurrent dropout), and the candidate block from reset_after's
/// `H_h^T @ d(pre)` or reset_before's `q^T @ da_h`.
pub(super) fn recurrent_weight_grads<T: Float>(
    spec: &SeqSpec,
    rec_masks: &[Vec<T>],
    saved: &Saved<T>,
    dhp_all: &[T],
) -> Vec<T> {
    let (bsz, u, th) = (spec.batch, spec.units, spec.threads.over_all_steps());
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
            spec.threads.over_all_steps(),
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
    let (bsz, time, n_in, u) = (spec.batch, spec.time, spec.input, spec.units);
    let th = spec.threads.over_all_steps();
    let per_row = !spec.go_backwards && time >= bsz;
    // W^T ((3u, input)), packed once when it can be.
    let rows = if per_row { time } else { bsz };
    let products = if per_row { bsz } else { time };
    let k_t = Rhs::new(
        View::rows(w.kernel, 0, n_in, 3 * u, 3 * u).t(),
        th,
        rows,
        products,
    );
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
pub(super) fn input_grads<T: Float>(
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
