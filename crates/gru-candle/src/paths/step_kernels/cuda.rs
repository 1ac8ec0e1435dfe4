//! The step-kernel op on a CUDA device: gru-cudnn's CUDA backend (cuBLAS and the PTX of
//! `kernels/gru_step_*.cu`), f32, f64, f16 and bf16.

use super::{OpBackend, StepOp};
use candle_core::cuda_backend::cudarc::cublas::{CudaBlas, Gemm};
use candle_core::{CudaStorage, DType, Layout, Result, Shape, Tensor};
use gru_cudnn::step_cuda::{self, Cuda, CudaStepElem, DevMem};

impl<T: CudaStepElem + Send> OpBackend for Cuda<T>
where
    CudaBlas: Gemm<T>,
{
    fn mem(&self, t: &Tensor, len: usize, what: &str) -> Result<DevMem<T>> {
        step_cuda::mem_of_tensor(t, len, what)
    }

    fn mask(&self, t: &Tensor) -> Result<DevMem<u8>> {
        step_cuda::mask_of_tensor(t)
    }

    fn tensor(&self, m: DevMem<T>, shape: Shape) -> Result<Tensor> {
        step_cuda::tensor_of(m, shape, self.device())
    }
}

fn forward_t<T: CudaStepElem + Send>(
    op: &StepOp,
    (xs, xl): (&CudaStorage, &Layout),
    (hs, hl): (&CudaStorage, &Layout),
    (ps, pl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)>
where
    CudaBlas: Gemm<T>,
{
    let (lx, lh, lp) = op.lens();
    let be = Cuda::<T>::new(xs.device.clone());
    let flat = op.forward_on(
        &be,
        step_cuda::mem_of_storage(xs, xl, lx, "xp")?,
        step_cuda::mem_of_storage(hs, hl, lh, "h0")?,
        step_cuda::mem_of_storage(ps, pl, lp, "params")?,
    )?;
    let n = op.spec.batch * op.spec.units * (op.spec.time + 1);
    Ok((step_cuda::storage_of(flat, n, &xs.device)?, Shape::from(n)))
}

/// The op's forward on CUDA storage.
pub(super) fn forward(
    op: &StepOp,
    xp: (&CudaStorage, &Layout),
    h0: (&CudaStorage, &Layout),
    params: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    match xp.0.dtype() {
        DType::F32 => forward_t::<f32>(op, xp, h0, params),
        DType::F64 => forward_t::<f64>(op, xp, h0, params),
        DType::F16 => forward_t::<half::f16>(op, xp, h0, params),
        DType::BF16 => forward_t::<half::bf16>(op, xp, h0, params),
        dt => candle_core::bail!("the step kernels run f32, f64, f16 or bf16, got {dt:?}"),
    }
}

fn backward_t<T: CudaStepElem + Send>(
    op: &StepOp,
    inputs: (&Tensor, &Tensor, &Tensor),
    grad: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)>
where
    CudaBlas: Gemm<T>,
{
    let dev = match inputs.0.device() {
        candle_core::Device::Cuda(d) => d.clone(),
        d => candle_core::bail!("gru-step-kernels: expected a CUDA tensor, got {d:?}"),
    };
    op.backward_on(&Cuda::<T>::new(dev), inputs, grad)
}

/// The op's backward on CUDA tensors.
pub(super) fn backward(
    op: &StepOp,
    inputs: (&Tensor, &Tensor, &Tensor),
    grad: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    match inputs.0.dtype() {
        DType::F32 => backward_t::<f32>(op, inputs, grad),
        DType::F64 => backward_t::<f64>(op, inputs, grad),
        DType::F16 => backward_t::<half::f16>(op, inputs, grad),
        DType::BF16 => backward_t::<half::bf16>(op, inputs, grad),
        dt => candle_core::bail!("the step kernels run f32, f64, f16 or bf16, got {dt:?}"),
    }
}
