//! `GruCell` (Keras' `GRUCell`) on a target: the Keras cases of tests/data/cell stepped on
//! the device, on the cell's fast path (the fused step kernels on a GPU: a cell never
//! chooses cuDNN; the fused kernels on the CPU) and on the loop.

use crate::common::cell_cases::check_all;
use crate::common::target::Target;
use candle_core::{DType, Tensor};
use candle_gru::candle::{CpuPath, GpuPath};
use candle_gru::{ExecPath, GruCell, GruCellConfig};

/// Every Keras cell case (f32, f64, mixed_float16), states and gradients at the golden
/// tolerances, on the fast path and on the loop; and the path a step takes.
pub fn cells_match_keras(target: &Target) {
    let fast = check_all(&target.dev, |g| g);
    let lp = check_all(&target.dev, |g| {
        g.with_gpu_path(GpuPath::Loop).with_cpu_path(CpuPath::Loop)
    });
    assert_eq!((fast, lp), (11, 11), "every case under every policy");
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &target.dev);
    let cell = GruCell::new(GruCellConfig::new(8), 3, vb).unwrap();
    let x = Tensor::ones((2, 3), DType::F32, &target.dev).unwrap();
    cell.call(&x, &cell.initial_state(2).unwrap(), false)
        .unwrap();
    let want = match target.is_cuda() {
        true => ExecPath::StepKernels,
        false => ExecPath::Fused,
    };
    assert_eq!(cell.last_dispatch().unwrap().path, want);
}
