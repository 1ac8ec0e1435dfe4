//! Backend-neutral pieces of a Keras-exact GRU: the layer's configuration and its Keras JSON,
//! activations, initializers, regularizers, constraints, the cuDNN dispatch decision and the
//! weight layouts of Keras, PyTorch and cuDNN.
//!
//! Nothing here depends on Candle; `gru-candle` builds the layer on top of it.
//!
//! ```
//! use gru_core::{GruConfig, Activation};
//! let cfg = GruConfig::from_keras_str(r#"{"units": 8, "activation": "relu"}"#).unwrap();
//! assert_eq!(cfg.activation, Activation::Relu);
//! ```
#![deny(missing_docs)]

pub mod activation;
pub mod cell_config;
pub mod config;
pub mod constraint;
pub mod conv2d;
pub mod ctc;
pub mod ctc_beam;
pub mod dispatch;
pub mod error;
pub mod initializer;
pub mod keras_object;
pub mod layout;
pub mod pool2d;
pub mod regularizer;
pub mod seq;
pub mod step;

pub use activation::Activation;
pub use cell_config::GruCellConfig;
pub use config::{DTypePolicy, GruConfig, Implementation, UseCudnn};
pub use constraint::Constraint;
pub use dispatch::{
    check_conditions, decide, CallFacts, Condition, ConditionCheck, Dispatch, ExecPath, FloatType,
    MaskFacts,
};

/// The former name of [`ExecPath`].
#[deprecated(note = "renamed `ExecPath`: `Path` clashed with `std::path::Path`")]
pub type Path = ExecPath;
pub use error::{GruError, Result};
pub use initializer::{Distribution, FanMode, Initializer, ScalingPreset};
pub use keras_object::{Axis, Num};
pub use regularizer::{OrthoMode, Regularizer};
