//! Every public golden case (real Keras 3.15.1, TensorFlow backend) through the Candle layer:
//! outputs of every call, stateful sequences, gradients; f32 and f64.

use candle_core::DType;
use candle_gru::candle::CpuPath;
use gru_support::golden::{case_files, load_case, run_case, run_case_dtype, run_case_path};
use std::path::Path;

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden"))
}

#[test]
fn all_57_public_cases_pass_in_f32_and_f64() {
    all_cases_pass_on(CpuPath::Fused);
}

#[test]
fn all_57_public_cases_pass_on_the_reference_loop_too() {
    all_cases_pass_on(CpuPath::Loop);
}

#[test]
fn all_57_public_cases_pass_on_the_step_kernels_compiled_for_the_host() {
    // The GPU step path's exact sequence and CUDA C kernels, on the host backend.
    all_cases_pass_on(CpuPath::KernelsOnHost);
}

fn all_cases_pass_on(path: CpuPath) {
    let files = case_files(dir()).unwrap();
    assert_eq!(files.len(), 57, "expected the 57 public cases");
    let mut failed = Vec::new();
    let mut with_grad = 0;
    for f in &files {
        let case = load_case(f).unwrap();
        with_grad += case.gradient.is_some() as usize;
        let report = run_case_path(&case, path);
        println!("{:?} {}", path, report.line());
        if !report.passed() {
            failed.push(report.line());
        }
    }
    assert_eq!(with_grad, 5, "the five grad_* cases carry gradients");
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn backend_dependent_cases_follow_tensorflow_not_jax() {
    // The alt_expected (jax) values differ at leading masked steps; we must match `expected`
    // and therefore NOT match alt_expected.
    for name in [
        "initial_state_mask_left_padded",
        "initial_state_all_false_row",
        "stateful_left_padded_second_call",
    ] {
        let mut case = load_case(&dir().join(format!("{name}.json"))).unwrap();
        assert!(case.features.iter().any(|f| f == "backend_dependent"));
        assert!(run_case(&case).passed(), "{name} must follow expected");
        let raw: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let alt = raw["alt_expected"]["float32"].as_array().unwrap();
        for (call, alt_outs) in case.calls.iter_mut().zip(alt) {
            call.expected.float32 = alt_outs.as_array().unwrap().clone();
        }
        let r = run_case_dtype(&case, DType::F32).unwrap();
        assert!(
            !r.failures.is_empty(),
            "{name}: jax's alt_expected must not match"
        );
    }
}

#[test]
fn the_runner_catches_a_wrong_output_and_a_wrong_gradient() {
    let mut case = load_case(&dir().join("grad_reset_before_masked.json")).unwrap();
    // Nudge one expected output by 1e-4 (10x the f32 tolerance).
    let first = case.calls[0].expected.float32[0][0][0][0].as_f64().unwrap();
    case.calls[0].expected.float32[0][0][0][0] = serde_json::json!(first + 1e-4);
    let r = run_case_dtype(&case, DType::F32).unwrap();
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    // And one gradient entry by 1e-8 in f64 (100x the f64 tolerance).
    let mut case = load_case(&dir().join("grad_reset_before_masked.json")).unwrap();
    let g = &mut case.gradient.as_mut().unwrap().expected.float64["recurrent_kernel"][0][0];
    *g = serde_json::json!(g.as_f64().unwrap() + 1e-8);
    let r = run_case_dtype(&case, DType::F64).unwrap();
    assert!(
        r.failures.iter().any(|f| f.contains("recurrent_kernel")),
        "{:?}",
        r.failures
    );
}
