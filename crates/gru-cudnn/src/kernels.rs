//! Launch glue for the CUDA C kernels in `kernels/` (compiled to PTX by build.rs).

use crate::error::CudnnError;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, WrapErr};

const MASK_SCAN_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gru_mask_scan.ptx"));

/// What `gru_mask_scan` writes (see kernels/gru_mask_scan.cu).
pub(crate) struct ScanBuffers {
    pub lengths: CudaSlice<i32>,
    pub flags: CudaSlice<i32>,
    pub gather: CudaSlice<u32>,
    pub gather_keep: CudaSlice<u8>,
    pub expand: CudaSlice<u32>,
    pub expand_keep: CudaSlice<u8>,
}

/// Runs `gru_mask_scan` over a contiguous (batch, time) u8 mask.
pub(crate) fn mask_scan(
    dev: &CudaDevice,
    mask: &CudaView<'_, u8>,
    batch: usize,
    time: usize,
    go_backwards: bool,
    zero_output_for_mask: bool,
) -> candle_core::Result<ScanBuffers> {
    let n = batch * time;
    if n >= u32::MAX as usize || batch > i32::MAX as usize || time > i32::MAX as usize {
        return Err(CudnnError::Input {
            what: "mask".into(),
            expected: "fewer than 2^32 (batch x time) steps".into(),
            got: format!("batch {batch}, time {time}"),
        }
        .into());
    }
    let mut out = ScanBuffers {
        lengths: dev.alloc_zeros::<i32>(batch)?,
        flags: dev.alloc_zeros::<i32>(batch)?,
        gather: dev.alloc_zeros::<u32>(n)?,
        gather_keep: dev.alloc_zeros::<u8>(n)?,
        expand: dev.alloc_zeros::<u32>(n)?,
        expand_keep: dev.alloc_zeros::<u8>(n)?,
    };
    let func =
        dev.get_or_load_custom_func("gru_mask_scan", "gru_cudnn_mask_scan", MASK_SCAN_PTX)?;
    let (b, t) = (batch as i32, time as i32);
    let (gb, zo) = (go_backwards as i32, zero_output_for_mask as i32);
    let mut launch = func.builder();
    launch.arg(mask);
    launch.arg(&b);
    launch.arg(&t);
    launch.arg(&gb);
    launch.arg(&zo);
    launch.arg(&mut out.lengths);
    launch.arg(&mut out.flags);
    launch.arg(&mut out.gather);
    launch.arg(&mut out.gather_keep);
    launch.arg(&mut out.expand);
    launch.arg(&mut out.expand_keep);
    let threads = 128u32;
    let cfg = LaunchConfig {
        grid_dim: ((batch as u32).div_ceil(threads), 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the argument list matches gru_mask_scan's signature (a u8 mask of batch*time,
    // four ints, then i32[batch] x2, u32/u8/u32/u8 [batch*time]); every buffer has that
    // size; one thread per row writes only its row.
    unsafe { launch.launch(cfg) }.w()?;
    Ok(out)
}
