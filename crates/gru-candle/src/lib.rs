//! A Keras-exact GRU layer (`keras.layers.GRU`, Keras 3) as a Candle [`Module`](candle_core::Module).
//!
//! [`Gru`] holds Keras' weights (`kernel`, `recurrent_kernel`, `bias`, gate order z, r, h),
//! is configured by a [`gru_core::GruConfig`] (Keras' `get_config` JSON), and computes what
//! Keras computes: both `reset_after` forms, masks, `go_backwards`, initial and stateful
//! states, dropout in training. Gradients flow through Candle's autograd.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use gru_candle::{CallOptions, Gru};
//! use gru_core::GruConfig;
//!
//! let mut cfg = GruConfig::new(4);
//! cfg.return_sequences = true;
//! cfg.return_state = true;
//! let varmap = VarMap::new();
//! let gru = Gru::new(cfg, 3, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
//! let x = Tensor::ones((2, 5, 3), DType::F32, &Device::Cpu)?;
//! let mask = Tensor::new(&[[1u8, 1, 1, 0, 0], [1, 1, 1, 1, 1]], &Device::Cpu)?;
//! let out = gru.call(&x, CallOptions { mask: Some(&mask), ..Default::default() })?;
//! assert_eq!(out.output.dims(), &[2, 5, 4]);
//! assert_eq!(out.state.unwrap().dims(), &[2, 4]);
//! println!("{}", out.dispatch.explain()); // which path ran, and why
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod ctc;
pub mod io;
pub mod paths;
pub mod sequence;

mod activation;
mod bidirectional;
mod call;
mod cell;
mod dropout;
mod dtype;
mod error;
mod layer;
mod limits;
mod regularizer;
mod stack;

pub use bidirectional::{Bidirectional, BidirectionalOutput, MergeMode};
pub use call::{CallOptions, GruOutput};
pub use cell::GruCell;
pub use dtype::{compute_dtype_of_policy, dtype_of_policy};
pub use error::{Error, FileProblem, Result};
pub use layer::{keras_variable, CpuPath, GpuPath, Gru};
pub use limits::Limits;
pub use stack::{GruStack, StackLayer, StackOutput};
