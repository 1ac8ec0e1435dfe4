//! The cuDNN GRU as a Candle custom op with its own backward.
//!
//! Inputs: `x` (batch, time, input), compacted so that each row's valid steps come first;
//! `h0` (batch, units); `w`, the weights flat in cuDNN's canonical order (six matrices then
//! six biases, see [`crate::weights::canonical_weights`]). Output: one flat vector, `y` (batch, time,
//! units), zeros up to the next 256-byte boundary, then `hy` (batch, units), so both are
//! contiguous views and `hy` starts aligned like a buffer of its own
//! ([`output_parts`]). The per-row lengths are constants of
//! the op.
//!
//! Every buffer cuDNN reads or writes starts 256-byte aligned, as the allocations PyTorch,
//! TensorFlow and JAX hand to cuDNN do (each is its own `cudaMalloc`): an input view that is
//! not (a narrowed tensor, say) is copied to a fresh allocation first.
//!
//! A training forward keeps cuDNN's reserve space for the backward; a backward without it
//! (an inference forward, or a second backward: `cudnnRNNBackwardData_v8` consumes the
//! reserve space) reruns the training forward first. The calls themselves go through
//! [`crate::safe::RnnCall`], which checks every buffer; this module has no `unsafe`.

use crate::error::CudnnError;
use crate::output::{output_parts, ALIGN};
use crate::plan::{with_plan, Elem, PlanCore, ShapePlan};
use crate::safe::{BackwardDataBuffers, BackwardWeightsBuffers, ForwardBuffers};
use crate::weights::Offsets;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DevicePtr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

/// Elements of the canonical flat weights: 3 input matrices, 3 recurrent, 6 biases.
pub fn canonical_len(input: usize, units: usize) -> usize {
    Offsets::host_model(input, units).1
}

/// The cuDNN GRU op. Build it with [`CudnnGru::new`] and apply it with
/// `x.apply_op3(&h0, &w, op)`; [`crate::keras_call::forward`] does all of this for a Keras
/// call.
pub struct CudnnGru {
    batch: usize,
    time: usize,
    input: usize,
    units: usize,
    lengths: Vec<i32>,
    dev_lengths: Option<Tensor>,
    training: bool,
    tf32: bool,
    reserve: Mutex<Option<CudaSlice<u8>>>,
}

impl std::fmt::Debug for CudnnGru {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudnnGru")
            .field("batch", &self.batch)
            .field("time", &self.time)
            .field("input", &self.input)
            .field("units", &self.units)
            .field("training", &self.training)
            .field("tf32", &self.tf32)
            .finish()
    }
}

fn input_err(what: &str, expected: String, got: String) -> candle_core::Error {
    CudnnError::Input {
        what: what.into(),
        expected,
        got,
    }
    .into()
}

impl CudnnGru {
    /// An op for `lengths.len()` rows of `time` steps. `dev_lengths` is the same lengths as
    /// an I32 tensor on the device (None: every row has `time` steps, which `lengths` must
    /// say too). `training` keeps the reserve space for a backward; `tf32` lets f32 use
    /// TF32 tensor cores (otherwise `CUDNN_FMA_MATH`).
    pub fn new(
        time: usize,
        input: usize,
        units: usize,
        lengths: Vec<i32>,
        dev_lengths: Option<Tensor>,
        training: bool,
        tf32: bool,
    ) -> std::result::Result<Self, CudnnError> {
        let batch = lengths.len();
        if let Some(row) = lengths.iter().position(|&l| l < 1 || l as usize > time) {
            return Err(CudnnError::Input {
                what: format!("length of row {row}"),
                expected: format!("1..={time}"),
                got: lengths[row].to_string(),
            });
        }
        match &dev_lengths {
            Some(t) if t.dims() != [batch] || t.dtype() != DType::I32 => {
                return Err(CudnnError::Input {
                    what: "device lengths".into(),
                    expected: format!("I32 [{batch}]"),
                    got: format!("{:?} {:?}", t.dtype(), t.dims()),
                })
            }
            None if lengths.iter().any(|&l| l as usize != time) => {
                return Err(CudnnError::Input {
                    what: "device lengths".into(),
                    expected: "a device copy when some row is shorter than time".into(),
                    got: "none".into(),
                })
            }
            _ => {}
        }
        Ok(CudnnGru {
            batch,
            time,
            input,
            units,
            lengths,
            dev_lengths,
            training,
            tf32,
            reserve: Mutex::new(None),
        })
    }

    /// (start of `hy`, total length) of the output for elements of `T`.
    fn parts<T>(&self) -> (usize, usize) {
        output_parts(self.batch, self.time, self.units, std::mem::size_of::<T>())
    }
}

