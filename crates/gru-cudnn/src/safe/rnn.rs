//! One cuDNN RNN call on typed device buffers: the forward, the data backward and the weight
//! backward. Every buffer's length (and 256-byte alignment) is checked against the call's
//! shape before cuDNN sees it, and the stream guards of every buffer are held for the
//! duration of the call; raw pointers never leave this module.

use super::{Handle, RnnDataDescriptor, RnnDescriptor, TensorDescriptor};
use crate::error::CudnnError;
use crate::output::ALIGN;
use crate::result::{self, RnnBuffers};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{
    CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceSlice,
};
use std::ffi::c_void;

/// The sizes one call's buffers must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RnnShape {
    /// Rows.
    pub batch: usize,
    /// Padded timesteps.
    pub time: usize,
    /// Input features.
    pub input: usize,
    /// Units.
    pub units: usize,
    /// Bytes of one element of the data type the descriptors were set for.
    pub elem_bytes: usize,
    /// `cudnnGetRNNWeightSpaceSize`.
    pub weight_bytes: usize,
    /// The workspace cuDNN asked for (this mode).
    pub work_bytes: usize,
    /// The reserve space cuDNN asked for (training).
    pub reserve_bytes: usize,
}

/// The descriptors of one call, set for its shape and lengths.
pub struct RnnCall<'a> {
    /// The handle (bound to the stream the buffers are used on).
    pub handle: &'a Handle,
    /// The GRU's RNN descriptor.
    pub rnn: &'a RnnDescriptor,
    /// Input sequence descriptor.
    pub x: &'a RnnDataDescriptor,
    /// Output sequence descriptor.
    pub y: &'a RnnDataDescriptor,
    /// State descriptor (1, batch, units).
    pub h: &'a TensorDescriptor,
    /// The sizes the buffers are checked against.
    pub shape: RnnShape,
}

/// The buffers of a forward.
pub struct ForwardBuffers<'v, T> {
    /// Per-row lengths (batch), int32.
    pub lengths: CudaView<'v, i32>,
    /// (batch, time, input), each row's valid steps first.
    pub x: CudaView<'v, T>,
    /// (batch, units).
    pub hx: CudaView<'v, T>,
    /// The weight space.
    pub weights: CudaView<'v, T>,
    /// (batch, time, units), written.
    pub y: CudaViewMut<'v, T>,
    /// (batch, units), written.
    pub hy: CudaViewMut<'v, T>,
    /// Scratch space.
    pub work: CudaViewMut<'v, u8>,
    /// The reserve space of a training forward (kept for the backward); `None` for
    /// inference.
    pub reserve: Option<CudaViewMut<'v, u8>>,
}

/// The buffers of a data backward.
pub struct BackwardDataBuffers<'v, T> {
    /// Per-row lengths (batch), int32.
    pub lengths: CudaView<'v, i32>,
    /// The forward's output (batch, time, units).
    pub y: CudaView<'v, T>,
    /// Its gradient.
    pub dy: CudaView<'v, T>,
    /// The forward's initial state (batch, units).
    pub hx: CudaView<'v, T>,
    /// The gradient of the final state (batch, units).
    pub dhy: CudaView<'v, T>,
    /// The weight space.
    pub weights: CudaView<'v, T>,
    /// (batch, time, input), written.
    pub dx: CudaViewMut<'v, T>,
    /// (batch, units), written.
    pub dhx: CudaViewMut<'v, T>,
    /// Scratch space.
    pub work: CudaViewMut<'v, u8>,
    /// The training forward's reserve space.
    pub reserve: CudaViewMut<'v, u8>,
}

/// The buffers of a weight backward (after the data backward, same reserve space).
pub struct BackwardWeightsBuffers<'v, T> {
    /// Per-row lengths (batch), int32.
    pub lengths: CudaView<'v, i32>,
    /// The forward's input.
    pub x: CudaView<'v, T>,
    /// The forward's initial state.
    pub hx: CudaView<'v, T>,
    /// The forward's output.
    pub y: CudaView<'v, T>,
    /// The weight-space gradient: cuDNN adds into it (zero it first).
    pub dweights: CudaViewMut<'v, T>,
    /// Scratch space.
    pub work: CudaViewMut<'v, u8>,
    /// The training forward's reserve space.
    pub reserve: CudaViewMut<'v, u8>,
}

fn wrong(what: &str, expected: String, got: String) -> CudnnError {
    CudnnError::Input {
        what: what.into(),
        expected,
        got,
    }
}

/// `what` holds exactly `want` elements.
fn exact<S: DeviceSlice<E>, E>(what: &str, s: &S, want: usize) -> Result<(), CudnnError> {
    match s.len() == want {
        true => Ok(()),
        false => Err(wrong(
            what,
            format!("{want} elements"),
            format!("{}", s.len()),
        )),
    }
}

