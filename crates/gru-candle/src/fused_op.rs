//! gru-core's fused whole-sequence kernels as a Candle custom op, with its own backward.
//!
//! Inputs: `x` (batch, time, input), `params` = `[kernel; recurrent_kernel; bias rows]`
//! stacked on axis 0 ((input + units + bias_rows, 3u); Candle's autograd splits its gradient
//! back), `h0` (batch, units). Output: (batch, time + 1, units): the sequence in processing
//! order, then the final state. The mask and dropout masks are constants of the op.

use crate::layer::Gru;
use crate::loop_path::{CellWeights, DropoutMasks, LoopOutput};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gru_core::seq::{self, Float, Saved, SeqInputs, SeqSpec, SeqWeights};
use std::sync::Mutex;

/// Dropout masks of one call, on the host, in the call's float type.
#[derive(Debug, Clone, Default)]
pub struct HostMasks<T> {
    /// 0, 1 or 3 masks (batch, input).
    pub input: Vec<Vec<T>>,
    /// 0 or 3 masks (batch, units).
    pub recurrent: Vec<Vec<T>>,
}

/// The op's dropout masks in f32 or f64.
#[derive(Debug, Clone)]
pub enum Masks {
    /// For f32 calls.
    F32(HostMasks<f32>),
    /// For f64 calls.
    F64(HostMasks<f64>),
}

enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

/// The fused GRU op.
pub struct FusedGru {
    spec: SeqSpec,
    mask: Option<Vec<u8>>,
    masks: Masks,
    save: bool,
    saved: Mutex<Option<SavedAny>>,
}

impl FusedGru {
    /// An op for `spec`. With `save`, the forward keeps its activations for the backward
    /// (otherwise a backward recomputes them).
    pub fn new(spec: SeqSpec, mask: Option<Vec<u8>>, masks: Masks, save: bool) -> FusedGru {
        FusedGru {
            spec,
            mask,
            masks,
            save,
            saved: Mutex::new(None),
        }
    }

    fn split<'a, T>(&self, p: &'a [T]) -> SeqWeights<'a, T> {
        let (i, u) = (self.spec.input, self.spec.units);
        let (k_end, r_end) = (i * 3 * u, (i + u) * 3 * u);
        SeqWeights {
            kernel: &p[..k_end],
            recurrent: &p[k_end..r_end],
            bias: &p[r_end..],
        }
    }

    fn run<T: Float + candle_core::WithDType>(
        &self,
        x: &[T],
        p: &[T],
        h0: &[T],
        masks: &HostMasks<T>,
        wrap: fn(Saved<T>) -> SavedAny,
    ) -> Result<(Vec<T>, Shape)> {
        let s = &self.spec;
        let inputs = SeqInputs {
            x,
            h0,
            mask: self.mask.as_deref(),
            input_masks: &masks.input,
            recurrent_masks: &masks.recurrent,
        };
        let (out, saved) = seq::forward(s, &self.split(p), &inputs, self.save)
            .map_err(candle_core::Error::wrap)?;
        if let (Some(saved), Ok(mut slot)) = (saved, self.saved.lock()) {
            *slot = Some(wrap(saved));
        }
        let (b, t, u) = (s.batch, s.time, s.units);
        let mut packed = Vec::with_capacity(b * (t + 1) * u);
        for bi in 0..b {
            packed.extend_from_slice(&out.sequence[bi * t * u..(bi + 1) * t * u]);
            packed.extend_from_slice(&out.state[bi * u..(bi + 1) * u]);
        }
        Ok((packed, Shape::from((b, t + 1, u))))
    }

    #[allow(clippy::too_many_arguments)]
    fn grads<T: Float + candle_core::WithDType>(
        &self,
        x: &Tensor,
        params: &Tensor,
        h0: &Tensor,
        grad: &Tensor,
        masks: &HostMasks<T>,
        saved: Option<&Saved<T>>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let s = &self.spec;
        let host = |t: &Tensor| -> Result<Vec<T>> { t.flatten_all()?.to_vec1::<T>() };
        let (xv, pv, hv, gv) = (host(x)?, host(params)?, host(h0)?, host(grad)?);
        let (b, t, u) = (s.batch, s.time, s.units);
        let mut d_seq = Vec::with_capacity(b * t * u);
        let mut d_state = Vec::with_capacity(b * u);
        for bi in 0..b {
            let row = &gv[bi * (t + 1) * u..(bi + 1) * (t + 1) * u];
            d_seq.extend_from_slice(&row[..t * u]);
            d_state.extend_from_slice(&row[t * u..]);
        }
        let inputs = SeqInputs {
            x: &xv,
            h0: &hv,
            mask: self.mask.as_deref(),
            input_masks: &masks.input,
            recurrent_masks: &masks.recurrent,
        };
        let w = self.split(&pv);
        let recomputed;
        let saved = match saved {
            Some(sv) => sv,
            None => {
                recomputed = seq::forward(s, &w, &inputs, true)
                    .map_err(candle_core::Error::wrap)?
                    .1
                    .ok_or_else(|| candle_core::Error::msg("forward kept nothing"))?;
                &recomputed
            }
        };
        let g = seq::backward(s, &w, &inputs, saved, &d_seq, &d_state)
            .map_err(candle_core::Error::wrap)?;
        let dev = x.device();
        let mut dp = g.kernel;
        dp.extend_from_slice(&g.recurrent);
        dp.extend_from_slice(&g.bias);
        Ok((
            Tensor::from_vec(g.x, x.shape(), dev)?,
            Tensor::from_vec(dp, params.shape(), dev)?,
            Tensor::from_vec(g.h0, h0.shape(), dev)?,
        ))
    }
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("gru-fused needs contiguous inputs"),
    }
}

