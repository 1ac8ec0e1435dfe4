//! Runs golden cases (Keras 3 GRU, golden schema) through the Candle layer.
//!
//! `cargo run --release --example keras_case -- [--loop | --kernels-on-host] PATH...` (case
//! files or folders). Each case runs in f32 and f64 on a CPU path: the fused kernels (the
//! default), the op-by-op loop (`--loop`), or the fused step kernels on their host backend
//! (`--kernels-on-host`: the GPU path's step sequence and CUDA C kernels compiled for the
//! host). Prints one line per case (name, PASS/FAIL, max abs errors) and `N passed, M
//! failed`; exits 0 only when every case passes. A case that cannot run is a FAIL with its
//! reason.

use gru_candle::CpuPath;
use gru_support::golden::{case_files, load_case, run_case_path, run_paths};
use std::path::PathBuf;

fn main() {
    let mut path = CpuPath::Fused;
    let mut files = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--loop" => path = CpuPath::Loop,
            "--kernels-on-host" => path = CpuPath::KernelsOnHost,
            flag if flag.starts_with("--") => {
                eprintln!("unknown option {flag}");
                std::process::exit(2);
            }
            _ => files.push(PathBuf::from(a)),
        }
    }
    if files.is_empty() {
        eprintln!(
            "usage: keras_case [--loop | --kernels-on-host] PATH... (golden case files or folders)"
        );
        std::process::exit(2);
    }
    std::process::exit(run_paths(&files, case_files, |file| {
        let report = run_case_path(&load_case(file)?, path);
        Ok((report.line(), report.passed()))
    }));
}
