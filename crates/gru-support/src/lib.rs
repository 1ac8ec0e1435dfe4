//! Test and example support of candle-gru (not published):
//! - [`golden`]: the golden-case format made with the real Keras (and the model-file
//!   cases), and the runners that compare a layer against them;
//! - [`demo`]: a complete training run (the README's main example, `examples/train.rs`);
//! - [`decoder`]: an encoder-decoder trained on whole sequences that decodes one
//!   [`gru_candle::GruCell`] step at a time (`examples/seq2seq.rs`);
//! - [`speech`]: a Keras DeepSpeech2 model fine-tuned with CTC on synthetic spectrograms
//!   (`examples/speech_ctc.rs`).
#![deny(missing_docs)]

pub mod decoder;
pub mod demo;
pub mod golden;
pub mod speech;
