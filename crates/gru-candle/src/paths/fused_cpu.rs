//! The fused CPU path: gru-core's whole-sequence kernels (`gru_core::seq`) as a Candle custom
//! op with its own backward, for f32 and f64 CPU tensors.
//!
//! A call's tensors: `x` (batch, time, input), the kernel, the recurrent kernel, the bias
//! (the input bias then the recurrent bias, flat) and `h0` (batch, units), each read where
//! it is (two ops carry them, see `fused_op`). Output: the parts the call returns
//! (the sequence (batch, time, units; in processing order) or the last output, and the
//! state with `return_state`; see [`super::fused_outputs`]). The mask and dropout masks are
//! constants of the call.

use super::cpu_pool::CANDLE_POOL;
use super::fused_op::Call;
use super::fused_outputs::{assemble, sequence_output, split_grad, DeadSlot, LiveOutputs};
use crate::sequence::{CallContext, CellWeights, DropoutMasks, SequenceOutput};
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, WithDType};
use gru_core::seq::backward_units::backward_units;
use gru_core::seq::parallel::{backward_chunked, forward_chunked};
use gru_core::seq::units::{forward_units, unit_ranges};
use gru_core::seq::{
    Float, Saved, SeqInputs, SeqSpec, SeqWeights, Team, Threads, WantedGrads, Workspace,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// The fused path's reusable buffers, one pool per float type (a layer's calls all use its
/// weights' type, so one of the two stays empty).
#[derive(Debug, Default)]
pub struct Workspaces {
    f32: Mutex<Vec<Workspace<f32>>>,
    f64: Mutex<Vec<Workspace<f64>>>,
}

/// What the fused path keeps per layer: the thread setting and the reusable buffers.
#[derive(Debug, Clone, Default)]
pub struct FusedSettings {
    /// A fixed thread count; `None`: all cores when a call can use them (see
    /// [`FusedSettings::plan`]).
    pub threads: Option<usize>,
    /// Buffers reused across calls.
    pub workspaces: Arc<Workspaces>,
}

/// How a call's threads are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPlan {
    /// Batch slices, each on its own thread (rows are independent: nothing synchronizes
    /// per step).
    pub chunks: usize,
    /// Threads for the per-step products of an unsliced call.
    pub product_threads: usize,
    /// Threads for the products over all steps of an unsliced call (the inputs'
    /// projection, the backward's weight and input gradients); gru-core's products use
    /// them only when they are large enough.
    pub all_steps_threads: usize,
    /// Threads over which an unsliced call's hidden units are split (one barrier per step;
    /// see `gru_core::seq::units`); 1: not split.
    pub unit_threads: usize,
}

/// Whether one step's recurrent product (batch x u x 3u multiply-adds) is large enough to
/// pay for threads: below ~1M they cost more than they save.
fn product_is_large(batch: usize, units: usize) -> bool {
    batch * units * 3 * units >= 1 << 20
}

/// The fewest steps a call splits its units over threads for: waking the threads costs
/// about one step. Measured on two cores (B=1, microseconds per step, one thread against
/// two): 512 units T=1 81 against 113, T=2 70.5 against 71.2, T=4 57.2 against 45.3;
/// 256 units T=1 17.6 against 24.7, T=4 11.2 against 9.4.
const MIN_UNIT_SPLIT_STEPS: usize = 4;

/// Whether the units of a call too small to slice by rows split over `threads` threads.
fn units_split(time: usize, units: usize, reset_after: bool, threads: usize) -> bool {
    reset_after
        && threads > 1
        && time >= MIN_UNIT_SPLIT_STEPS
        && unit_ranges(units, threads).len() > 1
}

impl FusedSettings {
    /// The threads a call of this form (`time` steps) uses: the fixed count, or all cores
    /// when the batch can be sliced by rows with a large step product or the units can be
    /// split.
    pub fn threads_for(&self, batch: usize, time: usize, units: usize, reset_after: bool) -> usize {
        self.threads.unwrap_or_else(|| {
            let cores = CANDLE_POOL.size();
            if product_is_large(batch, units) || units_split(time, units, reset_after, cores) {
                cores
            } else {
                1
            }
        })
    }

