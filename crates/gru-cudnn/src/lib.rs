//! The cuDNN fast path of the Keras GRU, through the cudarc that candle links
//! (`candle_core::cuda_backend::cudarc`).
//!
//! Layers, as in cudarc: `result` has one thin function per cuDNN C call (RNN v8 API),
//! each returning a typed [`CudnnError`]; `safe` owns each cuDNN object (handle, dropout,
//! RNN, RNN-data and tensor descriptors) with `Drop` and makes the RNN calls on typed,
//! size-checked device buffers (raw pointers stay in these two); `plan` caches the objects
//! per thread, device, dtype and shape; `op` is the Candle custom op (forward and backward,
//! no `unsafe`); [`mask_scan`] is the mask scan (device kernel and host reference);
//! [`keras_call`] wraps a whole Keras call (compaction of valid steps, the op, expansion to
//! Keras' output rule). The device code needs the `cudnn` feature; without it this crate
//! still has the host reference of the mask handling ([`host`]), the weight-space packing
//! ([`weights`]), the output layout ([`output`]) and the host mask scan, all tested on the
//! CPU.
#![deny(missing_docs)]

pub mod error;
pub mod host;
pub mod keras_call;
pub mod mask_scan;
pub mod output;
pub mod weights;

#[cfg(feature = "cudnn")]
mod kernels;
#[cfg(feature = "cudnn")]
pub mod op;
#[cfg(feature = "cudnn")]
mod plan;
#[cfg(feature = "cudnn")]
pub mod result;
#[cfg(feature = "cudnn")]
pub mod safe;
#[cfg(feature = "cudnn")]
pub mod step_cuda;

pub use error::CudnnError;
pub use keras_call::{CudnnCall, CudnnOutput};
pub use mask_scan::{IndexMaps, MaskScan};
#[cfg(feature = "cudnn")]
pub use plan::{cache_stats, weight_layout_of, CacheStats, WeightLayout};

/// Whether this build has the cuDNN GRU path (the `cudnn` feature).
pub const AVAILABLE: bool = cfg!(feature = "cudnn");

/// The cuDNN version loaded at run time (e.g. 91900 for 9.19.0).
#[cfg(feature = "cudnn")]
pub fn cudnn_version() -> usize {
    result::version()
}
