//! Test and example support of candle-gru (not published):
//! - [`golden`]: the golden-case format made with the real Keras (and the model-file
//!   cases), and the runners that compare a layer against them;
//! - [`demo`]: a complete training run (the README's main example, `examples/train.rs`).
#![deny(missing_docs)]

pub mod demo;
pub mod golden;
