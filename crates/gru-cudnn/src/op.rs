//! The cuDNN GRU as a Candle custom op with its own backward.
//!
//! Inputs: `x` (batch, time, input), compacted so that each row's valid steps come first;
//! `h0` (batch, units); `w`, the weights flat in cuDNN's canonical order (six matrices then
//! six biases, see [`crate::canonical_weights`]). Output: one flat vector, `y` (batch, time,
//! units), zeros up to the next 256-byte boundary, then `hy` (batch, units), so both are
//! contiguous views and `hy` starts aligned like a buffer of its own
//! ([`output_parts`](crate::output::output_parts)). The per-row lengths are constants of the op.
//!
//! Every buffer cuDNN reads or writes starts 256-byte aligned, as the allocations PyTorch,
//! TensorFlow and JAX hand to cuDNN do (each is its own `cudaMalloc`, 256-byte aligned): an
//! input view that is not (a narrowed tensor, say) is copied to a fresh allocation first.
//!
//! A training forward keeps cuDNN's reserve space for the backward; a backward without it
//! (an inference forward, or a second backward: `cudnnRNNBackwardData_v8` consumes the
//! reserve space) reruns the training forward first.

use crate::error::CudnnError;
use crate::output::{output_parts, ALIGN};
use crate::plan::{with_plan, Elem, PlanCore, ShapePlan};
use crate::result::{self, RnnBuffers};
use crate::weights::Offsets;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, SyncOnDrop,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use std::ffi::c_void;
use std::sync::Mutex;

/// Elements of the canonical flat weights: 3 input matrices, 3 recurrent, 6 biases.
pub fn canonical_len(input: usize, units: usize) -> usize {
    Offsets::host_model(input, units).1
}

/// The cuDNN GRU op. Build it with [`CudnnGru::new`] and apply it with
/// `x.apply_op3(&h0, &w, op)`; [`crate::run`] does all of this for a Keras call.
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

/// A buffer cuDNN reads: the caller's view when it starts [`ALIGN`]-byte aligned, else an
/// aligned copy.
enum Aligned<'a, T> {
    Borrowed(CudaView<'a, T>),
    Copied(CudaSlice<T>),
}

