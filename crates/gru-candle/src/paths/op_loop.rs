//! The op-by-op time loop: Keras' `RNN` over `GRUCell`, as Candle ops (differentiable by
//! Candle's autograd), on any device. One step's gate math lives in [`step`]; [`run`] is the
//! time loop with Keras' masking and output rules. It is the reference every other path is
//! tested against.

use crate::activation::apply;
use crate::sequence::{CallContext, CellWeights, SequenceOutput};
use candle_core::{Result, Tensor, D};
use gru_core::GruConfig;

fn gate(t: &Tensor, g: usize, u: usize) -> Result<Tensor> {
    t.narrow(D::Minus1, g * u, u)
}

/// The input projection of every timestep at once: (batch, timesteps, 3u), bias included.
/// With three input masks (implementation 1) each gate's block uses its own masked input.
fn project_inputs(x: &Tensor, w: &CellWeights, masks: &[Tensor], u: usize) -> Result<Tensor> {
    let (b, t, f) = x.dims3()?;
    let proj = |xm: &Tensor, k: &Tensor| -> Result<Tensor> {
        xm.reshape((b * t, f))?
            .matmul(k)?
            .reshape((b, t, k.dim(1)?))
    };
    let xp = match masks {
        [] => proj(x, w.kernel)?,
        [m] => proj(&x.broadcast_mul(&m.unsqueeze(1)?)?, w.kernel)?,
        ms => {
            let parts = ms
                .iter()
                .enumerate()
                .map(|(g, m)| {
                    let k = w.kernel.narrow(1, g * u, u)?.contiguous()?;
                    proj(&x.broadcast_mul(&m.unsqueeze(1)?)?, &k)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, D::Minus1)?
        }
    };
    match &w.input_bias {
        Some(bias) => xp.broadcast_add(bias),
        None => Ok(xp),
    }
}

/// One GRU step (Keras' `GRUCell.call`): `xp` is this step's input projection (batch, 3u)
/// with the input bias already added, `h` the previous state, `rec_masks` empty or the three
/// per-gate recurrent dropout masks (implementation 1). Returns the new state.
pub fn step(
    config: &GruConfig,
    w: &CellWeights,
    xp: &Tensor,
    h: &Tensor,
    rec_masks: &[Tensor],
) -> Result<Tensor> {
    let u = config.units;
    let (xz, xr, xh) = (gate(xp, 0, u)?, gate(xp, 1, u)?, gate(xp, 2, u)?);
    let rk = w.recurrent_kernel;
    let uk = |g: usize| rk.narrow(1, g * u, u);
    let with_bias = |t: Tensor, g: usize| -> Result<Tensor> {
        match &w.recurrent_bias {
            Some(b) => t.broadcast_add(&gate(b, g, u)?),
            None => Ok(t),
        }
    };
    // rz, rr: recurrent parts of z and r. rh_pre: reset_after's h part before `r *`.
    // h_h: the state the reset_before candidate multiplies by r.
    let (rz, rr, rh_pre, h_h) = if let [m0, m1, m2] = rec_masks {
        let h_h = h.mul(m2)?;
        let rh_pre = if config.reset_after {
            Some(with_bias(h_h.matmul(&uk(2)?)?, 2)?)
        } else {
            None
        };
        (
            with_bias(h.mul(m0)?.matmul(&uk(0)?)?, 0)?,
            with_bias(h.mul(m1)?.matmul(&uk(1)?)?, 1)?,
            rh_pre,
            h_h,
        )
    } else if config.reset_after {
        let mut inner = h.matmul(rk)?;
        if let Some(b) = &w.recurrent_bias {
            inner = inner.broadcast_add(b)?;
        }
        (
            gate(&inner, 0, u)?,
            gate(&inner, 1, u)?,
            Some(gate(&inner, 2, u)?),
            h.clone(),
        )
    } else {
        let inner = h.matmul(&rk.narrow(1, 0, 2 * u)?)?;
        (gate(&inner, 0, u)?, gate(&inner, 1, u)?, None, h.clone())
    };
    let pre = |a: Tensor| match config.cell_clip {
        Some(c) => a.clamp(-c, c),
        None => Ok(a),
    };
    let z = apply(config.recurrent_activation, &pre((xz + rz)?)?)?;
    let r = apply(config.recurrent_activation, &pre((xr + rr)?)?)?;
    let rh = match rh_pre {
        Some(pre) => r.mul(&pre)?,
        None => r.mul(&h_h)?.matmul(&uk(2)?)?,
    };
    let hh = apply(config.activation, &pre((xh + rh)?)?)?;
    blend(&z, h, &hh)
}

/// `z * h + (1 - z) * hh`, in Keras' order of operations.
fn blend(z: &Tensor, h: &Tensor, hh: &Tensor) -> Result<Tensor> {
    z.mul(h)? + z.affine(-1.0, 1.0)?.mul(hh)?
}

/// Runs the whole sequence.
///
/// Keras' rules: a masked step keeps the state and outputs the previous processed step's
/// output (zeros before the first valid step, even with a nonzero initial state), or zeros
/// with `zero_output_for_mask`; go_backwards processes t = T-1..0 and returns outputs in
/// processing order.
pub fn run(ctx: &CallContext, w: &CellWeights) -> Result<SequenceOutput> {
    let (config, x, h0, mask, dropout) = (ctx.config, ctx.x, ctx.h0, ctx.mask, ctx.dropout);
    let u = config.units;
    let (b, t, _) = x.dims3()?;
    // (timesteps, batch, 3u), contiguous, so that each step reads one block.
    let xp = project_inputs(x, w, &dropout.input, u)?
        .transpose(0, 1)?
        .contiguous()?;
    let mask_tb = match mask {
        Some(m) => Some(m.transpose(0, 1)?.contiguous()?),
        None => None,
    };
    let zeros = h0.zeros_like()?;
    let mut h = h0.clone();
    let mut prev_out = zeros.clone();
    let mut outs = Vec::with_capacity(t);
    for k in 0..t {
        let ti = if config.go_backwards { t - 1 - k } else { k };
        let h_new = step(config, w, &xp.get(ti)?, &h, &dropout.recurrent)?;
        let out = match &mask_tb {
            None => {
                h = h_new.clone();
                h_new
            }
            Some(m) => {
                let m = m.get(ti)?.unsqueeze(1)?.broadcast_as((b, u))?;
                h = m.where_cond(&h_new, &h)?;
                let fill = if config.zero_output_for_mask {
                    &zeros
                } else {
                    &prev_out
                };
                m.where_cond(&h_new, fill)?
            }
        };
        prev_out = out.clone();
        outs.push(out);
    }
    let sequence = Tensor::stack(&outs, 1)?;
    Ok(SequenceOutput {
        sequence,
        last_output: prev_out,
        state: h,
    })
}