    /// Batch slices when the batch has at least two rows per thread; otherwise one slice,
    /// whose forward and backward split its hidden units over the threads (reset_after, at
    /// least `MIN_SLICE_UNITS` units a thread, `MIN_UNIT_SPLIT_STEPS` steps), or else
    /// whose per-step products get the threads when they are large enough to pay for them
    /// (never slower than one thread); its products over all steps get the threads.
    pub fn plan(&self, batch: usize, time: usize, units: usize, reset_after: bool) -> ThreadPlan {
        let threads = self.threads_for(batch, time, units, reset_after);
        let one = ThreadPlan {
            chunks: 1,
            product_threads: 1,
            all_steps_threads: 1,
            unit_threads: 1,
        };
        if batch >= 2 * threads {
            return ThreadPlan {
                chunks: threads,
                ..one
            };
        }
        let large = product_is_large(batch, units);
        ThreadPlan {
            product_threads: if large { threads } else { 1 },
            all_steps_threads: threads,
            unit_threads: if units_split(time, units, reset_after, threads) {
                unit_ranges(units, threads).len()
            } else {
                1
            },
            ..one
        }
    }
}

/// A float type the fused kernels run in, with its place in Candle's CPU storage and in the
/// layer's workspaces.
pub trait HostFloat: Float + WithDType {
    /// This type's workspace pool.
    fn pool(ws: &Workspaces) -> &Mutex<Vec<Workspace<Self>>>;
    /// The storage's values, when it holds this type.
    fn values(s: &CpuStorage) -> Option<&[Self]>;
    /// Storage holding `v`.
    fn storage(v: Vec<Self>) -> CpuStorage;
}

impl HostFloat for f32 {
    fn pool(ws: &Workspaces) -> &Mutex<Vec<Workspace<f32>>> {
        &ws.f32
    }
    fn values(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<f32>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

impl HostFloat for f64 {
    fn pool(ws: &Workspaces) -> &Mutex<Vec<Workspace<f64>>> {
        &ws.f64
    }
    fn values(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<f64>) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

/// Dropout masks of one call, on the host.
#[derive(Debug, Clone, Default)]
pub struct HostMasks<T> {
    /// 0, 1 or 3 masks (batch, input).
    pub input: Vec<Vec<T>>,
    /// 0 or 3 masks (batch, units).
    pub recurrent: Vec<Vec<T>>,
}

impl<T: HostFloat> HostMasks<T> {
    fn of(m: &DropoutMasks) -> Result<HostMasks<T>> {
        let host = |v: &[Tensor]| -> Result<Vec<Vec<T>>> {
            v.iter().map(|t| t.flatten_all()?.to_vec1::<T>()).collect()
        };
        Ok(HostMasks {
            input: host(&m.input)?,
            recurrent: host(&m.recurrent)?,
        })
    }
}

/// The fused GRU op in float type `T`.
pub struct FusedGru<T: HostFloat> {
    spec: SeqSpec,
    mask: Option<Vec<u8>>,
    masks: HostMasks<T>,
    save: bool,
    saved: Mutex<Option<Vec<Saved<T>>>>,
    ws: Arc<Workspaces>,
    threads: ThreadPlan,
    live: LiveOutputs,
    dead: DeadSlot<T>,
}

fn poisoned(what: &str) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "gru-fused {what} poisoned by a panic in another thread"
    ))
}

