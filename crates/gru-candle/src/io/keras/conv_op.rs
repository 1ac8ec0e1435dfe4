//! `Conv1D` and `Conv2D` on the CPU as Candle custom ops over gru-core's channels-last
//! convolution products ([`gru_core::conv2d`]): the input stays in Keras' (batch, rows,
//! columns, channels) layout and the kernel in Keras' (kh, kw, in / groups, filters), so no
//! transpose or padded copy is made; every stride, dilation and padding runs as given (one
//! stride for both axes, as Candle's `conv2d` takes, would waste the work of the other
//! axis). Their backward is the two products of the kernel's and the input's gradients, the
//! input's computed only when a gradient can reach it. f32 and f64; other dtypes and
//! devices take Candle's `conv2d`.

use crate::error::Result;
use crate::paths::cpu_pool::CANDLE_POOL;
use crate::paths::fused_cpu::HostFloat;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use gru_core::conv2d::{
    conv2d_backward_input, conv2d_backward_kernel, conv2d_forward, Conv2dGeometry,
};
use gru_core::seq::{Team, Threads};

/// Whether the custom ops run a convolution of `x` (on the CPU, in f32 or f64).
pub(super) fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `conv(x, kernel)` for geometry `g`: `x` (batch, h, w, in), `kernel` in Keras' layout;
/// (batch, out_h, out_w, filters).
pub(super) fn conv2d(x: &Tensor, kernel: &Tensor, g: Conv2dGeometry) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2(&kernel.contiguous()?, Forward(g))?)
}

fn threads() -> Threads {
    Threads::new(CANDLE_POOL.size(), &CANDLE_POOL)
}

fn values<'a, T: HostFloat>(
    s: &'a CpuStorage,
    l: &Layout,
    n: usize,
) -> candle_core::Result<&'a [T]> {
    let v = T::values(s)
        .ok_or_else(|| candle_core::Error::msg(format!("keras-conv: not {:?}", T::DTYPE)))?;
    match l.contiguous_offsets() {
        Some((a, b)) if b - a == n => Ok(&v[a..b]),
        _ => candle_core::bail!("keras-conv needs a contiguous operand of {n} values"),
    }
}

/// Runs `f` on the two operands in their float type; a storage of `n` outputs.
fn run2(
    (s1, l1, n1): (&CpuStorage, &Layout, usize),
    (s2, l2, n2): (&CpuStorage, &Layout, usize),
    n: usize,
    f32_op: impl Fn(&[f32], &[f32], &mut [f32]),
    f64_op: impl Fn(&[f64], &[f64], &mut [f64]),
) -> candle_core::Result<CpuStorage> {
    match s1 {
        CpuStorage::F32(_) => {
            let mut out = vec![0f32; n];
            f32_op(values(s1, l1, n1)?, values(s2, l2, n2)?, &mut out);
            Ok(CpuStorage::F32(out))
        }
        CpuStorage::F64(_) => {
            let mut out = vec![0f64; n];
            f64_op(values(s1, l1, n1)?, values(s2, l2, n2)?, &mut out);
            Ok(CpuStorage::F64(out))
        }
        _ => candle_core::bail!("keras-conv: f32 or f64 operands only"),
    }
}

/// The forward: `(x, kernel) -> y`.
struct Forward(Conv2dGeometry);

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "keras-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (nx, nk, ny) = g.sizes();
        let out = run2(
            (s1, l1, nx),
            (s2, l2, nk),
            ny,
            |x, k, y| conv2d_forward(&g, x, k, y, threads()),
            |x, k, y| conv2d_forward(&g, x, k, y, threads()),
        )?;
        let shape = (g.batch, g.output.0, g.output.1, g.filters);
        Ok((out, Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let dy = dy.contiguous()?;
        let dx = match x.track_op() {
            true => Some(dy.apply_op2_no_bwd(kernel, &InputGrad(g))?),
            false => None,
        };
        let dk = match kernel.track_op() {
            true => Some(x.apply_op2_no_bwd(&dy, &KernelGrad(g))?),
            false => None,
        };
        Ok((dx, dk))
    }
}

/// The input's gradient: `(dy, kernel) -> dx`.
struct InputGrad(Conv2dGeometry);

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "keras-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (nx, nk, ny) = g.sizes();
        let out = run2(
            (s1, l1, ny),
            (s2, l2, nk),
            nx,
            |dy, k, dx| conv2d_backward_input(&g, dy, k, dx, threads()),
            |dy, k, dx| conv2d_backward_input(&g, dy, k, dx, threads()),
        )?;
        let (h, w, c) = g.input;
        Ok((out, Shape::from((g.batch, h, w, c))))
    }
}

/// The kernel's gradient: `(x, dy) -> dkernel`, in Keras' layout.
struct KernelGrad(Conv2dGeometry);

impl CustomOp2 for KernelGrad {
    fn name(&self) -> &'static str {
        "keras-conv2d-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (nx, nk, ny) = g.sizes();
        let out = run2(
            (s1, l1, nx),
            (s2, l2, ny),
            nk,
            |x, dy, dk| conv2d_backward_kernel(&g, x, dy, dk, threads()),
            |x, dy, dk| conv2d_backward_kernel(&g, x, dy, dk, threads()),
        )?;
        let (kh, kw) = g.kernel;
        Ok((out, Shape::from((kh, kw, g.input.2 / g.groups, g.filters))))
    }
}
