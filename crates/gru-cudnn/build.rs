//! Compiles `kernels/*.cu` to PTX with nvcc when the `cudnn` feature is on (as candle's own
//! kernels are built); the CPU build runs nothing. See `kernels/README.md` for why build-time
//! nvcc rather than NVRTC.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &[
    "gru_mask_scan",
    "gru_step_forward",
    "gru_step_backward",
    "gru_step_elementwise",
];

/// Headers the step kernels include.
const HEADERS: &[&str] = &["gru_activations.cuh", "gru_step_args.h"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if env::var_os("CARGO_FEATURE_CUDNN").is_none() {
        return;
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let kernels = manifest.join("../../kernels");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    let nvcc = env::var("NVCC")
        .ok()
        .unwrap_or_else(|| match env::var("CUDA_HOME") {
            Ok(home) if !on_path("nvcc") => format!("{home}/bin/nvcc"),
            _ => "nvcc".to_string(),
        });
    for header in HEADERS {
        println!("cargo:rerun-if-changed={}", kernels.join(header).display());
    }
    for name in KERNELS {
        let src = kernels.join(format!("{name}.cu"));
        println!("cargo:rerun-if-changed={}", src.display());
        let dst = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-arch=compute_75", "-std=c++17"])
            .arg("-I")
            .arg(&kernels)
            .arg(&src)
            .arg("-o")
            .arg(&dst)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("nvcc failed on {} ({s})", src.display()),
            Err(e) => panic!(
                "cannot run nvcc ({nvcc}): {e}. The `cudnn` feature needs CUDA's nvcc; see \
                 scripts/cuda-toolchain.sh"
            ),
        }
    }
}

fn on_path(tool: &str) -> bool {
    env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}
