//! The fused CPU op over constant weights (a frozen layer, `trainable = false`, or weights
//! loaded as plain tensors): no gradient can reach them, so the op takes only `x` and
//! `h0` and reads the weights where they are. The weights-tracked op stacks them into one
//! `params` input first, a copy of every weight per call: at one step of 512 units that
//! copy took half of the call, and decoders and streaming models run one step per call.

use super::fused_cpu::{host_values, values, FusedGru, HostFloat};
use crate::sequence::CellWeights;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gru_core::seq::SeqWeights;

/// A [`FusedGru`] whose weights are constants of the op.
pub(super) struct FrozenWeights<T: HostFloat> {
    op: FusedGru<T>,
    kernel: Tensor,
    recurrent: Tensor,
    /// The input bias then the recurrent bias (reset_after), as the kernels take them.
    bias: Vec<T>,
}

impl<T: HostFloat> FrozenWeights<T> {
    /// `op` over the weights `w` (its bias rows `biases`), none of which autograd tracks.
    pub(super) fn new(op: FusedGru<T>, w: &CellWeights, biases: &[&Tensor]) -> Result<Self> {
        let mut bias = Vec::new();
        for b in biases {
            bias.extend(b.flatten_all()?.to_vec1::<T>()?);
        }
        Ok(FrozenWeights {
            op,
            kernel: w.kernel.clone(),
            recurrent: w.recurrent_kernel.clone(),
            bias,
        })
    }

    /// Runs `f` with the weights as the kernels read them (the tensors' own storage when
    /// contiguous).
    fn with_weights<R>(&self, f: impl FnOnce(SeqWeights<T>) -> Result<R>) -> Result<R> {
        let kernel = host_values::<T>(&self.kernel)?;
        let recurrent = host_values::<T>(&self.recurrent)?;
        f(SeqWeights {
            kernel: kernel.get(),
            recurrent: recurrent.get(),
            bias: &self.bias,
        })
    }
}

impl<T: HostFloat> CustomOp2 for FrozenWeights<T> {
    fn name(&self) -> &'static str {
        "gru-fused-frozen"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, h0) = (values::<T>(s1, l1, "x")?, values::<T>(s2, l2, "h0")?);
        self.with_weights(|w| self.op.op_forward(x, w, h0))
    }

    fn bwd(
        &self,
        x: &Tensor,
        h0: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, _, dh) = self.with_weights(|w| self.op.grads((x, h0, grad_res), w, false))?;
        Ok((dx, dh))
    }
}
