//! The mask scan of the cuDNN path: per-row lengths and flags, and the index maps that move
//! each row's valid steps (in processing order) to the front and the outputs back to Keras'
//! output rule. Computed on the device by `kernels/gru_mask_scan.cu`, or on the host with
//! the same rules (the reference it is tested against). Compaction and expansion are
//! `index_select` + `where_cond`, so Candle's autograd carries gradients through them.

use candle_core::{Device, Result, Tensor};
use gru_core::MaskFacts;

/// Everything the cuDNN path derives from a Keras mask (see `kernels/gru_mask_scan.cu`).
#[derive(Debug, Clone)]
pub struct MaskScan {
    /// Valid steps per row (cuDNN's `seqLengthArray`).
    pub lengths: Vec<i32>,
    /// The first all-False row.
    pub first_empty: Option<usize>,
    /// The first row with a masked step before a valid one.
    pub first_not_right_padded: Option<usize>,
    /// `lengths` on the mask's device, I32.
    pub dev_lengths: Tensor,
    batch: usize,
    time: usize,
    flags: Vec<i32>,
    gather: Tensor,
    gather_keep: Tensor,
    expand: Tensor,
    expand_keep: Tensor,
}

impl MaskScan {
    /// The scan computed on the host, with the same rules as the device kernel (the
    /// reference it is tested against), its tensors put on `device`.
    pub fn on_host(
        mask: &[bool],
        batch: usize,
        time: usize,
        go_backwards: bool,
        zero_output_for_mask: bool,
        device: &Device,
    ) -> Result<MaskScan> {
        let n = batch * time;
        let (mut lengths, mut flags) = (vec![0i32; batch], vec![0i32; batch]);
        let (mut gather, mut gather_keep) = (vec![0u32; n], vec![0u8; n]);
        let (mut expand, mut expand_keep) = (vec![0u32; n], vec![0u8; n]);
        for b in 0..batch {
            let row = b * time;
            let m = &mask[row..row + time];
            let len = m.iter().take_while(|&&v| v).count();
            let right_padded = !m[len..].iter().any(|&v| v);
            let mut j = 0usize;
            for k in 0..time {
                let t = if go_backwards { time - 1 - k } else { k };
                let valid = m[t];
                if valid {
                    gather[row + j] = (row + t) as u32;
                    gather_keep[row + j] = 1;
                    j += 1;
                }
                let keep = valid || (!zero_output_for_mask && j > 0);
                expand[row + k] = (row + if keep { j - 1 } else { 0 }) as u32;
                expand_keep[row + k] = keep as u8;
            }
            for r in j..time {
                gather[row + r] = row as u32;
            }
            lengths[b] = j as i32;
            flags[b] = right_padded as i32 | if j == 0 { 2 } else { 0 };
        }
        let t = |v: Vec<u32>| Tensor::from_vec(v, n, device);
        let k = |v: Vec<u8>| Tensor::from_vec(v, (batch, time), device);
        Self::assemble(
            lengths.clone(),
            &flags,
            Tensor::from_vec(lengths, batch, device)?,
            batch,
            time,
            [t(gather)?, k(gather_keep)?, t(expand)?, k(expand_keep)?],
        )
    }

    fn assemble(
        lengths: Vec<i32>,
        flags: &[i32],
        dev_lengths: Tensor,
        batch: usize,
        time: usize,
        [gather, gather_keep, expand, expand_keep]: [Tensor; 4],
    ) -> Result<MaskScan> {
        Ok(MaskScan {
            first_empty: flags.iter().position(|&f| f & 2 != 0),
            first_not_right_padded: flags.iter().position(|&f| f & 1 == 0),
            flags: flags.to_vec(),
            lengths,
            dev_lengths,
            batch,
            time,
            gather,
            gather_keep,
            expand,
            expand_keep,
        })
    }

