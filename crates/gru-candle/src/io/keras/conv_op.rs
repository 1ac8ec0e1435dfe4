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
use crate::paths::fused_cpu::{run_host, HostBody, HostFloat};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use gru_core::conv2d::{
    conv2d_backward_input, conv2d_backward_kernel, conv2d_forward, Conv2dGeometry,
};
use gru_core::seq::{Team, Threads};

/// `conv(x, kernel)` for geometry `g`: `x` (batch, h, w, in), `kernel` in Keras' layout;
/// (batch, out_h, out_w, filters).
pub(super) fn conv2d(x: &Tensor, kernel: &Tensor, g: Conv2dGeometry) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2(&kernel.contiguous()?, Forward(g))?)
}

fn threads() -> Threads {
    Threads::new(CANDLE_POOL.size(), &CANDLE_POOL)
}

/// The two operands, checked to hold `n` values each.
fn sized<'a, T>(v: &[&'a [T]], n: [usize; 2]) -> candle_core::Result<(&'a [T], &'a [T])> {
    match v {
        [a, b] if a.len() == n[0] && b.len() == n[1] => Ok((a, b)),
        _ => candle_core::bail!("keras-conv: operands of {n:?} values expected"),
    }
}

/// The forward: `(x, kernel) -> y`.
struct Forward(Conv2dGeometry);

impl HostBody for Forward {
    fn run<T: HostFloat>(&self, v: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let g = self.0;
        let (nx, nk, ny) = g.sizes();
        let (x, k) = sized(v, [nx, nk])?;
        let mut y = vec![T::ZERO; ny];
        conv2d_forward(&g, x, k, &mut y, threads());
        Ok(y)
    }
}

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
        let shape = (g.batch, g.output.0, g.output.1, g.filters);
        Ok((run_host(self, &[(s1, l1), (s2, l2)])?, Shape::from(shape)))
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

impl HostBody for InputGrad {
    fn run<T: HostFloat>(&self, v: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let g = self.0;
        let (nx, nk, ny) = g.sizes();
        let (dy, k) = sized(v, [ny, nk])?;
        let mut dx = vec![T::ZERO; nx];
        conv2d_backward_input(&g, dy, k, &mut dx, threads());
        Ok(dx)
    }
}

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
        let (h, w, c) = g.input;
        let out = run_host(self, &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from((g.batch, h, w, c))))
    }
}

/// The kernel's gradient: `(x, dy) -> dkernel`, in Keras' layout.
struct KernelGrad(Conv2dGeometry);

impl HostBody for KernelGrad {
    fn run<T: HostFloat>(&self, v: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let g = self.0;
        let (nx, nk, ny) = g.sizes();
        let (x, dy) = sized(v, [nx, ny])?;
        let mut dk = vec![T::ZERO; nk];
        conv2d_backward_kernel(&g, x, dy, &mut dk, threads());
        Ok(dk)
    }
}

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
        let (kh, kw) = g.kernel;
        let out = run_host(self, &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from((kh, kw, g.input.2 / g.groups, g.filters))))
    }
}