impl<'a, T: Elem> Aligned<'a, T> {
    fn new(dev: &CudaDevice, v: CudaView<'a, T>) -> Result<Self> {
        let stream = dev.cuda_stream();
        let addr = {
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

fn input_err(what: &str, expected: String, got: String) -> candle_core::Error {
    CudnnError::Input {
        what: what.into(),
        expected,
        got,
    }
    .into()
}

/// A contiguous view of `len` elements of a storage.
fn view<'a, T: Elem>(
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
    let slice = s.as_cuda_slice::<T>()?;
    let start = l.start_offset();
    Ok(slice.slice(start..start + len))
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

/// The weight space cuDNN reads: `None` when cuDNN's layout is the canonical one (the
/// canonical weights are passed as they are), else a copy laid out at cuDNN's offsets.
fn weight_copy<T: Elem>(
    dev: &CudaDevice,
    core: &PlanCore,
    w: &CudaView<'_, T>,
) -> Result<Option<CudaSlice<T>>> {
    if core.layout.direct {
        return Ok(None);
    }
    let elem = std::mem::size_of::<T>();
    let mut space = dev.alloc_zeros::<T>(core.layout.bytes / elem)?;
    for (src, dst, n) in segments(core) {
        dev.memcpy_dtod(&w.slice(src..src + n), &mut space.slice_mut(dst..dst + n))?;
    }
    Ok(Some(space))
}

/// The device pointer of the weight space: the copy when there is one, else the canonical
/// weights themselves.
fn weights_ptr<'a, T: Elem>(
    copy: &'a Option<CudaSlice<T>>,
    w: &'a CudaView<'_, T>,
    stream: &'a CudaStream,
) -> (u64, SyncOnDrop<'a>) {
    match copy {
        Some(s) => s.device_ptr(stream),
        None => w.device_ptr(stream),
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

impl CudnnGru {
    /// The device lengths: the mask scan's (kept alive by `self.dev_lengths`, never written
    /// after the scan, which ran earlier on the same stream) or the shape's full lengths.
    fn dev_lengths_ptr(&self, sp: &ShapePlan, stream: &CudaStream) -> Result<*const i32> {
        match &self.dev_lengths {
            Some(t) => {
                let (st, l) = t.storage_and_layout();
                let s = cuda_of(&st, "device lengths")?.as_cuda_slice::<i32>()?;
                let (p, _sync) = s.device_ptr(stream);
                Ok((p as usize + l.start_offset() * std::mem::size_of::<i32>()) as *const i32)
            }
            None => match &sp.full_lengths {
                Some(s) => {
                    let (p, _sync) = s.device_ptr(stream);
                    Ok(p as *const i32)
                }
                None => Err(input_err(
                    "device lengths",
                    "full lengths cached for this shape".into(),
                    "none".into(),
                )),
            },
        }
    }

    /// One forward into `out` (y then hy); returns the reserve space of a training forward.
    #[allow(clippy::too_many_arguments)]
    fn forward_into<T: Elem>(
        &self,
        dev: &CudaDevice,
        core: &PlanCore,
        sp: &ShapePlan,
        training: bool,
        x: &CudaView<'_, T>,
        h0: &CudaView<'_, T>,
        w: &CudaView<'_, T>,
        out: &mut CudaSlice<T>,
    ) -> Result<Option<CudaSlice<u8>>> {
        let stream = dev.cuda_stream();
        let elem = std::mem::size_of::<T>();
        let (work_bytes, reserve_bytes) = if training { sp.train } else { sp.infer };
        // SAFETY: scratch space: cuDNN writes the workspace before it reads it.
        let mut work = unsafe { dev.alloc::<u8>(work_bytes.max(1)) }?;
        let mut reserve = if training {
            // SAFETY: the training forward writes the reserve space before anything reads it.
            Some(unsafe { dev.alloc::<u8>(reserve_bytes.max(1)) }?)
        } else {
            None
        };
        let copy = weight_copy(dev, core, w)?;
        let lengths = self.dev_lengths_ptr(sp, &stream)?;
        {
            let (xp, _gx) = x.device_ptr(&stream);
            let (hp, _gh) = h0.device_ptr(&stream);
            let (wp, _gw) = weights_ptr(&copy, w, &stream);
            let (op, _go) = out.device_ptr_mut(&stream);
            let (kp, _gk) = work.device_ptr_mut(&stream);
            let (rp, _gr) = match reserve.as_mut() {
                Some(r) => {
                    let (p, g) = r.device_ptr_mut(&stream);
                    (p as *mut c_void, Some(g))
                }
                None => (std::ptr::null_mut(), None),
            };
            let b = RnnBuffers {
                dev_seq_lengths: lengths,
                x: xp as *mut c_void,
                y: op as *mut c_void,
                hx: hp as *mut c_void,
                hy: (op as usize + self.parts::<T>().0 * elem) as *mut c_void,
                weights: wp as *mut c_void,
                weight_bytes: core.layout.bytes,
                work: kp as *mut c_void,
                work_bytes,
                reserve: rp,
                reserve_bytes: if training { reserve_bytes } else { 0 },
            };
            let mode = if training {
                sys::cudnnForwardMode_t::CUDNN_FWD_MODE_TRAINING
            } else {
                sys::cudnnForwardMode_t::CUDNN_FWD_MODE_INFERENCE
            };
            // SAFETY: the descriptors were set for (batch, time, lengths) of this op; x, h0, w and
            // out were checked to hold batch*time*input, batch*units, the weight space and
            // output_parts' length (hy at its aligned offset); workspace and reserve have the sizes
            // cuDNN asked for; every buffer lives until the call is scheduled on the handle's
            // stream (candle's stream for this device), and later frees are stream-ordered.
            unsafe {
                result::rnn_forward(
                    core.handle.raw(),
                    core.rnn.raw(),
                    mode,
                    sp.x.raw(),
                    sp.y.raw(),
                    sp.h.raw(),
                    &b,
                )
            }?;
        }
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
        let (bt, i, u) = (self.batch * self.time, self.input, self.units);
        let x = Aligned::new(&dev, view::<T>(xs, xl, "x", bt * i)?)?;
        let h0 = Aligned::new(&dev, view::<T>(hs, hl, "h0", self.batch * u)?)?;
        let w = Aligned::new(&dev, view::<T>(ws, wl, "weights", canonical_len(i, u))?)?;
        let out_len = self.parts::<T>().1;
        let mut out = dev.alloc_zeros::<T>(out_len)?;
        let reserve = with_plan::<T, _>(&dev, i, u, self.tf32, |plan| {
            let (core, sp) = plan.shape(&dev, self.time, &self.lengths)?;
            let (x, h0, w) = (x.view(), h0.view(), w.view());
            self.forward_into(&dev, core, sp, self.training, &x, &h0, &w, &mut out)
        })?;
        if let Ok(mut r) = self.reserve.lock() {
            *r = reserve;
        }
        Ok((T::wrap_cuda_slice(out, dev), Shape::from(out_len)))
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
        let (xs, xl) = x.storage_and_layout();
        let (hs, hl) = h0.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (rs, rl) = res.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let xc = cuda_of(&xs, "x")?;
        let dev = xc.device.clone();
        let (hy_at, out_len) = self.parts::<T>();
        let xa = Aligned::new(&dev, view::<T>(xc, xl, "x", b * t * i)?)?;
        let ha = Aligned::new(&dev, view::<T>(cuda_of(&hs, "h0")?, hl, "h0", b * u)?)?;
        let wa = Aligned::new(
            &dev,
            view::<T>(cuda_of(&ws, "weights")?, wl, "weights", canonical_len(i, u))?,
        )?;
        let ra = Aligned::new(
            &dev,
            view::<T>(cuda_of(&rs, "output")?, rl, "output", out_len)?,
        )?;
        let ga = Aligned::new(
            &dev,
            view::<T>(
                cuda_of(&gs, "output gradient")?,
                gl,
                "output gradient",
                out_len,
            )?,
        )?;
        let (xv, hv, wv, rv, gv) = (xa.view(), ha.view(), wa.view(), ra.view(), ga.view());
        let saved = self.reserve.lock().ok().and_then(|mut r| r.take());
        let (dx, dhx, dw) = with_plan::<T, _>(&dev, i, u, self.tf32, |plan| {
            let (core, sp) = plan.shape(&dev, t, &self.lengths)?;
            let stream = dev.cuda_stream();
            let elem = std::mem::size_of::<T>();
            let (work_bytes, reserve_bytes) = sp.train;
            // A reserve space of this forward, or a fresh training forward's (with its own y).
            let (mut reserve, y_again) = match saved {
                Some(r) if r.len() == reserve_bytes.max(1) => (r, None),
                _ => {
                    let mut y2 = dev.alloc_zeros::<T>(out_len)?;
                    let r = self.forward_into(&dev, core, sp, true, &xv, &hv, &wv, &mut y2)?;
                    let r =
                        r.ok_or_else(|| input_err("reserve space", "kept".into(), "none".into()))?;
                    (r, Some(y2))
                }
            };
            let yv = match &y_again {
                Some(y2) => y2.slice(0..b * t * u),
                None => rv.slice(0..b * t * u),
            };
            let mut dx = dev.alloc_zeros::<T>(b * t * i)?;
            let mut dhx = dev.alloc_zeros::<T>(b * u)?;
            let mut dws = dev.alloc_zeros::<T>(core.layout.bytes / elem)?;
            // SAFETY: scratch space, written by cuDNN before it is read.
            let mut work = unsafe { dev.alloc::<u8>(work_bytes.max(1)) }?;
            let copy = weight_copy(&dev, core, &wv)?;
            let lengths = self.dev_lengths_ptr(sp, &stream)?;
            {
                let (xp, _g1) = xv.device_ptr(&stream);
                let (hp, _g2) = hv.device_ptr(&stream);
                let (yp, _g3) = yv.device_ptr(&stream);
                let (gp, _g4) = gv.device_ptr(&stream);
                let (wp, _g5) = weights_ptr(&copy, &wv, &stream);
                let (kp, _g6) = work.device_ptr_mut(&stream);
                let (rp, _g7) = reserve.device_ptr_mut(&stream);
                let (dxp, _g8) = dx.device_ptr_mut(&stream);
                let (dhp, _g9) = dhx.device_ptr_mut(&stream);
                let mut bufs = RnnBuffers {
                    dev_seq_lengths: lengths,
                    x: xp as *mut c_void,
                    y: yp as *mut c_void,
                    hx: hp as *mut c_void,
                    hy: std::ptr::null_mut(),
                    weights: wp as *mut c_void,
                    weight_bytes: core.layout.bytes,
                    work: kp as *mut c_void,
                    work_bytes,
                    reserve: rp as *mut c_void,
                    reserve_bytes,
                };
                let dy = gp as *const c_void;
                let dhy = (gp as usize + hy_at * elem) as *const c_void;
                // SAFETY: as in the forward; dy and dhy are the two parts of the output's
                // gradient (checked to hold out_len elements, hy at its aligned offset); dx and dhx were allocated with the
                // input's and state's sizes; the reserve space is this op's training forward's.
                unsafe {
                    result::rnn_backward_data(
                        core.handle.raw(),
                        core.rnn.raw(),
                        sp.x.raw(),
                        sp.y.raw(),
                        sp.h.raw(),
                        &bufs,
                        dy,
                        dhy,
                        dxp as *mut c_void,
                        dhp as *mut c_void,
                    )
                }?;
                let (dwp, _g10) = dws.device_ptr_mut(&stream);
                bufs.weights = dwp as *mut c_void;
                // SAFETY: as above, after the data backward with the same reserve space; the
                // gradient space is zeroed and has cuDNN's weight-space size (mode ADD).
                unsafe {
                    result::rnn_backward_weights(
                        core.handle.raw(),
                        core.rnn.raw(),
                        sp.x.raw(),
                        sp.y.raw(),
                        sp.h.raw(),
                        &bufs,
                    )
                }?;
            }
            let dw = if core.layout.direct {
                dws
            } else {
                let mut canon = dev.alloc_zeros::<T>(canonical_len(i, u))?;
                for (c, at, n) in segments(core) {
                    dev.memcpy_dtod(&dws.slice(at..at + n), &mut canon.slice_mut(c..c + n))?;
                }
                canon
            };
            Ok((dx, dhx, dw))
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