impl<T: HostFloat> FusedGru<T> {
    /// An op for `spec`. With `save`, the forward keeps its activations for the backward
    /// (otherwise a backward recomputes them). `threads` says how the forward uses threads
    /// (its `product_threads` should be `spec.threads`). The output holds the `live` parts
    /// (see `fused_outputs`); the forward hands the others to `dead`.
    pub fn new(
        spec: SeqSpec,
        mask: Option<Vec<u8>>,
        masks: HostMasks<T>,
        save: bool,
        ws: Arc<Workspaces>,
        threads: ThreadPlan,
        (live, dead): (LiveOutputs, DeadSlot<T>),
    ) -> Self {
        FusedGru {
            spec,
            mask,
            masks,
            save,
            saved: Mutex::new(None),
            ws,
            threads,
            live,
            dead,
        }
    }

    /// (batch, time, units).
    fn dims(&self) -> (usize, usize, usize) {
        (self.spec.batch, self.spec.time, self.spec.units)
    }

    fn pool(&self) -> Result<MutexGuard<'_, Vec<Workspace<T>>>> {
        T::pool(&self.ws).lock().map_err(|_| poisoned("workspace"))
    }

    fn inputs<'a>(&'a self, x: &'a [T], h0: &'a [T]) -> SeqInputs<'a, T> {
        SeqInputs {
            x,
            h0,
            mask: self.mask.as_deref(),
            input_masks: &self.masks.input,
            recurrent_masks: &self.masks.recurrent,
        }
    }

    /// The forward into `(sequence, state)`; with `save`, what the backward needs.
    fn forward(
        &self,
        x: &[T],
        w: SeqWeights<T>,
        h0: &[T],
        save: bool,
        out: (&mut [T], &mut [T]),
    ) -> Result<Option<Vec<Saved<T>>>> {
        let mut pool = self.pool()?;
        let inp = self.inputs(x, h0);
        let saved = if self.threads.unit_threads > 1 {
            let threads = self.threads.unit_threads;
            forward_units(&self.spec, &w, &inp, save, &mut pool, out, threads).map(|s| vec![s])
        } else {
            let chunks = self.threads.chunks.max(1);
            forward_chunked(&self.spec, &w, &inp, save, &mut pool, out, chunks)
        }
        .map_err(candle_core::Error::wrap)?;
        Ok(saved.into_iter().collect())
    }

    /// (dx, dweights, dh0) of the output gradient `grad`, each `None` when autograd does
    /// not track that input (data, not a variable: its gradient is not computed at all);
    /// dweights holds the kernel's, the recurrent kernel's and the bias' gradients, flat.
    pub(super) fn grads(
        &self,
        (x, h0, grad): (&Tensor, &Tensor, &Tensor),
        w: SeqWeights<T>,
        weights_tracked: bool,
    ) -> Result<OpGrads<T>> {
        let wanted = WantedGrads {
            input: x.track_op(),
            weights: weights_tracked,
        };
        let s = &SeqSpec {
            wanted,
            ..self.spec.clone()
        };
        let (xh, hh, gh) = (
            host_values::<T>(x)?,
            host_values::<T>(h0)?,
            host_values::<T>(grad)?,
        );
        let (xv, hv, gv) = (xh.get(), hh.get(), gh.get());
        // The forward's activations, or (an inference call, a second backward) a new
        // forward that keeps them.
        let kept = self
            .saved
            .lock()
            .map_err(|_| poisoned("saved state"))?
            .take();
        let saved = match kept {
            Some(sv) => sv,
            None => {
                let (bt, b) = (s.batch * s.time * s.units, s.batch * s.units);
                let (mut seq, mut state) = (vec![T::ZERO; bt], vec![T::ZERO; b]);
                self.forward(xv, w, hv, true, (&mut seq, &mut state))?
                    .ok_or_else(|| candle_core::Error::msg("gru-fused: the forward kept nothing"))?
            }
        };
        let (d_seq, d_state) = split_grad(self.live, self.dims(), gv);
        let (d_seq, d_state) = (&*d_seq, &*d_state);
        let g = {
            let mut pool = self.pool()?;
            let inp = self.inputs(xv, hv);
            let grads = match (self.threads.unit_threads, saved.as_slice()) {
                (n, [one]) if n > 1 => {
                    backward_units(s, &w, &inp, one, d_seq, d_state, &mut pool, n)
                }
                _ => backward_chunked(s, &w, &inp, &saved, d_seq, d_state, &mut pool),
            }
            .map_err(candle_core::Error::wrap)?;
            // The activations go back to the pool for the next forward.
            for (w, sv) in pool.iter_mut().zip(saved) {
                w.pool = Some(sv);
            }
            grads
        };
        let dev = x.device();
        let dx = match wanted.input {
            true => Some(Tensor::from_vec(g.x, x.shape(), dev)?),
            false => None,
        };
        let dp = wanted.weights.then_some([g.kernel, g.recurrent, g.bias]);
        let dh = match h0.track_op() {
            true => Some(Tensor::from_vec(g.h0, h0.shape(), dev)?),
            false => None,
        };
        Ok((dx, dp, dh))
    }
}