/// `what` holds at least `want` bytes.
fn at_least(what: &str, s: &CudaViewMut<'_, u8>, want: usize) -> Result<(), CudnnError> {
    match s.len() >= want {
        true => Ok(()),
        false => Err(wrong(
            what,
            format!("at least {want} bytes"),
            format!("{}", s.len()),
        )),
    }
}

/// The device address of a buffer, checked to be [`ALIGN`]-byte aligned.
fn aligned(what: &str, ptr: u64) -> Result<*mut c_void, CudnnError> {
    match ptr % ALIGN as u64 {
        0 => Ok(ptr as *mut c_void),
        r => Err(wrong(
            what,
            format!("a {ALIGN}-byte aligned address"),
            format!("{r} bytes past one"),
        )),
    }
}

impl RnnCall<'_> {
    fn stream(&self) -> &CudaStream {
        self.handle.stream()
    }

    fn check_elem<T>(&self) -> Result<(), CudnnError> {
        match std::mem::size_of::<T>() == self.shape.elem_bytes {
            true => Ok(()),
            false => Err(wrong(
                "element type",
                format!(
                    "{} bytes (the descriptors' data type)",
                    self.shape.elem_bytes
                ),
                format!("{} bytes", std::mem::size_of::<T>()),
            )),
        }
    }

    fn check_common<T>(
        &self,
        lengths: &CudaView<'_, i32>,
        weights_len: usize,
    ) -> Result<(), CudnnError> {
        self.check_elem::<T>()?;
        exact("lengths", lengths, self.shape.batch)?;
        let want = self.shape.weight_bytes / self.shape.elem_bytes;
        match weights_len == want {
            true => Ok(()),
            false => Err(wrong(
                "weight space",
                format!("{want} elements"),
                format!("{weights_len}"),
            )),
        }
    }

    /// `cudnnRNNForward`: `y` and `hy` from `x`, `hx` and the weights; a training forward
    /// (with `reserve`) keeps what the backward needs in the reserve space.
    pub fn forward<T>(&self, b: ForwardBuffers<'_, T>) -> Result<(), CudnnError> {
        let s = self.shape;
        let (bt, bu) = (s.batch * s.time, s.batch * s.units);
        self.check_common::<T>(&b.lengths, b.weights.len())?;
        exact("x", &b.x, bt * s.input)?;
        exact("hx", &b.hx, bu)?;
        exact("y", &b.y, bt * s.units)?;
        exact("hy", &b.hy, bu)?;
        at_least("workspace", &b.work, s.work_bytes)?;
        let mode = match &b.reserve {
            Some(r) => {
                at_least("reserve space", r, s.reserve_bytes)?;
                sys::cudnnForwardMode_t::CUDNN_FWD_MODE_TRAINING
            }
            None => sys::cudnnForwardMode_t::CUDNN_FWD_MODE_INFERENCE,
        };
        let st = self.stream();
        let (mut y, mut hy, mut work, mut reserve) = (b.y, b.hy, b.work, b.reserve);
        let (lp, _g0) = b.lengths.device_ptr(st);
        let (xp, _g1) = b.x.device_ptr(st);
        let (hp, _g2) = b.hx.device_ptr(st);
        let (wp, _g3) = b.weights.device_ptr(st);
        let (yp, _g4) = y.device_ptr_mut(st);
        let (hyp, _g5) = hy.device_ptr_mut(st);
        let (kp, _g6) = work.device_ptr_mut(st);
        let (rp, _g7) = match reserve.as_mut() {
            Some(r) => {
                let (p, g) = r.device_ptr_mut(st);
                (Some(p), Some(g))
            }
            None => (None, None),
        };
        let bufs = RnnBuffers {
            dev_seq_lengths: lp as *const i32,
            x: aligned("x", xp)?,
            y: aligned("y", yp)?,
            hx: aligned("hx", hp)?,
            hy: aligned("hy", hyp)?,
            weights: aligned("weights", wp)?,
            weight_bytes: s.weight_bytes,
            work: kp as *mut c_void,
            work_bytes: s.work_bytes,
            reserve: rp.map_or(std::ptr::null_mut(), |p| p as *mut c_void),
            reserve_bytes: if rp.is_some() { s.reserve_bytes } else { 0 },
        };
        // SAFETY: the descriptors were set for this shape (the caller's RnnCall); every buffer
        // was checked above to hold exactly (or, for scratch, at least) what the shape implies,
        // in the descriptors' element size; its stream guard lives to the end of this
        // function, and the handle runs on that same stream, so later frees are ordered after
        // the call.
        unsafe {
            result::rnn_forward(
                self.handle.raw(),
                self.rnn.raw(),
                mode,
                self.x.raw(),
                self.y.raw(),
                self.h.raw(),
                &bufs,
            )
        }
    }

    /// `cudnnRNNBackwardData_v8`: `dx` and `dhx` from `dy` and `dhy`. Consumes the reserve
    /// space's contents: a second backward needs a new training forward.
    pub fn backward_data<T>(&self, b: BackwardDataBuffers<'_, T>) -> Result<(), CudnnError> {
        let s = self.shape;
        let (bt, bu) = (s.batch * s.time, s.batch * s.units);
        self.check_common::<T>(&b.lengths, b.weights.len())?;
        exact("y", &b.y, bt * s.units)?;
        exact("dy", &b.dy, bt * s.units)?;
        exact("hx", &b.hx, bu)?;
        exact("dhy", &b.dhy, bu)?;
        exact("dx", &b.dx, bt * s.input)?;
        exact("dhx", &b.dhx, bu)?;
        at_least("workspace", &b.work, s.work_bytes)?;
        at_least("reserve space", &b.reserve, s.reserve_bytes)?;
        let st = self.stream();
        let (mut dx, mut dhx, mut work, mut reserve) = (b.dx, b.dhx, b.work, b.reserve);
        let (lp, _g0) = b.lengths.device_ptr(st);
        let (yp, _g1) = b.y.device_ptr(st);
        let (dyp, _g2) = b.dy.device_ptr(st);
        let (hp, _g3) = b.hx.device_ptr(st);
        let (dhyp, _g4) = b.dhy.device_ptr(st);
        let (wp, _g5) = b.weights.device_ptr(st);
        let (dxp, _g6) = dx.device_ptr_mut(st);
        let (dhxp, _g7) = dhx.device_ptr_mut(st);
        let (kp, _g8) = work.device_ptr_mut(st);
        let (rp, _g9) = reserve.device_ptr_mut(st);
        let bufs = RnnBuffers {
            dev_seq_lengths: lp as *const i32,
            x: std::ptr::null_mut(),
            y: aligned("y", yp)?,
            hx: aligned("hx", hp)?,
            hy: std::ptr::null_mut(),
            weights: aligned("weights", wp)?,
            weight_bytes: s.weight_bytes,
            work: kp as *mut c_void,
            work_bytes: s.work_bytes,
            reserve: rp as *mut c_void,
            reserve_bytes: s.reserve_bytes,
        };
        let (dy, dhy) = (aligned("dy", dyp)?, aligned("dhy", dhyp)?);
        let (dx, dhx) = (aligned("dx", dxp)?, aligned("dhx", dhxp)?);
        // SAFETY: as in `forward`: every buffer checked against the shape and element size,
        // every guard held to the end of this function, on the handle's stream; the reserve
        // space is the training forward's (the caller's contract, checked in size).
        unsafe {
            result::rnn_backward_data(
                self.handle.raw(),
                self.rnn.raw(),
                self.x.raw(),
                self.y.raw(),
                self.h.raw(),
                &bufs,
                dy,
                dhy,
                dx,
                dhx,
            )
        }
    }

    /// `cudnnRNNBackwardWeights_v8` in ADD mode: adds the weight gradients into `dweights`.
    /// Call it after [`RnnCall::backward_data`] with the same reserve space.
    pub fn backward_weights<T>(&self, b: BackwardWeightsBuffers<'_, T>) -> Result<(), CudnnError> {
        let s = self.shape;
        let (bt, bu) = (s.batch * s.time, s.batch * s.units);
        self.check_common::<T>(&b.lengths, b.dweights.len())?;
        exact("x", &b.x, bt * s.input)?;
        exact("hx", &b.hx, bu)?;
        exact("y", &b.y, bt * s.units)?;
        at_least("workspace", &b.work, s.work_bytes)?;
        at_least("reserve space", &b.reserve, s.reserve_bytes)?;
        let st = self.stream();
        let (mut dw, mut work, mut reserve) = (b.dweights, b.work, b.reserve);
        let (lp, _g0) = b.lengths.device_ptr(st);
        let (xp, _g1) = b.x.device_ptr(st);
        let (hp, _g2) = b.hx.device_ptr(st);
        let (yp, _g3) = b.y.device_ptr(st);
        let (dwp, _g4) = dw.device_ptr_mut(st);
        let (kp, _g5) = work.device_ptr_mut(st);
        let (rp, _g6) = reserve.device_ptr_mut(st);
        let bufs = RnnBuffers {
            dev_seq_lengths: lp as *const i32,
            x: aligned("x", xp)?,
            y: aligned("y", yp)?,
            hx: aligned("hx", hp)?,
            hy: std::ptr::null_mut(),
            weights: aligned("weight gradient", dwp)?,
            weight_bytes: s.weight_bytes,
            work: kp as *mut c_void,
            work_bytes: s.work_bytes,
            reserve: rp as *mut c_void,
            reserve_bytes: s.reserve_bytes,
        };
        // SAFETY: as in `backward_data`; the weight gradient space was checked to have the
        // weight space's size.
        unsafe {
            result::rnn_backward_weights(
                self.handle.raw(),
                self.rnn.raw(),
                self.x.raw(),
                self.y.raw(),
                self.h.raw(),
                &bufs,
            )
        }
    }
}