impl CustomOp3 for FusedGru {
    fn name(&self) -> &'static str {
        "gru-fused"
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
        match (s1, s2, s3, &self.masks) {
            (CpuStorage::F32(x), CpuStorage::F32(p), CpuStorage::F32(h), Masks::F32(m)) => {
                let (v, shape) = self.run(
                    contiguous(x, l1)?,
                    contiguous(p, l2)?,
                    contiguous(h, l3)?,
                    m,
                    SavedAny::F32,
                )?;
                Ok((CpuStorage::F32(v), shape))
            }
            (CpuStorage::F64(x), CpuStorage::F64(p), CpuStorage::F64(h), Masks::F64(m)) => {
                let (v, shape) = self.run(
                    contiguous(x, l1)?,
                    contiguous(p, l2)?,
                    contiguous(h, l3)?,
                    m,
                    SavedAny::F64,
                )?;
                Ok((CpuStorage::F64(v), shape))
            }
            _ => candle_core::bail!("gru-fused runs f32 or f64, with the masks of the same dtype"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        h0: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::msg("gru-fused saved state poisoned"))?;
        let (dx, dp, dh) = match (x.dtype(), &self.masks, saved.as_ref()) {
            (DType::F32, Masks::F32(m), sv) => {
                let sv = match sv {
                    Some(SavedAny::F32(s)) => Some(s),
                    _ => None,
                };
                self.grads(x, params, h0, grad_res, m, sv)?
            }
            (DType::F64, Masks::F64(m), sv) => {
                let sv = match sv {
                    Some(SavedAny::F64(s)) => Some(s),
                    _ => None,
                };
                self.grads(x, params, h0, grad_res, m, sv)?
            }
            (dt, _, _) => candle_core::bail!("gru-fused backward: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), Some(dp), Some(dh)))
    }
}

fn host_masks<T: candle_core::WithDType>(m: &DropoutMasks) -> Result<HostMasks<T>> {
    let host = |v: &[Tensor]| -> Result<Vec<Vec<T>>> {
        v.iter().map(|t| t.flatten_all()?.to_vec1::<T>()).collect()
    };
    Ok(HostMasks {
        input: host(&m.input)?,
        recurrent: host(&m.recurrent)?,
    })
}

/// Runs a call on the fused kernels: the same outputs as [`crate::loop_path::run`].
pub(crate) fn run(
    gru: &Gru,
    w: &CellWeights,
    x: &Tensor,
    h0: &Tensor,
    mask: Option<&Tensor>,
    dropout: &DropoutMasks,
) -> Result<LoopOutput> {
    let cfg = gru.config();
    let (b, t, i) = x.dims3()?;
    let u = cfg.units;
    let mut spec = SeqSpec::new(cfg, b, t, i);
    spec.threads = gru.threads_for(b);
    let mut parts = vec![w.kernel.clone(), w.recurrent_kernel.clone()];
    for bias in w.input_bias.iter().chain(&w.recurrent_bias) {
        parts.push(bias.reshape((1, 3 * u))?);
    }
    let params = Tensor::cat(&parts, 0)?.contiguous()?;
    let host_mask = match mask {
        Some(m) => Some(m.flatten_all()?.to_vec1::<u8>()?),
        None => None,
    };
    let masks = match x.dtype() {
        DType::F32 => Masks::F32(host_masks(dropout)?),
        DType::F64 => Masks::F64(host_masks(dropout)?),
        dt => candle_core::bail!("the fused path runs f32 or f64, got {dt:?}"),
    };
    let x = x.contiguous()?;
    let h0 = h0.contiguous()?;
    let save = x.track_op() || params.track_op() || h0.track_op();
    let op = FusedGru::new(spec, host_mask, masks, save);
    let packed = x.apply_op3(&params, &h0, op)?;
    // Contiguous, like the loop's output: some Candle ops (index_select) need it.
    let sequence = packed.narrow(1, 0, t)?.contiguous()?;
    Ok(LoopOutput {
        last_output: sequence.narrow(1, t - 1, 1)?.squeeze(1)?,
        state: packed.narrow(1, t, 1)?.squeeze(1)?,
        sequence,
    })
}
