//! The CUDA backend of the fused GPU path's step sequence (`gru_core::step`): device
//! buffers, cuBLAS products through candle's handle, and the step kernels of
//! `kernels/gru_step_*.cu` (PTX built by build.rs). Every product and launch is checked
//! against its buffers first; the kernels read and write only inside what the checks cover.

use candle_core::cuda_backend::cudarc::cublas::{
    sys as cublas_sys, CudaBlas, Gemm as CublasGemm, GemmConfig,
};
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{Layout, Shape, Storage, Tensor};
use gru_core::step::{Field, Gemm, Launch, StepArgs, StepBackend, StepMem};
use gru_core::{GruError, Result};

const FORWARD_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gru_step_forward.ptx"));
const BACKWARD_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gru_step_backward.ptx"));
const ELEMENTWISE_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gru_step_elementwise.ptx"));

/// A device buffer of the step sequence.
pub struct DevMem<T>(pub CudaSlice<T>);

impl<T> StepMem for DevMem<T> {
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The step kernels' argument struct, passed by value to the kernels.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct Args(StepArgs);

// SAFETY: StepArgs is repr(C) plain data (ints, floats, a double, u64 addresses), laid out
// as the kernels' GruStepArgs.
unsafe impl DeviceRepr for Args {}

/// An element type of the fused GPU path: its kernels' suffix, its cuBLAS product.
pub trait CudaStepElem: CudaDType + DeviceRepr + ValidAsZeroBits + Copy + 'static
where
    CudaBlas: CublasGemm<Self>,
{
    /// The kernels' name suffix.
    const SUFFIX: &'static str;
    /// From f64.
    fn from_f64(v: f64) -> Self;
}

impl CudaStepElem for f32 {
    const SUFFIX: &'static str = "f32";
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
}

impl CudaStepElem for f64 {
    const SUFFIX: &'static str = "f64";
    fn from_f64(v: f64) -> f64 {
        v
    }
}

impl CudaStepElem for half::f16 {
    const SUFFIX: &'static str = "f16";
    fn from_f64(v: f64) -> half::f16 {
        half::f16::from_f64(v)
    }
}

impl CudaStepElem for half::bf16 {
    const SUFFIX: &'static str = "bf16";
    fn from_f64(v: f64) -> half::bf16 {
        half::bf16::from_f64(v)
    }
}

/// The CUDA backend on one device, for elements of `T`.
pub struct Cuda<T> {
    dev: CudaDevice,
    _t: std::marker::PhantomData<T>,
}

fn cuda_err(e: impl std::fmt::Display) -> GruError {
    GruError::Internal {
        what: format!("CUDA: {e}"),
    }
}

impl<T> Cuda<T> {
    /// The backend on `dev`.
    pub fn new(dev: CudaDevice) -> Self {
        Cuda {
            dev,
            _t: std::marker::PhantomData,
        }
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }
}

/// A row-major product as cuBLAS's column-major one: C^T = op(B)^T @ op(A)^T.
fn column_major<T>(g: &Gemm, alpha: T, beta: T) -> Result<GemmConfig<T>> {
    let int = |v: usize| {
        i32::try_from(v).map_err(|_| GruError::TooLarge {
            what: "a step product".into(),
            limit: "i32::MAX".into(),
            needed: v.to_string(),
        })
    };
    let op = |t: bool| {
        if t {
            cublas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            cublas_sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    Ok(GemmConfig {
        transa: op(g.b_trans),
        transb: op(g.a_trans),
        m: int(g.n)?,
        n: int(g.m)?,
        k: int(g.k)?,
        alpha,
        lda: int(g.ldb.max(1))?,
        ldb: int(g.lda.max(1))?,
        beta,
        ldc: int(g.ldc.max(1))?,
    })
}

impl<T: CudaStepElem> StepBackend for Cuda<T>
where
    CudaBlas: CublasGemm<T>,
{
    type Mem = DevMem<T>;
    type Mask = DevMem<u8>;

    fn zeros(&self, n: usize) -> Result<DevMem<T>> {
        Ok(DevMem(
            self.dev.alloc_zeros::<T>(n.max(1)).map_err(cuda_err)?,
        ))
    }

    fn filled(&self, n: usize, v: f64) -> Result<DevMem<T>> {
        let host = vec![T::from_f64(v); n.max(1)];
        Ok(DevMem(self.dev.clone_htod(&host).map_err(cuda_err)?))
    }

    fn duplicate(&self, src: &DevMem<T>) -> Result<DevMem<T>> {
        let mut dst = self
            .dev
            .alloc_zeros::<T>(src.0.len().max(1))
            .map_err(cuda_err)?;
        self.dev.memcpy_dtod(&src.0, &mut dst).map_err(cuda_err)?;
        Ok(DevMem(dst))
    }

    fn copy_into(
        &self,
        src: &DevMem<T>,
        src_off: usize,
        dst: &mut DevMem<T>,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        gru_core::step::check_copy(src.len(), src_off, dst.len(), dst_off, n)?;
        if n == 0 {
            return Ok(());
        }
        let from = src.0.slice(src_off..src_off + n);
        let mut to = dst.0.slice_mut(dst_off..dst_off + n);
        self.dev.memcpy_dtod(&from, &mut to).map_err(cuda_err)
    }

    fn gemm(&self, g: &Gemm, a: &DevMem<T>, b: &DevMem<T>, c: &mut DevMem<T>) -> Result<()> {
        g.check(a.len(), b.len(), c.len())?;
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let beta = if g.accumulate {
            T::from_f64(1.0)
        } else {
            T::from_f64(0.0)
        };
        let cfg = column_major(g, T::from_f64(1.0), beta)?;
        let blas = self.dev.cublas_handle();
        let (av, bv) = (a.0.slice(g.a_off..), b.0.slice(g.b_off..));
        let mut cv = c.0.slice_mut(g.c_off..);
        // SAFETY: `check` verified that op(A), op(B) and C, with their leading dimensions,
        // lie inside their buffers from these offsets; the dims and leading dimensions are
        // the row-major product's, swapped into cuBLAS's column-major order; C is a unique
        // borrow distinct from A and B.
        unsafe { blas.gemm(cfg, &bv, &av, &mut cv) }.map_err(cuda_err)
    }

    fn launch(&self, l: Launch<'_, DevMem<T>, DevMem<u8>>) -> Result<()> {
        l.check()?;
        let stream = self.dev.cuda_stream();
        let mut args = l.args;
        let mut writes = l.writes;
        let mut guards = Vec::new();
        let elem = std::mem::size_of::<T>() as u64;
        for (f, m, off, _) in &l.reads {
            let (p, g) = m.0.device_ptr(&stream);
            args.set(*f, p + *off as u64 * elem);
            guards.push(g);
        }
        if let Some(m) = l.mask {
            let (p, g) = m.0.device_ptr(&stream);
            args.set(Field::Mask, p);
            guards.push(g);
        }
        for (f, m, off, _) in writes.iter_mut() {
            // Written buffers are taken as written (cudarc orders them after every earlier
            // read and write when it tracks events across streams).
            let (p, g) = m.0.device_ptr_mut(&stream);
            args.set(*f, p + *off as u64 * elem);
            guards.push(g);
        }
        let name = format!("{}_{}", l.kernel.name(), T::SUFFIX);
        let (module, ptx) = match l.kernel.name() {
            n if n.starts_with("gru_fwd") => ("gru_cudnn_step_forward", FORWARD_PTX),
            n if n.starts_with("gru_bwd") => ("gru_cudnn_step_backward", BACKWARD_PTX),
            _ => ("gru_cudnn_step_elementwise", ELEMENTWISE_PTX),
        };
        let func = self
            .dev
            .get_or_load_custom_func(&name, module, ptx)
            .map_err(cuda_err)?;
        let threads = l.kernel.threads(&args);
        let block = 256u32;
        let grid =
            u32::try_from(threads.div_ceil(block as u64)).map_err(|_| GruError::TooLarge {
                what: format!("{name} grid"),
                limit: "2^32 blocks".into(),
                needed: threads.to_string(),
            })?;
        if grid == 0 {
            return Ok(());
        }
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let a = Args(args);
        let mut launch = func.builder();
        launch.arg(&a);
        // SAFETY: the kernel takes one GruStepArgs by value (Args is its layout); `check`
        // verified that each buffer holds what the kernel touches from its address for these
        // sizes (one thread per element of the (rows, u) state, each writing only its own
        // element of each written buffer); the stream guards keep every buffer's pending
        // work ordered on candle's stream, where the kernel runs.
        unsafe { launch.launch(cfg) }.w().map_err(cuda_err)?;
        drop(guards);
        Ok(())
    }
}

/// A copy of the `len` values of a contiguous CUDA storage (the op's inputs are copied once
/// per call into buffers the step sequence owns).
pub fn mem_of_storage<T: CudaDType + DeviceRepr + ValidAsZeroBits>(
    s: &CudaStorage,
    l: &Layout,
    len: usize,
    what: &str,
) -> candle_core::Result<DevMem<T>> {
    let (start, end) = match l.contiguous_offsets() {
        Some(r) if r.1 - r.0 == len => r,
        _ => {
            return Err(candle_core::Error::msg(format!(
                "fused step kernels: {what} must be contiguous with {len} values, got {:?} \
                 strides {:?}",
                l.dims(),
                l.stride()
            )))
        }
    };
    let src = s.as_cuda_slice::<T>()?.slice(start..end);
    let mut dst = s.device.alloc_zeros::<T>(len.max(1))?;
    if len > 0 {
        let mut head = dst.slice_mut(..len);
        s.device.memcpy_dtod(&src, &mut head)?;
    }
    Ok(DevMem(dst))
}

/// A copy of a CUDA tensor's `len` values.
pub fn mem_of_tensor<T: CudaDType + DeviceRepr + ValidAsZeroBits>(
    t: &Tensor,
    len: usize,
    what: &str,
) -> candle_core::Result<DevMem<T>> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cuda(c) => mem_of_storage::<T>(c, l, len, what),
        _ => Err(candle_core::Error::msg(format!(
            "fused step kernels: {what} must be a CUDA tensor"
        ))),
    }
}

/// A copy of a (batch, time) u8 mask on a CUDA device.
pub fn mask_of_tensor(t: &Tensor) -> candle_core::Result<DevMem<u8>> {
    mem_of_tensor::<u8>(t, t.elem_count(), "the mask")
}

/// The first `len` values of a buffer as Candle storage on `dev`.
pub fn storage_of<T: CudaStepElem>(
    m: DevMem<T>,
    len: usize,
    dev: &CudaDevice,
) -> candle_core::Result<CudaStorage>
where
    CudaBlas: CublasGemm<T>,
{
    let slice = if m.0.len() == len {
        m.0
    } else {
        let mut exact = dev.alloc_zeros::<T>(len)?;
        dev.memcpy_dtod(&m.0.slice(..len), &mut exact)?;
        exact
    };
    Ok(T::wrap_cuda_slice(slice, dev.clone()))
}

/// A buffer as a tensor of `shape` (not tracked by autograd) on `dev`.
pub fn tensor_of<T: CudaStepElem>(
    m: DevMem<T>,
    shape: Shape,
    dev: &CudaDevice,
) -> candle_core::Result<Tensor>
where
    CudaBlas: CublasGemm<T>,
{
    let storage = storage_of(m, shape.elem_count(), dev)?;
    Ok(Tensor::from_storage(
        Storage::Cuda(storage),
        shape,
        BackpropOp::none(),
        false,
    ))
}
