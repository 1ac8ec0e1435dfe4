//! The host backend of the step sequence: `Vec` buffers, gemm for the products, and the
//! CUDA C step kernels compiled as C++ (`kernels/host/gru_step_host.cpp`, built by this
//! crate's build.rs), each launch a loop over its threads. It runs the fused GPU path's
//! exact sequence and kernel code on any machine; it is a test and reference backend, not a
//! fast path.

use super::{Gemm, Kernel, Launch, StepArgs, StepBackend, StepMem};
use crate::error::{GruError, Result};
use crate::seq::float::Float;
use crate::seq::matmul::{gemm, View};
use crate::seq::team::Threads;

/// The host backend for elements of `T` (f32 or f64).
#[derive(Debug, Default, Clone, Copy)]
pub struct Host<T>(std::marker::PhantomData<T>);

impl<T> Host<T> {
    /// The backend.
    pub fn new() -> Self {
        Host(std::marker::PhantomData)
    }
}

impl<T> StepMem for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// A float the host kernels are built for.
pub trait HostKernels: Float {
    /// Runs `kernel` over `threads` threads with `args`.
    ///
    /// # Safety
    /// Every address in `args` points to a live buffer holding everything the kernel
    /// touches for these sizes (see `Launch::check`), written buffers are not aliased.
    unsafe fn run(kernel: Kernel, args: StepArgs, threads: i64);
}

mod ffi {
    use super::StepArgs;
    macro_rules! host_fns {
        ($($name:ident),* $(,)?) => {
            extern "C" {
                $(pub fn $name(a: StepArgs, threads: i64);)*
                pub fn gru_host_activate(code: i32, x: f64, alpha: f64, beta: f64) -> f64;
                pub fn gru_host_derivative(code: i32, x: f64, y: f64, alpha: f64, beta: f64) -> f64;
            }
        };
    }
    host_fns!(
        gru_host_gru_fwd_after_f32,
        gru_host_gru_fwd_after_f64,
        gru_host_gru_fwd_before_gates_f32,
        gru_host_gru_fwd_before_gates_f64,
        gru_host_gru_fwd_before_out_f32,
        gru_host_gru_fwd_before_out_f64,
        gru_host_gru_bwd_after_f32,
        gru_host_gru_bwd_after_f64,
        gru_host_gru_bwd_before_a_f32,
        gru_host_gru_bwd_before_a_f64,
        gru_host_gru_bwd_before_b_f32,
        gru_host_gru_bwd_before_b_f64,
        gru_host_gru_mask_rows_f32,
        gru_host_gru_mask_rows_f64,
        gru_host_gru_mask_accumulate_f32,
        gru_host_gru_mask_accumulate_f64,
    );
}

impl HostKernels for f32 {
    unsafe fn run(kernel: Kernel, args: StepArgs, threads: i64) {
        use ffi::*;
        let f = match kernel {
            Kernel::FwdAfter => gru_host_gru_fwd_after_f32,
            Kernel::FwdBeforeGates => gru_host_gru_fwd_before_gates_f32,
            Kernel::FwdBeforeOut => gru_host_gru_fwd_before_out_f32,
            Kernel::BwdAfter => gru_host_gru_bwd_after_f32,
            Kernel::BwdBeforeA => gru_host_gru_bwd_before_a_f32,
            Kernel::BwdBeforeB => gru_host_gru_bwd_before_b_f32,
            Kernel::MaskRows => gru_host_gru_mask_rows_f32,
            Kernel::MaskAccumulate => gru_host_gru_mask_accumulate_f32,
        };
        // SAFETY: the caller's contract.
        unsafe { f(args, threads) }
    }
}

