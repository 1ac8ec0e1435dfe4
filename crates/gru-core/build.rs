//! Builds the CUDA C step kernels (`kernels/gru_step_*.cu`) as C++ for the host backend of
//! the step sequence (`step::host`), through `kernels/host/gru_step_host.cpp`.

fn main() {
    let kernels = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    for f in [
        "host/gru_step_host.cpp",
        "gru_step_forward.cu",
        "gru_step_backward.cu",
        "gru_step_elementwise.cu",
        "gru_step_args.h",
        "gru_activations.cuh",
    ] {
        println!("cargo:rerun-if-changed={}", kernels.join(f).display());
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .file(kernels.join("host/gru_step_host.cpp"))
        .compile("gru_step_host");
}
