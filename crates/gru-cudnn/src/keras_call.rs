//! One Keras GRU call on cuDNN, in Candle ops around the `CudnnGru` custom op (`op.rs`,
//! with the `cudnn` feature): the compaction of each row's valid steps to the front (left
//! padding, holes, go_backwards) by the [`MaskScan`], the op, and the expansion back to
//! Keras' output rule.

use crate::mask_scan::MaskScan;
use candle_core::Tensor;

/// The outputs of a cuDNN call, in Keras' conventions (like the loop's).
#[derive(Debug, Clone)]
pub struct CudnnOutput {
    /// (batch, time, units), processing order.
    pub sequence: Tensor,
    /// (batch, units): the sequence's last step.
    pub last_output: Tensor,
    /// (batch, units): the state after each row's last valid step.
    pub state: Tensor,
}

/// One call's inputs: Keras' reset_after weights, the (already dropped-out) inputs and the
/// initial state, all on one CUDA device in one float dtype.
#[derive(Debug, Clone, Copy)]
pub struct CudnnCall<'a> {
    /// (batch, time, input).
    pub x: &'a Tensor,
    /// (batch, units).
    pub h0: &'a Tensor,
    /// (input, 3u).
    pub kernel: &'a Tensor,
    /// (u, 3u).
    pub recurrent_kernel: &'a Tensor,
    /// (2, 3u).
    pub bias: &'a Tensor,
    /// The mask's scan, when the call has a mask.
    pub mask: Option<&'a MaskScan>,
    /// Keras' go_backwards.
    pub go_backwards: bool,
    /// Keep the reserve space for a backward (Keras' training flag).
    pub training: bool,
    /// Allow TF32 for f32 (otherwise exact FMA math).
    pub tf32: bool,
}

/// Runs a Keras GRU call through cuDNN.
#[cfg(feature = "cudnn")]
pub fn forward(call: CudnnCall<'_>) -> candle_core::Result<CudnnOutput> {
    use crate::error::CudnnError;
    use crate::op::CudnnGru;
    let (b, t, i) = call.x.dims3()?;
    let u = call.h0.dim(1)?;
    let w = crate::weights::canonical_weights(call.kernel, call.recurrent_kernel, call.bias)?;
    let (xc, lengths, dev_lengths) = match call.mask {
        Some(scan) => {
            if let Some(row) = scan.first_empty {
                return Err(CudnnError::EmptyRow { row }.into());
            }
            (
                scan.compact(call.x)?,
                scan.lengths.clone(),
                Some(scan.dev_lengths.clone()),
            )
        }
        None if call.go_backwards => {
            let rev: Vec<u32> = (0..t as u32).rev().collect();
            let rev = Tensor::from_vec(rev, t, call.x.device())?;
            (call.x.index_select(&rev, 1)?, vec![t as i32; b], None)
        }
        None => (call.x.clone(), vec![t as i32; b], None),
    };
    let op = CudnnGru::new(t, i, u, lengths, dev_lengths, call.training, call.tf32)?;
    let flat = xc
        .contiguous()?
        .apply_op3(&call.h0.contiguous()?, &w.contiguous()?, op)?;
    let (hy_at, _) = crate::output::output_parts(b, t, u, call.x.dtype().size_in_bytes());
    let y = flat.narrow(0, 0, b * t * u)?.reshape((b, t, u))?;
    let state = flat.narrow(0, hy_at, b * u)?.reshape((b, u))?;
    let sequence = match call.mask {
        Some(scan) => scan.expand(&y)?,
        None => y,
    };
    let last_output = sequence.narrow(1, t - 1, 1)?.squeeze(1)?;
    Ok(CudnnOutput {
        sequence,
        last_output,
        state,
    })
}
