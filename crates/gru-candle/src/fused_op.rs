//! gru-core's fused whole-sequence kernels as a Candle custom op, with its own backward.
//!
//! Inputs: `x` (batch, time, input), `params` = `[kernel; recurrent_kernel; bias rows]`
//! stacked on axis 0 ((input + units + bias_rows, 3u); Candle's autograd splits its gradient
//! back), `h0` (batch, units). Output: one flat vector, the sequence (batch, time, units; in
//! processing order) then the final state (batch, units), so that both are contiguous
//! views. The mask and dropout masks are constants of the op.

use crate::layer::Gru;
use crate::loop_path::{CellWeights, DropoutMasks, LoopOutput};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gru_core::seq::parallel::{backward_chunked, forward_chunked};
use gru_core::seq::{Float, Saved, SeqInputs, SeqSpec, SeqWeights, Workspace};
use std::sync::{Arc, Mutex};

/// The fused path's reusable buffers: per float type, one workspace per batch slice (a
/// layer keeps one set).
#[derive(Debug, Default)]
pub struct Workspaces {
    f32: Vec<Workspace<f32>>,
    f64: Vec<Workspace<f64>>,
}

/// Picks the workspaces of a float type.
trait Pick: Sized {
    fn pick(ws: &mut Workspaces) -> &mut Vec<Workspace<Self>>;
}

impl Pick for f32 {
    fn pick(ws: &mut Workspaces) -> &mut Vec<Workspace<f32>> {
        &mut ws.f32
    }
}

impl Pick for f64 {
    fn pick(ws: &mut Workspaces) -> &mut Vec<Workspace<f64>> {
        &mut ws.f64
    }
}

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
    F32(Vec<Saved<f32>>),
    F64(Vec<Saved<f64>>),
}

/// The fused GRU op.
pub struct FusedGru {
    spec: SeqSpec,
    mask: Option<Vec<u8>>,
    masks: Masks,
    save: bool,
    saved: Mutex<Option<SavedAny>>,
    ws: Arc<Mutex<Workspaces>>,
    chunks: usize,
}

impl FusedGru {
    /// An op for `spec`. With `save`, the forward keeps its activations for the backward
    /// (otherwise a backward recomputes them).
    /// `chunks` batch slices run on their own threads (1: one thread, with `spec.threads`
    /// for the matrix products).
    pub fn new(
        spec: SeqSpec,
        mask: Option<Vec<u8>>,
        masks: Masks,
        save: bool,
        ws: Arc<Mutex<Workspaces>>,
        chunks: usize,
    ) -> FusedGru {
        FusedGru {
            spec,
            mask,
            masks,
            save,
            saved: Mutex::new(None),
            ws,
            chunks: chunks.max(1),
        }
    }

    fn workspace(&self) -> Result<std::sync::MutexGuard<'_, Workspaces>> {
        self.ws
            .lock()
            .map_err(|_| candle_core::Error::msg("gru-fused workspace poisoned"))
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

    fn run<T: Float + candle_core::WithDType + Pick>(
        &self,
        x: &[T],
        p: &[T],
        h0: &[T],
        masks: &HostMasks<T>,
        wrap: fn(Vec<Saved<T>>) -> SavedAny,
    ) -> Result<(Vec<T>, Shape)> {
        let s = &self.spec;
        let inputs = SeqInputs {
            x,
            h0,
            mask: self.mask.as_deref(),
            input_masks: &masks.input,
            recurrent_masks: &masks.recurrent,
        };
        let (b, t, u) = (s.batch, s.time, s.units);
        let mut flat = vec![T::ZERO; b * t * u + b * u];
        let saved = {
            let (seq, state) = flat.split_at_mut(b * t * u);
            let mut ws = self.workspace()?;
            forward_chunked(
                s,
                &self.split(p),
                &inputs,
                self.save,
                T::pick(&mut ws),
                (seq, state),
                self.chunks,
            )
            .map_err(candle_core::Error::wrap)?
        };
        let saved: Option<Vec<Saved<T>>> = saved.into_iter().collect();
        if let (Some(saved), Ok(mut slot)) = (saved, self.saved.lock()) {
            *slot = Some(wrap(saved));
        }
        Ok((flat, Shape::from(b * t * u + b * u)))
    }

