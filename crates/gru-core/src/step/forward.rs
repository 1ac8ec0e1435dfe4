//! The forward step sequence: per step the recurrent product(s) and the gate kernel(s).

use super::{Field, Gemm, Kernel, Launch, StepArgs, StepBackend, StepInputs};
use crate::error::Result;
use crate::seq::SeqSpec;

/// What the backward needs from the forward: per step k, (B, u) blocks at `k * B * u` of the
/// state before the step, z and its pre-activation, r and its pre-activation, the candidate
/// and its pre-activation, and `extra` (reset_after: `hp_h + b_h`; reset_before: `q`).
pub struct Saved<M> {
    /// The buffers, in the order above.
    pub bufs: [M; 8],
}

/// What a forward returns.
pub struct Forward<M> {
    /// (B, T, u), in processing order.
    pub sequence: M,
    /// (B, u): the final state.
    pub state: M,
    /// The activations of every step (a training forward).
    pub saved: Option<Saved<M>>,
}

const SAVED_FIELDS: [Field; 8] = [
    Field::SHprev,
    Field::SZ,
    Field::SAz,
    Field::SR,
    Field::SAr,
    Field::SHh,
    Field::SAh,
    Field::SExtra,
];

/// The recurrent product(s) of one step into `hp` (B, 3u): the columns of the gates that go
/// through `h @ U` (z, r, and reset_after's candidate), each gate's from `h * m_g` with
/// recurrent dropout.
fn recurrent_product<B: StepBackend>(
    be: &B,
    spec: &SeqSpec,
    inp: &StepInputs<B>,
    h: &B::Mem,
    masked: &mut B::Mem,
    hp: &mut B::Mem,
) -> Result<()> {
    let (b, u) = (spec.batch, spec.units);
    let gates = if spec.reset_after { 3 } else { 2 };
    let g = |a_off: usize, col: usize, n: usize| Gemm {
        m: b,
        n,
        k: u,
        a_off,
        lda: u,
        a_trans: false,
        b_off: col,
        ldb: 3 * u,
        b_trans: false,
        c_off: col,
        ldc: 3 * u,
        accumulate: false,
    };
    let Some(rm) = inp.rec_masks else {
        return be.gemm(&g(0, 0, gates * u), h, inp.params, hp);
    };
    let mut args = StepArgs::new(spec)?;
    args.rows = b as i32;
    be.launch(Launch {
        kernel: Kernel::MaskRows,
        args,
        reads: vec![(Field::Src, h, 0, b * u), (Field::Rmask, rm, 0, 3 * b * u)],
        writes: vec![(Field::Dst, masked, 0, 3 * b * u)],
        mask: None,
    })?;
    for gate in 0..gates {
        be.gemm(&g(gate * b * u, gate * u, u), masked, inp.params, hp)?;
    }
    Ok(())
}

/// Eight zeroed buffers of `n`.
fn buffers<B: StepBackend>(be: &B, n: usize) -> Result<[B::Mem; 8]> {
    let mut v = Vec::with_capacity(8);
    for _ in 0..8 {
        v.push(be.zeros(n)?);
    }
    v.try_into().map_err(|_| crate::error::GruError::Internal {
        what: "eight saved buffers".into(),
    })
}

