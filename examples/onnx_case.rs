//! Runs ONNX GRU cases (onnxruntime's outputs) through the ONNX importer:
//! `cargo run --release --example onnx_case -- PATH...` (case JSON files or folders, e.g.
//! `tests/data/onnx`). Each case runs in f32 on the fused CPU path; one line per case, then
//! `N passed, M failed`; exit 0 only when all pass.

use candle_core::DType;
use candle_gru::candle::CpuPath;
use gru_support::golden::onnx::{onnx_case_files, run_onnx_case};
use gru_support::golden::run_paths;
use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: onnx_case PATH... (ONNX case JSON files or folders)");
        std::process::exit(2);
    }
    std::process::exit(run_paths(&args, onnx_case_files, |file| {
        let report = run_onnx_case(file, DType::F32, CpuPath::Fused)?;
        Ok((report.line(), report.passed()))
    }));
}