/// The op's gradients: (dx, the kernel's, recurrent kernel's and bias' flat, dh0), each
/// `None` when not tracked.
type OpGrads<T> = (Option<Tensor>, Option<[Vec<T>; 3]>, Option<Tensor>);

/// A tensor's values on the host: its CPU storage itself when contiguous and of type `T`
/// (`shared`: the read guard and the range; no copy), else a copy (`owned`).
pub(super) struct HostValues<G, T> {
    shared: Option<(G, usize, usize)>,
    owned: Vec<T>,
}

pub(super) fn host_values<'a, T: HostFloat>(
    t: &'a Tensor,
) -> Result<HostValues<impl std::ops::Deref<Target = candle_core::Storage> + 'a, T>> {
    let (storage, layout) = t.storage_and_layout();
    if let (candle_core::Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets())
    {
        if T::values(cpu).is_some() {
            return Ok(HostValues {
                shared: Some((storage, a, b)),
                owned: Vec::new(),
            });
        }
    }
    drop(storage);
    Ok(HostValues {
        shared: None,
        owned: t.flatten_all()?.to_vec1::<T>()?,
    })
}

impl<G: std::ops::Deref<Target = candle_core::Storage>, T: HostFloat> HostValues<G, T> {
    pub(super) fn get(&self) -> &[T] {
        match &self.shared {
            Some((storage, a, b)) => match &**storage {
                candle_core::Storage::Cpu(cpu) => T::values(cpu).map_or(&[], |v| &v[*a..*b]),
                _ => &[],
            },
            None => &self.owned,
        }
    }
}

/// Whether the crate's custom CPU ops run on `t`: a CPU tensor of f32 or f64.
pub(crate) fn host_float(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The body of a custom CPU op, one for f32 and f64: the output's values from the
/// operands' (contiguous) values.
pub(crate) trait HostBody {
    /// Runs the op in `T`.
    fn run<T: HostFloat>(&self, operands: &[&[T]]) -> Result<Vec<T>>;
}

/// Runs `body` on f32 or f64 operands (all of the first one's type; anything else is an
/// error) into a storage of that type.
pub(crate) fn run_host(
    body: &impl HostBody,
    operands: &[(&CpuStorage, &Layout)],
) -> Result<CpuStorage> {
    fn typed<T: HostFloat>(
        body: &impl HostBody,
        operands: &[(&CpuStorage, &Layout)],
    ) -> Result<CpuStorage> {
        let v = operands
            .iter()
            .map(|(s, l)| values::<T>(s, l, "operand"))
            .collect::<Result<Vec<_>>>()?;
        Ok(T::storage(body.run(&v)?))
    }
    match operands.first().map(|(s, _)| *s) {
        Some(CpuStorage::F32(_)) => typed::<f32>(body, operands),
        Some(CpuStorage::F64(_)) => typed::<f64>(body, operands),
        _ => candle_core::bail!("gru-candle: a custom CPU op takes f32 or f64 operands"),
    }
}

/// The contiguous values of a storage of type `T` (the operand of a custom CPU op).
pub(crate) fn values<'a, T: HostFloat>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let v = T::values(s).ok_or_else(|| {
        candle_core::Error::msg(format!("gru-candle: {what} is not {:?}", T::DTYPE))
    })?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("gru-candle needs a contiguous {what}"),
    }
}

