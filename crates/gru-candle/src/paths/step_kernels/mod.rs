//! The fused step-kernel path: gru-core's step sequence (`gru_core::step`) as a Candle custom
//! op with its own backward. On a CUDA device it runs cuBLAS and the CUDA C kernels of
//! `kernels/gru_step_*.cu` (the `cudnn` build); on the CPU, the same kernels compiled as C++
//! (the host backend: the GPU path's exact sequence and kernel code, a reference for tests).
//!
//! Outside the op, Candle computes the input projection of every timestep as one product
//! (`xp = (x [* input dropout]) @ W + b_in`, (batch, time, 3u)), so the input side's
//! gradients come from Candle's autograd. The op's inputs: `xp`, `h0` (batch, units) and
//! `params = [U; b_rec]` ((u + 1, 3u) with reset_after's recurrent bias, else (u, 3u)). Its
//! output is one flat vector, the sequence (batch, time, units; processing order) then the
//! final state, as the fused CPU op's. The mask and the recurrent dropout masks are
//! constants of the op.

mod host;

#[cfg(feature = "cudnn")]
mod cuda;

use crate::sequence::{CallContext, CellWeights, SequenceOutput};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gru_core::seq::SeqSpec;
use gru_core::step::{self, Saved, StepBackend, StepInputs};
use std::any::Any;
use std::sync::Mutex;

/// A step backend the op can run on: the conversions between its buffers and Candle's
/// tensors.
trait OpBackend: StepBackend<Mem: Send + 'static> {
    /// A copy of a tensor's `len` values (contiguous or made so).
    fn mem(&self, t: &Tensor, len: usize, what: &str) -> Result<Self::Mem>;
    /// A copy of a (batch, time) u8 mask.
    fn mask(&self, t: &Tensor) -> Result<Self::Mask>;
    /// The first `shape.elem_count()` values of a buffer as an untracked tensor.
    fn tensor(&self, m: Self::Mem, shape: Shape) -> Result<Tensor>;
}

/// The op's constants on a backend.
struct Constants<B: StepBackend> {
    mask: Option<B::Mask>,
    rec_masks: Option<B::Mem>,
}

/// The fused step-kernel op for one call.
pub struct StepOp {
    spec: SeqSpec,
    rec_bias: bool,
    /// (batch, time) u8, on the call's device.
    mask: Option<Tensor>,
    /// (3, batch, units): recurrent dropout masks of z, r, h, on the call's device.
    rec_masks: Option<Tensor>,
    save: bool,
    saved: Mutex<Option<Box<dyn Any + Send>>>,
}

fn wrap(e: gru_core::GruError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::msg("gru-step-kernels: saved state poisoned by a panic in another thread")
}

impl StepOp {
    fn lens(&self) -> (usize, usize, usize) {
        let s = &self.spec;
        let rows = s.units + self.rec_bias as usize;
        (
            s.batch * s.time * 3 * s.units,
            s.batch * s.units,
            rows * 3 * s.units,
        )
    }

    fn constants<B: OpBackend>(&self, be: &B) -> Result<Constants<B>> {
        let (b, u) = (self.spec.batch, self.spec.units);
        Ok(Constants {
            mask: self.mask.as_ref().map(|m| be.mask(m)).transpose()?,
            rec_masks: match &self.rec_masks {
                Some(m) => Some(be.mem(m, 3 * b * u, "recurrent dropout masks")?),
                None => None,
            },
        })
    }

    fn inputs<'a, B: OpBackend>(
        &self,
        (xp, h0, params): (&'a B::Mem, &'a B::Mem, &'a B::Mem),
        c: &'a Constants<B>,
    ) -> StepInputs<'a, B> {
        StepInputs {
            xp,
            h0,
            params,
            rec_bias: self.rec_bias,
            mask: c.mask.as_ref(),
            rec_masks: c.rec_masks.as_ref(),
        }
    }

    /// The forward into one flat buffer (sequence, then state); with `save`, keeps the
    /// activations for the backward.
    fn forward_on<B: OpBackend>(
        &self,
        be: &B,
        xp: B::Mem,
        h0: B::Mem,
        params: B::Mem,
    ) -> Result<B::Mem> {
        let c = self.constants(be)?;
        let inp = self.inputs((&xp, &h0, &params), &c);
        let f = step::forward(be, &self.spec, &inp, self.save).map_err(wrap)?;
        let s = &self.spec;
        let (bt, b) = (s.batch * s.time * s.units, s.batch * s.units);
        let mut flat = be.zeros(bt + b).map_err(wrap)?;
        be.copy_into(&f.sequence, 0, &mut flat, 0, bt)
            .map_err(wrap)?;
        be.copy_into(&f.state, 0, &mut flat, bt, b).map_err(wrap)?;
        if let Some(saved) = f.saved {
            *self.saved.lock().map_err(|_| poisoned())? = Some(Box::new(saved));
        }
        Ok(flat)
    }

    /// The gradients of `xp`, `h0` and `params` for the flat output gradient `grad`.
    fn backward_on<B: OpBackend>(
        &self,
        be: &B,
        (xp, h0, params): (&Tensor, &Tensor, &Tensor),
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (lx, lh, lp) = self.lens();
        let bt = self.spec.batch * self.spec.time * self.spec.units;
        let mem = (
            be.mem(xp, lx, "xp")?,
            be.mem(h0, lh, "h0")?,
            be.mem(params, lp, "params")?,
        );
        let g = be.mem(grad, bt + lh, "output gradient")?;
        let c = self.constants(be)?;
        let inp = self.inputs((&mem.0, &mem.1, &mem.2), &c);
        // The forward's activations, or (an inference call, a second backward) a new
        // forward that keeps them.
        let kept = self.saved.lock().map_err(|_| poisoned())?.take();
        let saved = match kept.and_then(|k| k.downcast::<Saved<B::Mem>>().ok()) {
            Some(s) => *s,
            None => step::forward(be, &self.spec, &inp, true)
                .map_err(wrap)?
                .saved
                .ok_or_else(|| candle_core::Error::msg("gru-step-kernels: nothing saved"))?,
        };
        let (mut d_seq, mut d_state) = (be.zeros(bt).map_err(wrap)?, be.zeros(lh).map_err(wrap)?);
        be.copy_into(&g, 0, &mut d_seq, 0, bt).map_err(wrap)?;
        be.copy_into(&g, bt, &mut d_state, 0, lh).map_err(wrap)?;
        let grads = step::backward(be, &self.spec, &inp, &saved, &d_seq, &d_state).map_err(wrap)?;
        Ok((
            be.tensor(grads.xp, xp.shape().clone())?,
            be.tensor(grads.h0, h0.shape().clone())?,
            be.tensor(grads.params, params.shape().clone())?,
        ))
    }
}

