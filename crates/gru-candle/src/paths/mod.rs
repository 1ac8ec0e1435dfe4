//! The execution paths, one module each, each with one entry point `run(ctx, weights, ..)`
//! returning the [`SequenceOutput`]:
//! - [`op_loop`]: the op-by-op Candle loop, on any device (the reference);
//! - [`fused_cpu`]: gru-core's fused whole-sequence kernels on the CPU (f32, f64; f16 and
//!   bf16 computed in f32);
//! - [`step_kernels`]: gru-core's step sequence with one fused gate kernel per step, on a
//!   CUDA device (the `cudnn` build) or, as a reference, on the host;
//! - `cudnn` (the `cudnn` feature): cuDNN's RNN on a CUDA device.
//!
//! [`run`] takes the dispatcher's [`ExecPath`] and calls the one it names.

pub mod cpu_pool;
pub mod fused_cpu;
mod fused_op;
pub mod fused_outputs;
pub mod op_loop;
pub mod step_kernels;

#[cfg(feature = "cudnn")]
pub mod cudnn;

use crate::error::Result;
use crate::sequence::{CallContext, CellWeights, SequenceOutput};
use gru_core::ExecPath;

/// What the paths keep or need beyond the call itself.
pub struct PathSettings<'a> {
    /// The fused CPU path's threads and buffers.
    pub fused: &'a fused_cpu::FusedSettings,
    /// The cuDNN path's mask scan and math.
    #[cfg(feature = "cudnn")]
    pub cudnn: cudnn::CudnnSettings<'a>,
}

/// Runs the call on `path`.
pub fn run(
    path: ExecPath,
    ctx: &CallContext,
    w: &CellWeights,
    settings: &PathSettings,
) -> Result<SequenceOutput> {
    match path {
        ExecPath::Loop => Ok(op_loop::run(ctx, w)?),
        ExecPath::Fused => Ok(fused_cpu::run(ctx, w, settings.fused)?),
        ExecPath::StepKernels => Ok(step_kernels::run(ctx, w)?),
        #[cfg(feature = "cudnn")]
        ExecPath::Cudnn => cudnn::run(ctx, w, &settings.cudnn),
        #[cfg(not(feature = "cudnn"))]
        ExecPath::Cudnn => Err(crate::Error::Gru(gru_core::GruError::Internal {
            what: "the dispatcher chose cuDNN in a build without the `cudnn` feature".into(),
        })),
    }
}