/// Runs a call on the fused kernels: the same outputs as the loop
/// ([`super::op_loop::run`]). f16 and bf16 calls compute in f32 on the f32 kernels, their
/// outputs rounded to the half type (gradients come back through the casts).
pub fn run(ctx: &CallContext, w: &CellWeights, settings: &FusedSettings) -> Result<SequenceOutput> {
    match ctx.x.dtype() {
        DType::F32 => run_t::<f32>(ctx, w, settings),
        DType::F64 => run_t::<f64>(ctx, w, settings),
        DType::F16 | DType::BF16 => run_half(ctx, w, settings),
        dt => candle_core::bail!("the fused path runs f16, bf16, f32 or f64, got {dt:?}"),
    }
}

/// An f16 or bf16 call on the f32 kernels, as the GPU paths run the half types: the call's
/// tensors go up to f32 (exactly), every product and gate is computed and the state carried
/// in f32, and the outputs are rounded to the half type. The casts are Candle ops, so the
/// gradients come back through them in the half type.
fn run_half(
    ctx: &CallContext,
    w: &CellWeights,
    settings: &FusedSettings,
) -> Result<SequenceOutput> {
    let half = ctx.x.dtype();
    let up = |t: &Tensor| t.to_dtype(DType::F32);
    let ups = |v: &[Tensor]| v.iter().map(up).collect::<Result<Vec<_>>>();
    let (x, h0) = (up(ctx.x)?, up(ctx.h0)?);
    let dropout = DropoutMasks {
        input: ups(&ctx.dropout.input)?,
        recurrent: ups(&ctx.dropout.recurrent)?,
    };
    let (kernel, recurrent_kernel) = (up(w.kernel)?, up(w.recurrent_kernel)?);
    let weights = CellWeights {
        kernel: &kernel,
        recurrent_kernel: &recurrent_kernel,
        input_bias: w.input_bias.as_ref().map(up).transpose()?,
        recurrent_bias: w.recurrent_bias.as_ref().map(up).transpose()?,
    };
    let ctx = CallContext {
        x: &x,
        h0: &h0,
        dropout: &dropout,
        ..*ctx
    };
    let out = run_t::<f32>(&ctx, &weights, settings)?;
    Ok(SequenceOutput {
        sequence: out.sequence.to_dtype(half)?,
        last_output: out.last_output.to_dtype(half)?,
        state: out.state.to_dtype(half)?,
    })
}

fn run_t<T: HostFloat>(
    ctx: &CallContext,
    w: &CellWeights,
    settings: &FusedSettings,
) -> Result<SequenceOutput> {
    let (b, t, i) = ctx.x.dims3()?;
    let u = ctx.config.units;
    let mut spec = SeqSpec::new(ctx.config, b, t, i);
    let threads = settings.plan(b, t, u, ctx.config.reset_after);
    spec.threads = Threads::new(threads.product_threads, &CANDLE_POOL)
        .with_all_steps(threads.all_steps_threads);
    let mask = match ctx.mask {
        Some(m) => Some(m.flatten_all()?.to_vec1::<u8>()?),
        None => None,
    };
    let x = ctx.x.contiguous()?;
    let h0 = ctx.h0.contiguous()?;
    let biases: Vec<&Tensor> = w.input_bias.iter().chain(&w.recurrent_bias).collect();
    let bias = match biases.is_empty() {
        true => Tensor::zeros(0, x.dtype(), x.device())?,
        false => Tensor::cat(&biases, 0)?,
    };
    let (kernel, recurrent) = (w.kernel.contiguous()?, w.recurrent_kernel.contiguous()?);
    let tracked = [&x, &h0, &kernel, &recurrent, &bias]
        .iter()
        .any(|t| t.track_op());
    let masks = HostMasks::<T>::of(ctx.dropout)?;
    let live = LiveOutputs::of(ctx.config);
    let dead: DeadSlot<T> = Default::default();
    let outputs = (live, dead.clone());
    let ws = settings.workspaces.clone();
    // Keep the activations for a backward only in training calls that can have one; an
    // inference call that is differentiated anyway recomputes them.
    let save = ctx.training && tracked;
    let op = FusedGru::new(spec, mask, masks, save, ws, threads, outputs);
    let out = Call::new(op, x.clone(), [kernel, recurrent, bias], h0).run()?;
    let dead = dead.lock().map_err(|_| poisoned("outputs"))?.take();
    let dead = dead.ok_or_else(|| candle_core::Error::msg("gru-fused: the forward did not run"))?;
    sequence_output(live, (b, t, u), &out, dead, x.device())
}

