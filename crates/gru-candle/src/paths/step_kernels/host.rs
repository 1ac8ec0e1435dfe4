//! The step-kernel op on the CPU: gru-core's host backend (the CUDA C step kernels compiled
//! as C++), f32 and f64.

use super::{OpBackend, StepOp};
use crate::paths::fused_cpu::HostFloat;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use gru_core::step::host::{Host, HostKernels};

impl<T: HostFloat + HostKernels> OpBackend for Host<T> {
    fn mem(&self, t: &Tensor, len: usize, what: &str) -> Result<Vec<T>> {
        let v = t.flatten_all()?.to_vec1::<T>()?;
        if v.len() != len {
            candle_core::bail!(
                "gru-step-kernels: {what} has {} values, expected {len}",
                v.len()
            );
        }
        Ok(v)
    }

    fn mask(&self, t: &Tensor) -> Result<Vec<u8>> {
        t.flatten_all()?.to_vec1::<u8>()
    }

    fn tensor(&self, mut m: Vec<T>, shape: Shape) -> Result<Tensor> {
        m.truncate(shape.elem_count());
        Tensor::from_vec(m, shape, &candle_core::Device::Cpu)
    }
}

/// The contiguous `len` values of a storage of type `T`, copied.
fn values<T: HostFloat>(s: &CpuStorage, l: &Layout, len: usize, what: &str) -> Result<Vec<T>> {
    let v = T::values(s).ok_or_else(|| {
        candle_core::Error::msg(format!("gru-step-kernels: {what} is not {:?}", T::DTYPE))
    })?;
    match l.contiguous_offsets() {
        Some((a, b)) if b - a == len => Ok(v[a..b].to_vec()),
        _ => candle_core::bail!(
            "gru-step-kernels needs a contiguous {what} of {len} values, got {:?}",
            l.dims()
        ),
    }
}

fn forward_t<T: HostFloat + HostKernels>(
    op: &StepOp,
    (xs, xl): (&CpuStorage, &Layout),
    (hs, hl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let (lx, lh, lp) = op.lens();
    let flat = op.forward_on(
        &Host::<T>::new(),
        values::<T>(xs, xl, lx, "xp")?,
        values::<T>(hs, hl, lh, "h0")?,
        values::<T>(ps, pl, lp, "params")?,
    )?;
    let n = flat.len();
    Ok((T::storage(flat), Shape::from(n)))
}

/// The op's forward on CPU storage.
pub(super) fn forward(
    op: &StepOp,
    xp: (&CpuStorage, &Layout),
    h0: (&CpuStorage, &Layout),
    params: (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    match xp.0 {
        CpuStorage::F32(_) => forward_t::<f32>(op, xp, h0, params),
        CpuStorage::F64(_) => forward_t::<f64>(op, xp, h0, params),
        s => candle_core::bail!(
            "the step kernels' host backend runs f32 or f64, got {:?}",
            s.dtype()
        ),
    }
}

/// The op's backward on CPU tensors.
pub(super) fn backward(
    op: &StepOp,
    inputs: (&Tensor, &Tensor, &Tensor),
    grad: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    match inputs.0.dtype() {
        candle_core::DType::F32 => op.backward_on(&Host::<f32>::new(), inputs, grad),
        candle_core::DType::F64 => op.backward_on(&Host::<f64>::new(), inputs, grad),
        dt => candle_core::bail!("the step kernels' host backend runs f32 or f64, got {dt:?}"),
    }
}