impl CustomOp3 for StepOp {
    fn name(&self) -> &'static str {
        "gru-step-kernels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        host::forward(self, (s1, l1), (s2, l2), (s3, l3))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self, (s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        xp: &Tensor,
        h0: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let inputs = (xp, h0, params);
        let (dxp, dh0, dp) = if xp.device().is_cpu() {
            host::backward(self, inputs, grad)?
        } else {
            #[cfg(feature = "cudnn")]
            {
                cuda::backward(self, inputs, grad)?
            }
            #[cfg(not(feature = "cudnn"))]
            candle_core::bail!("gru-step-kernels: this build has no CUDA backend")
        };
        Ok((Some(dxp), Some(dh0), Some(dp)))
    }
}

/// The input projection of every timestep, `(x [* input dropout]) @ W + b_in`, as Candle
/// ops: (batch, time, 3u). Implementation 1's three dropout masks give each gate's columns
/// their own masked input, as the loop does.
fn input_projection(ctx: &CallContext, w: &CellWeights) -> Result<Tensor> {
    let (b, t, i) = ctx.x.dims3()?;
    let u = ctx.config.units;
    let flat = |m: Option<&Tensor>| -> Result<Tensor> {
        let x = match m {
            Some(m) => ctx.x.broadcast_mul(&m.unsqueeze(1)?)?,
            None => ctx.x.clone(),
        };
        x.reshape((b * t, i))
    };
    let masks = &ctx.dropout.input;
    let xp = match masks.len() {
        3 => {
            let mut gates = Vec::with_capacity(3);
            for (g, m) in masks.iter().enumerate() {
                gates.push(flat(Some(m))?.matmul(&w.kernel.narrow(1, g * u, u)?)?);
            }
            Tensor::cat(&gates, 1)?
        }
        _ => flat(masks.first())?.matmul(w.kernel)?,
    };
    let xp = match &w.input_bias {
        Some(bias) => xp.broadcast_add(bias)?,
        None => xp,
    };
    xp.reshape((b, t, 3 * u))?.contiguous()
}

/// `[U; b_rec]`, and whether it holds `b_rec`.
fn recurrent_params(w: &CellWeights, units: usize) -> Result<(Tensor, bool)> {
    match &w.recurrent_bias {
        Some(rb) => Ok((
            Tensor::cat(&[w.recurrent_kernel, &rb.reshape((1, 3 * units))?], 0)?.contiguous()?,
            true,
        )),
        None => Ok((w.recurrent_kernel.contiguous()?, false)),
    }
}

/// Runs a call on the fused step kernels: the same outputs as the loop
/// ([`super::op_loop::run`]).
pub fn run(ctx: &CallContext, w: &CellWeights) -> Result<SequenceOutput> {
    let (b, t, i) = ctx.x.dims3()?;
    let u = ctx.config.units;
    match ctx.x.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {}
        dt => candle_core::bail!("the step kernels run f32, f64, f16 or bf16, got {dt:?}"),
    }
    let xp = input_projection(ctx, w)?;
    let (params, rec_bias) = recurrent_params(w, u)?;
    let h0 = ctx.h0.contiguous()?;
    let rec_masks = match ctx.dropout.recurrent.as_slice() {
        [] => None,
        m => Some(Tensor::stack(m, 0)?.contiguous()?),
    };
    // Keep the activations for a backward only in training calls; an inference call that
    // is differentiated anyway recomputes them.
    let save = ctx.training && (xp.track_op() || params.track_op() || h0.track_op());
    let op = StepOp {
        spec: SeqSpec::new(ctx.config, b, t, i),
        rec_bias,
        mask: ctx.mask.map(|m| m.contiguous()).transpose()?,
        rec_masks,
        save,
        saved: Mutex::new(None),
    };
    let flat = xp.apply_op3(&h0, &params, op)?;
    SequenceOutput::from_flat(&flat, (b, t, u))
}