impl<T: HostFloat> FusedGru<T> {
    /// The forward: the live outputs (see [`FusedGru::live_shape`]); the saved
    /// activations are kept for the backward, the dead outputs handed to the caller.
    pub(super) fn op_forward(&self, x: &[T], w: SeqWeights<T>, h0: &[T]) -> Result<Vec<T>> {
        let dims = self.dims();
        let (bt, b) = (dims.0 * dims.1 * dims.2, dims.0 * dims.2);
        let mut flat = vec![T::ZERO; bt + b];
        let saved = {
            let (seq, state) = flat.split_at_mut(bt);
            self.forward(x, w, h0, self.save, (seq, state))?
        };
        if let Some(saved) = saved {
            *self.saved.lock().map_err(|_| poisoned("saved state"))? = Some(saved);
        }
        let (out, dead) = assemble(self.live, dims, flat);
        *self.dead.lock().map_err(|_| poisoned("outputs"))? = Some(dead);
        Ok(out)
    }

    /// The shape of the live outputs.
    pub(super) fn live_shape(&self) -> Shape {
        self.live.shape(self.dims())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_plan_slices_large_batches_splits_units_and_threads_large_products() {
        let fixed = |n| FusedSettings {
            threads: Some(n),
            ..Default::default()
        };
        let plan = |chunks, product_threads, unit_threads| ThreadPlan {
            chunks,
            product_threads,
            all_steps_threads: if chunks == 1 { 2 } else { 1 },
            unit_threads,
        };
        // Two rows per thread or more: slices.
        assert_eq!(fixed(2).plan(4, 10, 8, true), plan(2, 1, 1));
        // Fewer rows: the units split when each thread gets 64 or more (reset_after).
        assert_eq!(fixed(2).plan(1, 10, 256, true), plan(1, 1, 2));
        assert_eq!(
            fixed(4).plan(3, 10, 128, true),
            ThreadPlan {
                all_steps_threads: 4,
                ..plan(1, 1, 2)
            }
        );
        // The products get the threads only when they are large.
        assert_eq!(fixed(2).plan(1, 10, 8, true), plan(1, 1, 1));
        assert_eq!(fixed(2).plan(1, 10, 256, false), plan(1, 1, 1));
        assert_eq!(fixed(2).plan(1, 10, 1024, false), plan(1, 2, 1));
        // Both: the forward splits its units, the backward's products take the threads.
        assert_eq!(fixed(2).plan(1, 10, 1024, true), plan(1, 2, 2));
        // Unset: one thread below the size where threads pay.
        assert_eq!(FusedSettings::default().threads_for(1, 10, 8, true), 1);
        // One step: the units stay on one thread.
        assert_eq!(fixed(2).plan(1, 3, 256, true), plan(1, 1, 1));
        assert_eq!(FusedSettings::default().threads_for(1, 1, 256, true), 1);
    }
}
