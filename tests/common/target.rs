//! The device a shared test body runs on. The GPU tests (tests/gpu_cudnn.rs) run each body
//! on a CUDA device, where the layer under test runs on cuDNN; CI runs the same bodies on
//! the CPU (tests/device_suite.rs), where the layer under test runs on the CPU's fast path.
//! Every shape, dtype, layer, mask and path expectation is then exercised on every build;
//! only the facts that need cuDNN itself (its paths, its caches, its weight space, device
//! memory) are left to the GPU.

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::{CpuPath, GpuPath};
use candle_gru::core::UseCudnn;
use candle_gru::cudnn::MaskScan;
use candle_gru::{ExecPath, Gru, GruConfig};

/// Where a test body runs.
pub struct Target {
    /// The device of every tensor and layer.
    pub dev: Device,
}

impl Target {
    /// The CPU.
    pub fn cpu() -> Target {
        Target { dev: Device::Cpu }
    }

    /// CUDA device 0, or `None` after printing "skipped: no CUDA device" (the runner reads
    /// that line as SKIPPED).
    pub fn cuda() -> Option<Target> {
        match Device::new_cuda(0) {
            Ok(dev) => Some(Target { dev }),
            Err(e) => {
                println!(
                    "skipped: no CUDA device ({})",
                    e.to_string().lines().next().unwrap_or("")
                );
                None
            }
        }
    }

    /// Whether this is a CUDA device (the cuDNN-specific assertions apply).
    pub fn is_cuda(&self) -> bool {
        self.dev.is_cuda()
    }

    /// The `use_cudnn` of the layer under test: `Force` on a GPU (a failed condition is an
    /// error, never a silent fallback), `Auto` on the CPU (where cuDNN cannot run).
    pub fn fast_setting(&self) -> UseCudnn {
        if self.is_cuda() {
            UseCudnn::Force
        } else {
            UseCudnn::Auto
        }
    }

    /// The path the layer under test takes in `dtype`: cuDNN on a GPU, the fused kernels on
    /// the CPU (f16 and bf16 computed in f32 there).
    pub fn fast_path(&self, _dtype: DType) -> ExecPath {
        match self.is_cuda() {
            true => ExecPath::Cudnn,
            false => ExecPath::Fused,
        }
    }

    /// The path a `use_cudnn = Never` layer takes: the fused step kernels on a GPU; on the
    /// CPU the same as [`Target::fast_path`] (the CPU paths do not depend on `use_cudnn`).
    pub fn never_path(&self, dtype: DType) -> ExecPath {
        if self.is_cuda() {
            ExecPath::StepKernels
        } else {
            self.fast_path(dtype)
        }
    }

    /// The layer under test (`cfg.use_cudnn` replaced by [`Target::fast_setting`]).
    pub fn fast_layer(&self, cfg: &GruConfig, input: usize, dtype: DType) -> Gru {
        let mut c = cfg.clone();
        c.use_cudnn = self.fast_setting();
        super::layer(&c, input, dtype, &self.dev)
    }

    /// The reference: the op-by-op loop on this device, with the same weights.
    pub fn loop_layer(&self, cfg: &GruConfig, input: usize, dtype: DType) -> Gru {
        let mut c = cfg.clone();
        c.use_cudnn = UseCudnn::Never;
        super::layer(&c, input, dtype, &self.dev)
            .with_cpu_path(CpuPath::Loop)
            .with_gpu_path(GpuPath::Loop)
    }

    /// The fused step kernels on this device, with the same weights: the CUDA backend on a
    /// GPU, the host backend on the CPU (f32, f64; the loop for other dtypes there).
    pub fn step_layer(&self, cfg: &GruConfig, input: usize, dtype: DType) -> Gru {
        let mut c = cfg.clone();
        c.use_cudnn = UseCudnn::Never;
        super::layer(&c, input, dtype, &self.dev)
            .with_cpu_path(CpuPath::KernelsOnHost)
            .with_gpu_path(GpuPath::StepKernels)
    }

    /// The path [`Target::step_layer`] takes in `dtype`.
    pub fn step_path(&self, dtype: DType) -> ExecPath {
        match (self.is_cuda(), dtype) {
            (false, DType::F16 | DType::BF16) => ExecPath::Loop,
            _ => ExecPath::StepKernels,
        }
    }

    /// The mask scan: the device kernel on a GPU, the host scan on the CPU.
    pub fn scan(&self, mask: &Tensor, go_backwards: bool, zero: bool) -> MaskScan {
        #[cfg(feature = "cudnn")]
        if self.is_cuda() {
            return MaskScan::on_device(mask, go_backwards, zero).unwrap();
        }
        let (b, t) = mask.dims2().unwrap();
        let host: Vec<bool> = mask
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap()
            .iter()
            .map(|&v| v != 0)
            .collect();
        MaskScan::on_host(&host, b, t, go_backwards, zero, &self.dev).unwrap()
    }

    /// Checks the result of a call that cuDNN can run under `Force`: on a GPU it ran on
    /// cuDNN; on the CPU it is the typed error naming the device condition (and nothing
    /// else, so the call's own setup is right).
    pub fn expect_forced<T: std::fmt::Debug>(
        &self,
        r: candle_gru::candle::Result<T>,
        path_of: impl Fn(&T) -> ExecPath,
    ) {
        match (self.is_cuda(), r) {
            (true, Ok(out)) => assert_eq!(path_of(&out), ExecPath::Cudnn),
            (true, Err(e)) => panic!("forced cuDNN call failed: {e}"),
            (false, Ok(out)) => panic!("a forced cuDNN call ran on the CPU: {out:?}"),
            (false, Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("device is CUDA"), "{msg}");
                assert!(
                    !msg.contains("1. ") && !msg.contains("3. ") && !msg.contains("7. "),
                    "a condition other than the device failed: {msg}"
                );
            }
        }
    }
}