impl HostKernels for f64 {
    unsafe fn run(kernel: Kernel, args: StepArgs, threads: i64) {
        use ffi::*;
        let f = match kernel {
            Kernel::FwdAfter => gru_host_gru_fwd_after_f64,
            Kernel::FwdBeforeGates => gru_host_gru_fwd_before_gates_f64,
            Kernel::FwdBeforeOut => gru_host_gru_fwd_before_out_f64,
            Kernel::BwdAfter => gru_host_gru_bwd_after_f64,
            Kernel::BwdBeforeA => gru_host_gru_bwd_before_a_f64,
            Kernel::BwdBeforeB => gru_host_gru_bwd_before_b_f64,
            Kernel::MaskRows => gru_host_gru_mask_rows_f64,
            Kernel::MaskAccumulate => gru_host_gru_mask_accumulate_f64,
        };
        // SAFETY: the caller's contract.
        unsafe { f(args, threads) }
    }
}

/// The kernels' activation `code` at `x` (the host build of `kernels/gru_activations.cuh`,
/// in f64), for the test against [`crate::Activation`].
pub fn kernel_activation(code: i32, x: f64, alpha: f64, beta: f64) -> f64 {
    // SAFETY: a pure function of its scalar arguments.
    unsafe { ffi::gru_host_activate(code, x, alpha, beta) }
}

/// The kernels' derivative of activation `code` at `x` (with `y` = the activation there).
pub fn kernel_derivative(code: i32, x: f64, y: f64, alpha: f64, beta: f64) -> f64 {
    // SAFETY: a pure function of its scalar arguments.
    unsafe { ffi::gru_host_derivative(code, x, y, alpha, beta) }
}

/// A (rows, cols) view of `data`, stored transposed when `trans`.
fn view<T>(
    data: &[T],
    off: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    trans: bool,
) -> View<'_, T> {
    match trans {
        false => View::rows(data, off, rows, cols, ld),
        true => View::rows(data, off, cols, rows, ld).t(),
    }
}

impl<T: HostKernels> StepBackend for Host<T> {
    type Mem = Vec<T>;
    type Mask = Vec<u8>;

    fn zeros(&self, n: usize) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; n])
    }

    fn filled(&self, n: usize, v: f64) -> Result<Vec<T>> {
        Ok(vec![T::from_f64(v); n])
    }

    fn duplicate(&self, src: &Vec<T>) -> Result<Vec<T>> {
        Ok(src.clone())
    }

    fn copy_into(
        &self,
        src: &Vec<T>,
        src_off: usize,
        dst: &mut Vec<T>,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        super::check_copy(src.len(), src_off, dst.len(), dst_off, n)?;
        dst[dst_off..dst_off + n].copy_from_slice(&src[src_off..src_off + n]);
        Ok(())
    }

    fn gemm(&self, g: &Gemm, a: &Vec<T>, b: &Vec<T>, c: &mut Vec<T>) -> Result<()> {
        g.check(a.len(), b.len(), c.len())?;
        let av = view(a, g.a_off, g.m, g.k, g.lda, g.a_trans);
        let bv = view(b, g.b_off, g.k, g.n, g.ldb, g.b_trans);
        gemm(c, g.c_off, g.ldc, av, bv, g.accumulate, Threads::ONE);
        Ok(())
    }

    fn launch(&self, l: Launch<'_, Vec<T>, Vec<u8>>) -> Result<()> {
        l.check()?;
        let mut args = l.args;
        for (f, m, off, _) in &l.reads {
            args.set(*f, m[*off..].as_ptr() as u64);
        }
        let Launch {
            kernel,
            writes,
            mask,
            ..
        } = l;
        let mut writes = writes;
        for (f, m, off, _) in writes.iter_mut() {
            args.set(*f, m[*off..].as_mut_ptr() as u64);
        }
        if let Some(m) = mask {
            args.set(super::Field::Mask, m.as_ptr() as u64);
        }
        let threads = i64::try_from(kernel.threads(&args)).map_err(|_| GruError::Internal {
            what: "too many kernel threads".into(),
        })?;
        // SAFETY: `check` verified that every buffer holds what the kernel touches from its
        // offset for these sizes (each kernel writes only element (b, j) of its step, or of
        // its row range, which the extents cover); the written buffers are distinct `&mut`
        // borrows, the read ones shared borrows the writes cannot alias; all live until the
        // call returns, and the call runs synchronously.
        unsafe { T::run(kernel, args, threads) };
        Ok(())
    }
}