    /// The scan computed on the GPU by `kernels/gru_mask_scan.cu`; only the lengths and
    /// per-row flags (2 x batch ints) come back to the host. `mask` is a (batch, time) U8
    /// tensor on a CUDA device.
    #[cfg(feature = "cudnn")]
    pub fn on_device(
        mask: &Tensor,
        go_backwards: bool,
        zero_output_for_mask: bool,
    ) -> Result<MaskScan> {
        use crate::error::CudnnError;
        use candle_core::cuda_backend::CudaStorage;
        use candle_core::op::BackpropOp;
        use candle_core::{DType, Storage};
        let (batch, time) = mask.dims2()?;
        if mask.dtype() != DType::U8 {
            return Err(CudnnError::Input {
                what: "mask".into(),
                expected: "U8".into(),
                got: format!("{:?}", mask.dtype()),
            }
            .into());
        }
        let mask = mask.contiguous()?;
        let (st, l) = mask.storage_and_layout();
        let Storage::Cuda(cs) = &*st else {
            return Err(CudnnError::Input {
                what: "mask".into(),
                expected: "a CUDA tensor".into(),
                got: format!("{:?}", mask.device()),
            }
            .into());
        };
        let dev = cs.device.clone();
        let start = l.start_offset();
        let view = cs.as_cuda_slice::<u8>()?.slice(start..start + batch * time);
        let out = crate::kernels::mask_scan(
            &dev,
            &view,
            batch,
            time,
            go_backwards,
            zero_output_for_mask,
        )?;
        drop(st);
        let lengths = dev.clone_dtoh(&out.lengths)?;
        let flags = dev.clone_dtoh(&out.flags)?;
        let n = batch * time;
        fn wrap<T: candle_core::cuda_backend::CudaDType>(
            s: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
            dev: &candle_core::cuda_backend::CudaDevice,
            shape: candle_core::Shape,
        ) -> Tensor {
            let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(s, dev.clone()));
            Tensor::from_storage(storage, shape, BackpropOp::none(), false)
        }
        Self::assemble(
            lengths,
            &flags,
            wrap(out.lengths, &dev, batch.into()),
            batch,
            time,
            [
                wrap(out.gather, &dev, n.into()),
                wrap(out.gather_keep, &dev, (batch, time).into()),
                wrap(out.expand, &dev, n.into()),
                wrap(out.expand_keep, &dev, (batch, time).into()),
            ],
        )
    }

    /// The dispatcher's view of the mask.
    pub fn facts(&self) -> MaskFacts {
        MaskFacts::from_rows(self.first_empty, self.first_not_right_padded)
    }

    /// Moves each row's valid steps (in processing order) to the front, zeros after:
    /// (batch, time, features) -> (batch, time, features).
    pub fn compact(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, f) = x.dims3()?;
        let picked = x
            .reshape((b * t, f))?
            .index_select(&self.gather, 0)?
            .reshape((b, t, f))?;
        let keep = self.gather_keep.unsqueeze(2)?.broadcast_as((b, t, f))?;
        keep.where_cond(&picked, &picked.zeros_like()?)
    }

    /// Keras' output sequence (processing order) from the compacted outputs: each step
    /// shows the last valid step's output at or before it, or zeros (before the first valid
    /// step, or at masked steps with `zero_output_for_mask`).
    pub fn expand(&self, y: &Tensor) -> Result<Tensor> {
        let (b, t, u) = y.dims3()?;
        let picked = y
            .reshape((b * t, u))?
            .index_select(&self.expand, 0)?
            .reshape((b, t, u))?;
        let keep = self.expand_keep.unsqueeze(2)?.broadcast_as((b, t, u))?;
        keep.where_cond(&picked, &picked.zeros_like()?)
    }

    /// (batch, time) of the mask.
    pub fn dims(&self) -> (usize, usize) {
        (self.batch, self.time)
    }

    /// The per-row flags as the kernel writes them (bit 0: right-padded, bit 1: all False).
    pub fn flags(&self) -> &[i32] {
        &self.flags
    }

    /// The four index maps, copied to the host (for tests and diagnostics).
    pub fn index_maps(&self) -> Result<IndexMaps> {
        Ok(IndexMaps {
            gather: self.gather.to_vec1()?,
            gather_keep: self.gather_keep.flatten_all()?.to_vec1()?,
            expand: self.expand.to_vec1()?,
            expand_keep: self.expand_keep.flatten_all()?.to_vec1()?,
        })
    }
}

/// A mask scan's index maps on the host, each batch x time, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexMaps {
    /// Compaction: the global input row (b*T + t) of each row's j-th valid step.
    pub gather: Vec<u32>,
    /// 1 where `gather` is a valid step, 0 in the padding after.
    pub gather_keep: Vec<u8>,
    /// Expansion: the compacted row whose output Keras shows at each processing step.
    pub expand: Vec<u32>,
    /// 0 where Keras shows zeros.
    pub expand_keep: Vec<u8>,
}
