//! The cuDNN path (the `cudnn` feature): input dropout as one mask shared over time (Keras'
//! cuDNN branch), then `gru_cudnn::keras_call::forward` (compaction of each row's valid
//! steps, cuDNN's RNN, expansion to Keras' output rule).

use crate::error::{Error, Result};
use crate::sequence::{CallContext, CellWeights, SequenceOutput};
use candle_core::Tensor;
use gru_core::GruError;

/// What the cuDNN path needs beyond the call: the device scan of the mask (when the call
/// has one) and whether f32 may use TF32.
pub struct CudnnSettings<'a> {
    /// The mask's scan on the device (`None` without a mask).
    pub scan: Option<&'a gru_cudnn::MaskScan>,
    /// Allow TF32 for f32.
    pub tf32: bool,
}

fn internal(what: &str) -> Error {
    Error::Gru(GruError::Internal { what: what.into() })
}

/// Runs a call on cuDNN (the dispatcher checked every condition).
pub fn run(ctx: &CallContext, w: &CellWeights, s: &CudnnSettings) -> Result<SequenceOutput> {
    let (Some(ib), Some(rb)) = (&w.input_bias, &w.recurrent_bias) else {
        return Err(internal(
            "cuDNN chosen for a layer without reset_after biases",
        ));
    };
    if ctx.mask.is_some() && s.scan.is_none() {
        return Err(internal(
            "cuDNN chosen for a mask that was not scanned on the device",
        ));
    }
    let bias = Tensor::stack(&[ib, rb], 0)?;
    let x = match ctx.dropout.input.first() {
        Some(m) => ctx.x.broadcast_mul(&m.unsqueeze(1)?)?,
        None => ctx.x.clone(),
    };
    let out = gru_cudnn::keras_call::forward(gru_cudnn::CudnnCall {
        x: &x,
        h0: ctx.h0,
        kernel: w.kernel,
        recurrent_kernel: w.recurrent_kernel,
        bias: &bias,
        mask: s.scan,
        go_backwards: ctx.config.go_backwards,
        training: ctx.training,
        tf32: s.tf32,
    })?;
    Ok(SequenceOutput {
        sequence: out.sequence,
        last_output: out.last_output,
        state: out.state,
    })
}