/// A contiguous view of `len` elements of a storage.
fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
    len: usize,
) -> Result<CudaView<'a, T>> {
    if !l.is_contiguous() {
        return Err(input_err(
            what,
            "a contiguous tensor".into(),
            format!("strides {:?}", l.stride()),
        ));
    }
    if l.shape().elem_count() != len {
        return Err(input_err(
            what,
            format!("{len} elements"),
            format!("{:?}", l.dims()),
        ));
    }
    let start = l.start_offset();
    Ok(s.as_cuda_slice::<T>()?.slice(start..start + len))
}

fn cuda_of<'a>(s: &'a Storage, what: &str) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => Err(input_err(
            what,
            "a CUDA tensor".into(),
            "a non-CUDA tensor".into(),
        )),
    }
}

/// A buffer cuDNN reads: the caller's view when it starts [`ALIGN`]-byte aligned, else an
/// aligned copy.
enum Aligned<'a, T> {
    Borrowed(CudaView<'a, T>),
    Copied(CudaSlice<T>),
}

impl<'a, T: Elem> Aligned<'a, T> {
    fn new(dev: &CudaDevice, v: CudaView<'a, T>) -> Result<Self> {
        let addr = {
            let stream = dev.cuda_stream();
            let (p, _guard) = v.device_ptr(&stream);
            p
        };
        if addr % ALIGN as u64 == 0 {
            return Ok(Aligned::Borrowed(v));
        }
        let mut copy = dev.alloc_zeros::<T>(v.len())?;
        dev.memcpy_dtod(&v, &mut copy)?;
        Ok(Aligned::Copied(copy))
    }

    fn view(&self) -> CudaView<'_, T> {
        match self {
            Aligned::Borrowed(v) => v.slice(0..v.len()),
            Aligned::Copied(c) => c.slice(0..c.len()),
        }
    }
}

/// (canonical offset, cuDNN offset, length) of the 12 weight blocks.
fn segments(core: &PlanCore) -> Vec<(usize, usize, usize)> {
    let (i, u) = (core.input, core.units);
    let (canon, _) = Offsets::host_model(i, u);
    let at = &core.layout.offsets;
    let mut v = Vec::with_capacity(12);
    for id in 0..6 {
        let n = u * if id < 3 { i } else { u };
        v.push((canon.matrix[id], at.matrix[id], n));
        v.push((canon.bias[id], at.bias[id], u));
    }
    v
}

/// The weight space cuDNN reads: the canonical weights as they are when cuDNN's layout is
/// the canonical one, else a copy laid out at cuDNN's offsets.
struct WeightSpace<'a, T> {
    canonical: CudaView<'a, T>,
    copy: Option<CudaSlice<T>>,
}

impl<'a, T: Elem> WeightSpace<'a, T> {
    fn new(dev: &CudaDevice, core: &PlanCore, w: CudaView<'a, T>) -> Result<Self> {
        if core.layout.direct {
            return Ok(WeightSpace {
                canonical: w,
                copy: None,
            });
        }
        let elem = std::mem::size_of::<T>();
        let mut space = dev.alloc_zeros::<T>(core.layout.bytes / elem)?;
        for (src, dst, n) in segments(core) {
            dev.memcpy_dtod(&w.slice(src..src + n), &mut space.slice_mut(dst..dst + n))?;
        }
        Ok(WeightSpace {
            canonical: w,
            copy: Some(space),
        })
    }

    fn view(&self) -> CudaView<'_, T> {
        match &self.copy {
            Some(c) => c.slice(0..c.len()),
            None => self.canonical.slice(0..self.canonical.len()),
        }
    }
}

/// A weight-space gradient in the canonical order.
fn canonical_grad<T: Elem>(
    dev: &CudaDevice,
    core: &PlanCore,
    dws: CudaSlice<T>,
) -> Result<CudaSlice<T>> {
    if core.layout.direct {
        return Ok(dws);
    }
    let mut canon = dev.alloc_zeros::<T>(canonical_len(core.input, core.units))?;
    for (c, at, n) in segments(core) {
        dev.memcpy_dtod(&dws.slice(at..at + n), &mut canon.slice_mut(c..c + n))?;
    }
    Ok(canon)
}

/// The inputs of one op call, as aligned device views.
struct Inputs<'a, T> {
    x: Aligned<'a, T>,
    h0: Aligned<'a, T>,
    w: CudaView<'a, T>,
}

