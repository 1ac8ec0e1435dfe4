//! # candle-gru
//!
//! Keras 3's `GRU` layer for the Candle ML framework: the same numbers as
//! `keras.layers.GRU`, the same config JSON, gradients through every path.
//!
//! This facade re-exports the crates of the family:
//! - [`core`] (`gru-core`): the config and its Keras JSON, activations, initializers,
//!   regularizers, constraints, the cuDNN dispatch decision, weight layouts.
//! - [`candle`] (`gru-candle`): the [`Gru`] layer, a Candle `Module`.
//! - [`cudnn`] (`gru-cudnn`): the cuDNN path (with the `cudnn` feature).
//!
//! ```
//! use candle_gru::{CallOptions, Gru, GruConfig};
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let config = GruConfig::from_keras_str(r#"{"units": 4, "return_sequences": true}"#)?;
//! let varmap = VarMap::new();
//! let gru = Gru::new(config, 3, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
//! let x = Tensor::randn(0f32, 1.0, (2, 6, 3), &Device::Cpu)?;
//! let out = gru.call(&x, CallOptions::default())?;
//! assert_eq!(out.output.dims(), &[2, 6, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub use gru_candle as candle;
pub use gru_core as core;
pub use gru_cudnn as cudnn;

pub use gru_candle::{CallOptions, Error, Gru, GruCell, GruOutput};
#[allow(deprecated)]
pub use gru_core::Path;
pub use gru_core::{Dispatch, ExecPath, GruCellConfig, GruConfig, GruError, UseCudnn};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
