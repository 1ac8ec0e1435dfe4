//! What cuDNN reports about an RNN descriptor: the weight space's size, where each linear
//! layer's matrix and bias live in it, and the temp-space sizes of a forward mode.

use super::{Handle, RnnDataDescriptor, RnnDescriptor, TensorDescriptor};
use crate::error::CudnnError;
use crate::result::{self, Result};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr};
use std::ffi::c_void;

impl RnnDescriptor {
    /// `cudnnGetRNNWeightSpaceSize`, in bytes.
    pub fn weight_space_size(&self, handle: &Handle) -> Result<usize> {
        // SAFETY: handle and descriptor are live (owned by their types) and the descriptor
        // was set when it was built.
        unsafe { result::get_rnn_weight_space_size(handle.raw(), self.raw()) }
    }

    /// `cudnnGetRNNWeightParams` for linear layer `id` (0..6): the byte offsets of its
    /// matrix and bias inside `space` (a weight space of this descriptor's size), with `m`
    /// and `b` filled in with their shapes.
    pub fn weight_params(
        &self,
        handle: &Handle,
        space: &CudaSlice<u8>,
        id: usize,
        m: &TensorDescriptor,
        b: &TensorDescriptor,
    ) -> Result<(usize, usize)> {
        let bytes = space.len();
        let (base, _guard) = space.device_ptr(handle.stream());
        // SAFETY: `space` holds `bytes` device bytes and its guard lives through the call;
        // handle and descriptors are live; cuDNN only computes addresses inside the space.
        let (mp, bp) = unsafe {
            result::get_rnn_weight_params(
                handle.raw(),
                self.raw(),
                bytes,
                base as *const c_void,
                id as i32,
                m.raw(),
                b.raw(),
            )
        }?;
        let offset = |what: &str, p: *mut c_void| match (p as u64).checked_sub(base) {
            Some(o) if (o as usize) < bytes => Ok(o as usize),
            _ => Err(CudnnError::Layout {
                what: format!("linear layer {id} {what} address"),
                expected: format!("inside the {bytes}-byte space at {base:#x}"),
                got: format!("{p:?}"),
            }),
        };
        Ok((offset("matrix", mp)?, offset("bias", bp)?))
    }

    /// `cudnnGetRNNTempSpaceSizes`: (workspace, reserve space) bytes of a forward in `mode`
    /// over sequences described by `x`.
    pub fn temp_space_sizes(
        &self,
        handle: &Handle,
        mode: sys::cudnnForwardMode_t,
        x: &RnnDataDescriptor,
    ) -> Result<(usize, usize)> {
        // SAFETY: handle and descriptors are live and set (an RnnDataDescriptor is set before
        // a plan hands it out).
        unsafe { result::get_rnn_temp_space_sizes(handle.raw(), self.raw(), mode, x.raw()) }
    }
}