impl CudnnGru {
    /// Runs `f` with this op's device lengths: the mask scan's (its storage guard held for
    /// the duration) or the shape's full lengths.
    fn with_lengths<R>(
        &self,
        sp: &ShapePlan,
        f: impl FnOnce(CudaView<'_, i32>) -> Result<R>,
    ) -> Result<R> {
        match &self.dev_lengths {
            Some(t) => {
                let (st, l) = t.storage_and_layout();
                f(view::<i32>(
                    cuda_of(&st, "device lengths")?,
                    l,
                    "device lengths",
                    self.batch,
                )?)
            }
            None => match &sp.full_lengths {
                Some(s) => f(s.slice(0..s.len())),
                None => Err(input_err(
                    "device lengths",
                    "full lengths cached for this shape".into(),
                    "none".into(),
                )),
            },
        }
    }

    /// One forward into `out` (y, padding, hy); returns the reserve space of a training
    /// forward.
    fn forward_into<T: Elem>(
        &self,
        dev: &CudaDevice,
        (core, sp): (&PlanCore, &ShapePlan),
        training: bool,
        inp: &Inputs<'_, T>,
        out: &mut CudaSlice<T>,
    ) -> Result<Option<CudaSlice<u8>>> {
        let call = core.call(sp, self.time, training);
        let mut work = dev.alloc_zeros::<u8>(call.shape.work_bytes.max(1))?;
        let mut reserve = match training {
            true => Some(dev.alloc_zeros::<u8>(call.shape.reserve_bytes.max(1))?),
            false => None,
        };
        let weights = WeightSpace::new(dev, core, inp.w.slice(0..inp.w.len()))?;
        let (hy_at, _) = self.parts::<T>();
        let (mut ya, mut hy) = out.split_at_mut(hy_at);
        self.with_lengths(sp, |lengths| {
            call.forward(ForwardBuffers {
                lengths,
                x: inp.x.view(),
                hx: inp.h0.view(),
                weights: weights.view(),
                y: ya.slice_mut(0..self.batch * self.time * self.units),
                hy: hy.slice_mut(..),
                work: work.slice_mut(..),
                reserve: reserve.as_mut().map(|r| r.slice_mut(..)),
            })?;
            Ok(())
        })?;
        Ok(reserve)
    }

    fn fwd<T: Elem>(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        hs: &CudaStorage,
        hl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = xs.device.clone();
        let (b, i, u) = (self.batch, self.input, self.units);
        let inp = Inputs {
            x: Aligned::new(&dev, view::<T>(xs, xl, "x", b * self.time * i)?)?,
            h0: Aligned::new(&dev, view::<T>(hs, hl, "h0", b * u)?)?,
            w: view::<T>(ws, wl, "weights", canonical_len(i, u))?,
        };
        let out_len = self.parts::<T>().1;
        let mut out = dev.alloc_zeros::<T>(out_len)?;
        let reserve = with_plan::<T, _>(&dev, i, u, self.tf32, |plan| {
            let (core, sp) = plan.shape(&dev, self.time, &self.lengths)?;
            self.forward_into(&dev, (core, sp), self.training, &inp, &mut out)
        })?;
        if let Ok(mut r) = self.reserve.lock() {
            *r = reserve;
        }
        Ok((T::wrap_cuda_slice(out, dev), Shape::from(out_len)))
    }
}

/// The backward's gradients: (dx, dhx, canonical dw).
type Grads<T> = (CudaSlice<T>, CudaSlice<T>, CudaSlice<T>);

impl CudnnGru {
    /// The backward inside the plan: a reserve space (the forward's, or a new training
    /// forward's), then the data backward and the weight backward.
    fn backward_in_plan<T: Elem>(
        &self,
        dev: &CudaDevice,
        (core, sp): (&PlanCore, &ShapePlan),
        inp: &Inputs<'_, T>,
        y_saved: &Aligned<'_, T>,
        grad: &Aligned<'_, T>,
        saved: Option<CudaSlice<u8>>,
    ) -> Result<Grads<T>> {
        let (b, t, i, u) = (self.batch, self.time, self.input, self.units);
        let (hy_at, out_len) = self.parts::<T>();
        let call = core.call(sp, t, true);
        let (mut reserve, y_again) = match saved {
            Some(r) if r.len() == call.shape.reserve_bytes.max(1) => (r, None),
            _ => {
                let mut y2 = dev.alloc_zeros::<T>(out_len)?;
                let r = self
                    .forward_into(dev, (core, sp), true, inp, &mut y2)?
                    .ok_or_else(|| input_err("reserve space", "kept".into(), "none".into()))?;
                (r, Some(y2))
            }
        };
        let y = match &y_again {
            Some(y2) => y2.slice(0..b * t * u),
            None => y_saved.view().slice(0..b * t * u),
        };
        let g = grad.view();
        let mut dx = dev.alloc_zeros::<T>(b * t * i)?;
        let mut dhx = dev.alloc_zeros::<T>(b * u)?;
        let mut dws = dev.alloc_zeros::<T>(core.layout.bytes / std::mem::size_of::<T>())?;
        let mut work = dev.alloc_zeros::<u8>(call.shape.work_bytes.max(1))?;
        let weights = WeightSpace::new(dev, core, inp.w.slice(0..inp.w.len()))?;
        self.with_lengths(sp, |lengths| {
            call.backward_data(BackwardDataBuffers {
                lengths: lengths.slice(0..b),
                y: y.slice(0..b * t * u),
                dy: g.slice(0..b * t * u),
                hx: inp.h0.view(),
                dhy: g.slice(hy_at..hy_at + b * u),
                weights: weights.view(),
                dx: dx.slice_mut(..),
                dhx: dhx.slice_mut(..),
                work: work.slice_mut(..),
                reserve: reserve.slice_mut(..),
            })?;
            call.backward_weights(BackwardWeightsBuffers {
                lengths,
                x: inp.x.view(),
                hx: inp.h0.view(),
                y: y.slice(0..b * t * u),
                dweights: dws.slice_mut(..),
                work: work.slice_mut(..),
                reserve: reserve.slice_mut(..),
            })?;
            Ok(())
        })?;
        Ok((dx, dhx, canonical_grad(dev, core, dws)?))
    }