/// Runs the sequence. With `save`, keeps every step's activations for [`super::backward()`].
pub fn forward<B: StepBackend>(
    be: &B,
    spec: &SeqSpec,
    inp: &StepInputs<B>,
    save: bool,
) -> Result<Forward<B::Mem>> {
    let (b, t, u) = (spec.batch, spec.time, spec.units);
    let bu = b * u;
    let mut h = be.duplicate(inp.h0)?;
    let mut out_prev = be.zeros(bu)?;
    let mut seq = be.zeros(b * t * u)?;
    let mut hp = be.zeros(b * 3 * u)?;
    let mut hq = be.zeros(bu)?;
    let mut masked = be.zeros(if inp.rec_masks.is_some() { 3 * bu } else { 0 })?;
    let blocks = if save { t } else { 1 };
    let mut saved = Saved {
        bufs: buffers(be, blocks * bu)?,
    };
    let base = StepArgs::new(spec)?;
    for k in 0..t {
        let mut args = base;
        args.step = k as i32;
        args.t = spec.t_of(k) as i32;
        let blk = if save { k * bu } else { 0 };
        recurrent_product(be, spec, inp, &h, &mut masked, &mut hp)?;
        let rbias = inp
            .rec_bias
            .then_some((Field::Rbias, inp.params, 3 * u * u, 3 * u));
        let hmask = inp
            .rec_masks
            .filter(|_| !spec.reset_after)
            .map(|m| (Field::Hmask, m, 2 * bu, bu));
        if spec.reset_after {
            let mut writes: Vec<(Field, &mut B::Mem, usize, usize)> = vec![
                (Field::H, &mut h, 0, bu),
                (Field::OutPrev, &mut out_prev, 0, bu),
                (Field::Seq, &mut seq, 0, b * t * u),
            ];
            writes.extend(
                SAVED_FIELDS
                    .into_iter()
                    .zip(saved.bufs.iter_mut())
                    .map(|(f, m)| (f, m, blk, bu)),
            );
            let mut reads = vec![
                (Field::Xp, inp.xp, 0, b * t * 3 * u),
                (Field::Hp, &hp, 0, b * 3 * u),
            ];
            reads.extend(rbias);
            be.launch(Launch {
                kernel: Kernel::FwdAfter,
                args,
                reads,
                writes,
                mask: inp.mask,
            })?;
            continue;
        }
        // reset_before: z, r and q = r * h; hq = q @ U_h; the candidate and the blend.
        {
            let [s_hprev, s_z, s_az, s_r, s_ar, _, _, s_extra] = &mut saved.bufs;
            let mut reads = vec![
                (Field::Xp, inp.xp, 0, b * t * 3 * u),
                (Field::Hp, &hp, 0, b * 3 * u),
                (Field::H, &h, 0, bu),
            ];
            reads.extend(hmask);
            let writes = vec![
                (Field::SHprev, s_hprev, blk, bu),
                (Field::SZ, s_z, blk, bu),
                (Field::SAz, s_az, blk, bu),
                (Field::SR, s_r, blk, bu),
                (Field::SAr, s_ar, blk, bu),
                (Field::SExtra, s_extra, blk, bu),
            ];
            be.launch(Launch {
                kernel: Kernel::FwdBeforeGates,
                args,
                reads,
                writes,
                mask: None,
            })?;
        }
        let g = Gemm {
            m: b,
            n: u,
            k: u,
            a_off: blk,
            lda: u,
            a_trans: false,
            b_off: 2 * u,
            ldb: 3 * u,
            b_trans: false,
            c_off: 0,
            ldc: u,
            accumulate: false,
        };
        be.gemm(&g, &saved.bufs[7], inp.params, &mut hq)?;
        let [_, s_z, _, _, _, s_hh, s_ah, _] = &mut saved.bufs;
        let reads = vec![
            (Field::Xp, inp.xp, 0, b * t * 3 * u),
            (Field::Hq, &hq, 0, bu),
            (Field::SZ, &*s_z, blk, bu),
        ];
        let writes = vec![
            (Field::H, &mut h, 0, bu),
            (Field::OutPrev, &mut out_prev, 0, bu),
            (Field::Seq, &mut seq, 0, b * t * u),
            (Field::SHh, s_hh, blk, bu),
            (Field::SAh, s_ah, blk, bu),
        ];
        be.launch(Launch {
            kernel: Kernel::FwdBeforeOut,
            args,
            reads,
            writes,
            mask: inp.mask,
        })?;
    }
    Ok(Forward {
        sequence: seq,
        state: h,
        saved: save.then_some(saved),
    })
}
