//! cuDNN RNN descriptors for the GRU, through the cudarc that candle links
//! (`candle_core::cuda_backend::cudarc`).
//!
//! This crate is the home of the cuDNN fast path: RAII types over cudarc's raw
//! `cudnn::sys` RNN v8 calls (handle, dropout, RNN, RNN-data and tensor descriptors), the
//! weight-space packing with gru-core's Keras -> cuDNN layout, and the Candle custom op with
//! forward and backward. Its feature wiring is in place (`cudnn` turns on candle's CUDA and
//! cuDNN support); the descriptors and the op are not built yet, so [`AVAILABLE`] is false and
//! the layer's dispatcher reports "cuDNN path built" as a failed condition. [`host`] holds
//! the host reference of the mask handling (lengths, compaction, expansion), tested against
//! the fused CPU path; [`weights`] fills cuDNN's weight space from Keras weights and reads
//! gradients back, given each linear layer's offset.
#![deny(missing_docs)]

pub mod host;
pub mod weights;

/// Whether this build has a working cuDNN GRU path.
pub const AVAILABLE: bool = false;

/// Whether this build was compiled with the `cudnn` feature (candle's CUDA + cuDNN).
pub const FEATURE_ENABLED: bool = cfg!(feature = "cudnn");
