//! The backward step sequence (BPTT): per step, newest first, the gate backward kernel(s)
//! and `dh += dhp @ U^T`; then the recurrent weights' gradient as one product over every
//! step, `dU = H^T @ dHP`, and the recurrent bias's as one column sum.

use super::{Field, Gemm, Kernel, Launch, Saved, StepArgs, StepBackend, StepInputs};
use crate::error::Result;
use crate::seq::SeqSpec;

/// The gradients of a sequence.
pub struct Gradients<M> {
    /// (B, T, 3u): of the input projection.
    pub xp: M,
    /// (B, u): of the initial state.
    pub h0: M,
    /// Of `[U; b_rec]`, laid out as the parameters.
    pub params: M,
}

/// A row-major product `C (+)= A @ B` with A's rows `lda` apart and B transposed or not.
#[allow(clippy::too_many_arguments)]
fn product(
    m: usize,
    n: usize,
    k: usize,
    a: (usize, usize, bool),
    b: (usize, usize, bool),
    c: (usize, usize),
    acc: bool,
) -> Gemm {
    Gemm {
        m,
        n,
        k,
        a_off: a.0,
        lda: a.1,
        a_trans: a.2,
        b_off: b.0,
        ldb: b.1,
        b_trans: b.2,
        c_off: c.0,
        ldc: c.1,
        accumulate: acc,
    }
}

/// One step's gate backward kernel(s), with reset_before's `dq = da_h @ U_h^T` between.
#[allow(clippy::too_many_arguments)]
fn gate_step<B: StepBackend>(
    be: &B,
    spec: &SeqSpec,
    inp: &StepInputs<B>,
    saved: &Saved<B::Mem>,
    args: StepArgs,
    dseq: &B::Mem,
    st: &mut State<B::Mem>,
) -> Result<()> {
    let (b, t, u) = (spec.batch, spec.time, spec.units);
    let (bu, k) = (b * u, args.step as usize);
    let (blk, dblk) = (k * bu, k * b * 3 * u);
    let fields = [
        Field::SHprev,
        Field::SZ,
        Field::SAz,
        Field::SR,
        Field::SAr,
        Field::SHh,
        Field::SAh,
        Field::SExtra,
    ];
    let mut reads: Vec<(Field, &B::Mem, usize, usize)> = fields
        .iter()
        .zip(saved.bufs.iter())
        .map(|(f, m)| (*f, m, blk, bu))
        .collect();
    reads.push((Field::Dseq, dseq, 0, b * t * u));
    let kernel = if spec.reset_after {
        Kernel::BwdAfter
    } else {
        Kernel::BwdBeforeA
    };
    {
        let State {
            dh,
            dcarry,
            dxp,
            dhp,
            ..
        } = &mut *st;
        let writes = vec![
            (Field::Dh, dh, 0, bu),
            (Field::Dcarry, dcarry, 0, bu),
            (Field::Dxp, dxp, 0, b * t * 3 * u),
            (Field::Dhp, dhp, dblk, b * 3 * u),
        ];
        be.launch(Launch {
            kernel,
            args,
            reads: reads.clone(),
            writes,
            mask: inp.mask,
        })?;
    }
    if spec.reset_after {
        return Ok(());
    }
    let g = product(
        b,
        u,
        u,
        (dblk + 2 * u, 3 * u, false),
        (2 * u, 3 * u, true),
        (0, u),
        false,
    );
    be.gemm(&g, &st.dhp, inp.params, &mut st.dq)?;
    reads.push((Field::Dq, &st.dq, 0, bu));
    if let Some(m) = inp.rec_masks {
        reads.push((Field::Hmask, m, 2 * bu, bu));
    }
    let State { dh, dxp, dhp, .. } = st;
    let writes = vec![
        (Field::Dh, dh, 0, bu),
        (Field::Dxp, dxp, 0, b * t * 3 * u),
        (Field::Dhp, dhp, dblk, b * 3 * u),
    ];
    be.launch(Launch {
        kernel: Kernel::BwdBeforeB,
        args,
        reads,
        writes,
        mask: None,
    })
}

/// The backward's running buffers.
struct State<M> {
    dh: M,
    dcarry: M,
    dxp: M,
    /// (T, B, 3u): every step's gradient of its recurrent product, rows k * B + b.
    dhp: M,
    dq: M,
    scratch: M,
}

/// `dh += dhp_k @ U^T` over the gates that go through the product (each gate's times its
/// recurrent dropout mask).
fn state_through_product<B: StepBackend>(
    be: &B,
    spec: &SeqSpec,
    inp: &StepInputs<B>,
    k: usize,
    st: &mut State<B::Mem>,
) -> Result<()> {
    let (b, u) = (spec.batch, spec.units);
    let gates = if spec.reset_after { 3 } else { 2 };
    let dblk = k * b * 3 * u;
    let Some(rm) = inp.rec_masks else {
        let g = product(
            b,
            u,
            gates * u,
            (dblk, 3 * u, false),
            (0, 3 * u, true),
            (0, u),
            true,
        );
        return be.gemm(&g, &st.dhp, inp.params, &mut st.dh);
    };
    for gate in 0..gates {
        let g = product(
            b,
            u,
            u,
            (dblk + gate * u, 3 * u, false),
            (gate * u, 3 * u, true),
            (0, u),
            false,
        );
        be.gemm(&g, &st.dhp, inp.params, &mut st.scratch)?;
        let mut args = StepArgs::new(spec)?;
        (args.rows, args.step) = (b as i32, gate as i32);
        be.launch(Launch {
            kernel: Kernel::MaskAccumulate,
            args,
            reads: vec![
                (Field::Src, &st.scratch, 0, b * u),
                (Field::Rmask, rm, 0, 3 * b * u),
            ],
            writes: vec![(Field::Dst, &mut st.dh, 0, b * u)],
            mask: None,
        })?;
    }
    Ok(())
}