    fn bwd_t<T: Elem>(
        &self,
        x: &Tensor,
        h0: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let (b, t, i, u) = (self.batch, self.time, self.input, self.units);
        let out_len = self.parts::<T>().1;
        let (xs, xl) = x.storage_and_layout();
        let (hs, hl) = h0.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (rs, rl) = res.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xc = cuda_of(&xs, "x")?;
        let dev = xc.device.clone();
        let inp = Inputs {
            x: Aligned::new(&dev, view::<T>(xc, xl, "x", b * t * i)?)?,
            h0: Aligned::new(&dev, view::<T>(cuda_of(&hs, "h0")?, hl, "h0", b * u)?)?,
            w: view::<T>(cuda_of(&ws, "weights")?, wl, "weights", canonical_len(i, u))?,
        };
        let y_saved = Aligned::new(
            &dev,
            view::<T>(cuda_of(&rs, "output")?, rl, "output", out_len)?,
        )?;
        let g = Aligned::new(
            &dev,
            view::<T>(
                cuda_of(&gs, "output gradient")?,
                gl,
                "output gradient",
                out_len,
            )?,
        )?;
        let saved = self.reserve.lock().ok().and_then(|mut r| r.take());
        let (dx, dhx, dw) = with_plan::<T, _>(&dev, i, u, self.tf32, |plan| {
            let (core, sp) = plan.shape(&dev, t, &self.lengths)?;
            self.backward_in_plan(&dev, (core, sp), &inp, &y_saved, &g, saved)
        })?;
        let wrap = |s: CudaSlice<T>, shape: Shape| {
            Tensor::from_storage(
                Storage::Cuda(T::wrap_cuda_slice(s, dev.clone())),
                shape,
                BackpropOp::none(),
                false,
            )
        };
        Ok((
            wrap(dx, Shape::from((b, t, i))),
            wrap(dhx, Shape::from((b, u))),
            wrap(dw, Shape::from(canonical_len(i, u))),
        ))
    }
}

impl CustomOp3 for CudnnGru {
    fn name(&self) -> &'static str {
        "cudnn-gru"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Err(input_err(
            "inputs",
            "CUDA tensors".into(),
            "CPU tensors".into(),
        ))
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        hs: &CudaStorage,
        hl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match xs.dtype() {
            DType::F32 => self.fwd::<f32>(xs, xl, hs, hl, ws, wl),
            DType::F64 => self.fwd::<f64>(xs, xl, hs, hl, ws, wl),
            DType::F16 => self.fwd::<half::f16>(xs, xl, hs, hl, ws, wl),
            DType::BF16 => self.fwd::<half::bf16>(xs, xl, hs, hl, ws, wl),
            other => Err(input_err(
                "dtype",
                "f32, f64, f16 or bf16".into(),
                format!("{other:?}"),
            )),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        h0: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dh, dw) = match x.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, h0, w, res, grad),
            DType::F64 => self.bwd_t::<f64>(x, h0, w, res, grad),
            DType::F16 => self.bwd_t::<half::f16>(x, h0, w, res, grad),
            DType::BF16 => self.bwd_t::<half::bf16>(x, h0, w, res, grad),
            other => Err(input_err(
                "dtype",
                "f32, f64, f16 or bf16".into(),
                format!("{other:?}"),
            )),
        }?;
        Ok((Some(dx), Some(dh), Some(dw)))
    }
}