    fn grads<T: Float + candle_core::WithDType + Pick>(
        &self,
        x: &Tensor,
        params: &Tensor,
        h0: &Tensor,
        grad: &Tensor,
        masks: &HostMasks<T>,
        saved: Option<Vec<Saved<T>>>,
    ) -> Result<(Tensor, Tensor, Tensor, Vec<Saved<T>>)> {
        let s = &self.spec;
        let host = |t: &Tensor| -> Result<Vec<T>> { t.flatten_all()?.to_vec1::<T>() };
        let (xv, pv, hv, gv) = (host(x)?, host(params)?, host(h0)?, host(grad)?);
        let inputs = SeqInputs {
            x: &xv,
            h0: &hv,
            mask: self.mask.as_deref(),
            input_masks: &masks.input,
            recurrent_masks: &masks.recurrent,
        };
        let w = self.split(&pv);
        let mut ws = self.workspace()?;
        let ws = T::pick(&mut ws);
        let saved = match saved {
            Some(sv) => sv,
            None => {
                // The forward kept nothing (an inference call): run it again, saving.
                let (mut seq, mut state) = (
                    vec![T::ZERO; s.batch * s.time * s.units],
                    vec![T::ZERO; s.batch * s.units],
                );
                forward_chunked(
                    s,
                    &w,
                    &inputs,
                    true,
                    ws,
                    (&mut seq, &mut state),
                    self.chunks,
                )
                .map_err(candle_core::Error::wrap)?
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| candle_core::Error::msg("forward kept nothing"))?
            }
        };
        let (d_seq, d_state) = gv.split_at(s.batch * s.time * s.units);
        let g = backward_chunked(s, &w, &inputs, &saved, d_seq, d_state, ws)
            .map_err(candle_core::Error::wrap)?;
        let dev = x.device();
        let mut dp = g.kernel;
        dp.extend_from_slice(&g.recurrent);
        dp.extend_from_slice(&g.bias);
        Ok((
            Tensor::from_vec(g.x, x.shape(), dev)?,
            Tensor::from_vec(dp, params.shape(), dev)?,
            Tensor::from_vec(g.h0, h0.shape(), dev)?,
            saved,
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
        // Take the saved activations; after the backward they go back to the workspace pool
        // for the next forward (a second backward of the same call recomputes them).
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::msg("gru-fused saved state poisoned"))?
            .take();
        let (dx, dp, dh) = match (x.dtype(), &self.masks) {
            (DType::F32, Masks::F32(m)) => {
                let sv = match saved {
                    Some(SavedAny::F32(s)) => Some(s),
                    _ => None,
                };
                let (dx, dp, dh, sv) = self.grads(x, params, h0, grad_res, m, sv)?;
                let mut ws = self.workspace()?;
                for (w, s) in ws.f32.iter_mut().zip(sv) {
                    w.pool = Some(s);
                }
                (dx, dp, dh)
            }
            (DType::F64, Masks::F64(m)) => {
                let sv = match saved {
                    Some(SavedAny::F64(s)) => Some(s),
                    _ => None,
                };
                let (dx, dp, dh, sv) = self.grads(x, params, h0, grad_res, m, sv)?;
                let mut ws = self.workspace()?;
                for (w, s) in ws.f64.iter_mut().zip(sv) {
                    w.pool = Some(s);
                }
                (dx, dp, dh)
            }
            (dt, _) => candle_core::bail!("gru-fused backward: unsupported dtype {dt:?}"),
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
    training: bool,
) -> Result<LoopOutput> {
    let cfg = gru.config();
    let (b, t, i) = x.dims3()?;
    let u = cfg.units;
    let mut spec = SeqSpec::new(cfg, b, t, i);
    // Threads split the batch (rows are independent: no synchronization per step); a batch
    // smaller than the thread count gives its threads to the matrix products instead.
    let threads = gru.threads_for(b);
    let chunks = if b >= 2 * threads { threads } else { 1 };
    // Unchunked, threads go to the matrix products only when a step's product is large
    // enough to pay for them (never slower than one thread).
    spec.threads = if chunks == 1 && b * u * 3 * u >= 1 << 20 {
        threads
    } else {
        1
    };
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
    // Keep the activations for a backward only in training calls; an inference call that
    // is differentiated anyway recomputes them.
    let save = training && (x.track_op() || params.track_op() || h0.track_op());
    let op = FusedGru::new(spec, host_mask, masks, save, gru.workspaces.clone(), chunks);
    let flat = x.apply_op3(&params, &h0, op)?;
    // Both are contiguous views of the op's output (no copy).
    let sequence = flat.narrow(0, 0, b * t * u)?.reshape((b, t, u))?;
    let state = flat.narrow(0, b * t * u, b * u)?.reshape((b, u))?;
    Ok(LoopOutput {
        last_output: sequence.narrow(1, t - 1, 1)?.squeeze(1)?,
        state,
        sequence,
    })
}