/// `dU = H^T @ dHP` over every step (H masked per gate with recurrent dropout; the
/// reset-before candidate's left factor is `q`), and `b_rec`'s gradient as `1^T @ dHP`.
fn parameter_gradients<B: StepBackend>(
    be: &B,
    spec: &SeqSpec,
    inp: &StepInputs<B>,
    saved: &Saved<B::Mem>,
    dhp: &B::Mem,
) -> Result<B::Mem> {
    let (tb, u) = (spec.time * spec.batch, spec.units);
    let mut dp = be.zeros(3 * u * u + if inp.rec_bias { 3 * u } else { 0 })?;
    let hprev = &saved.bufs[0];
    let left = |col: usize| {
        product(
            u,
            u,
            tb,
            (0, u, true),
            (col, 3 * u, false),
            (col, 3 * u),
            false,
        )
    };
    match inp.rec_masks {
        None if spec.reset_after => be.gemm(
            &product(
                u,
                3 * u,
                tb,
                (0, u, true),
                (0, 3 * u, false),
                (0, 3 * u),
                false,
            ),
            hprev,
            dhp,
            &mut dp,
        )?,
        None => {
            be.gemm(
                &product(
                    u,
                    2 * u,
                    tb,
                    (0, u, true),
                    (0, 3 * u, false),
                    (0, 3 * u),
                    false,
                ),
                hprev,
                dhp,
                &mut dp,
            )?;
            be.gemm(&left(2 * u), &saved.bufs[7], dhp, &mut dp)?;
        }
        Some(rm) => {
            let mut masked = be.zeros(3 * tb * u)?;
            let mut args = StepArgs::new(spec)?;
            args.rows = tb as i32;
            be.launch(Launch {
                kernel: Kernel::MaskRows,
                args,
                reads: vec![
                    (Field::Src, hprev, 0, tb * u),
                    (Field::Rmask, rm, 0, 3 * spec.batch * u),
                ],
                writes: vec![(Field::Dst, &mut masked, 0, 3 * tb * u)],
                mask: None,
            })?;
            for gate in 0..2 {
                let g = product(
                    u,
                    u,
                    tb,
                    (gate * tb * u, u, true),
                    (gate * u, 3 * u, false),
                    (gate * u, 3 * u),
                    false,
                );
                be.gemm(&g, &masked, dhp, &mut dp)?;
            }
            match spec.reset_after {
                true => be.gemm(
                    &product(
                        u,
                        u,
                        tb,
                        (2 * tb * u, u, true),
                        (2 * u, 3 * u, false),
                        (2 * u, 3 * u),
                        false,
                    ),
                    &masked,
                    dhp,
                    &mut dp,
                )?,
                false => be.gemm(&left(2 * u), &saved.bufs[7], dhp, &mut dp)?,
            }
        }
    }
    if inp.rec_bias {
        let ones = be.filled(tb, 1.0)?;
        be.gemm(
            &product(
                1,
                3 * u,
                tb,
                (0, tb, false),
                (0, 3 * u, false),
                (3 * u * u, 3 * u),
                false,
            ),
            &ones,
            dhp,
            &mut dp,
        )?;
    }
    Ok(dp)
}

/// Backpropagates `d_sequence` (B, T, u; processing order) and `d_state` (B, u) through the
/// sequence whose forward kept `saved`.
pub fn backward<B: StepBackend>(
    be: &B,
    spec: &SeqSpec,
    inp: &StepInputs<B>,
    saved: &Saved<B::Mem>,
    d_sequence: &B::Mem,
    d_state: &B::Mem,
) -> Result<Gradients<B::Mem>> {
    let (b, t, u) = (spec.batch, spec.time, spec.units);
    let mut st = State {
        dh: be.duplicate(d_state)?,
        dcarry: be.zeros(b * u)?,
        dxp: be.zeros(b * t * 3 * u)?,
        dhp: be.zeros(t * b * 3 * u)?,
        dq: be.zeros(b * u)?,
        scratch: be.zeros(b * u)?,
    };
    let base = StepArgs::new(spec)?;
    for k in (0..t).rev() {
        let mut args = base;
        args.step = k as i32;
        args.t = spec.t_of(k) as i32;
        gate_step(be, spec, inp, saved, args, d_sequence, &mut st)?;
        state_through_product(be, spec, inp, k, &mut st)?;
    }
    let params = parameter_gradients(be, spec, inp, saved, &st.dhp)?;
    Ok(Gradients {
        xp: st.dxp,
        h0: st.dh,
        params,
    })
}
