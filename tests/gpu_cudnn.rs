//! The GPU tests (build with `--features cudnn`; scripts/gpu-build.sh packs them and
//! scripts/gpu-run.sh runs them on a GPU machine). The bodies live in tests/suite and run
//! on the CPU in every CI run too (tests/device_suite.rs); here they run on CUDA device 0,
//! with the layer under test on cuDNN and the reference loop on the GPU. Without a GPU each
//! test prints "skipped: no CUDA device" and passes.
#![cfg(feature = "cudnn")]

mod common;
#[macro_use]
mod suite;

use common::target::Target;
use std::time::Duration;

suite_tests! { Target::cuda();
    gpu_golden_cases_through_cudnn_step_kernels_and_the_loop => suite::golden_cases,
    gpu_mask_scan_matches_the_host_scan => suite::mask_scan_matches_the_host_scan,
    gpu_every_mask_kind_matches_the_loop_f64_and_f32 => suite::every_mask_kind_matches_the_loop,
    gpu_half_types_track_f32 => suite::half_types_track_f32,
    gpu_auto_force_never => suite::auto_force_never,
    gpu_stateful_calls_match_the_loop => suite::stateful_calls_match_the_loop,
    gpu_descriptors_are_cached_per_shape => suite::descriptors_are_cached_per_shape,
    gpu_weight_space_layout_facts => suite::weight_space_layout_facts,
    gpu_second_backward_and_inference_backward_recompute =>
        suite::second_backward_and_inference_backward_recompute,
    gpu_tf32_is_opt_in => suite::tf32_is_opt_in,
    gpu_memory_is_steady_over_10000_training_calls =>
        |t: &Target| suite::memory_is_steady(t, 10_000, Duration::from_secs(25)),
    gpu_mixed_policy_matches_keras => suite::mixed_policy_matches_keras,
    gpu_mixed_layer_is_a_half_layer_on_cast_weights =>
        suite::mixed_layer_is_a_half_layer_on_cast_weights,
    gpu_step_kernels_match_the_loop => suite::step_kernels_match_the_loop,
    gpu_step_kernels_half_types_track_f32 => suite::step_kernels_half_types_track_f32,
    gpu_step_kernels_second_backward_recomputes => suite::step_kernels_second_backward_recomputes,
    gpu_step_kernels_bad_input_is_typed => suite::step_kernels_bad_input_is_typed,
    gpu_cells_match_keras => suite::cells_match_keras,
    gpu_conv_models_match_keras => suite::conv_models_match_keras,
    gpu_mask_input_models_match_keras => suite::mask_input_models_match_keras,
    gpu_ctc_matches_keras => suite::ctc_matches_keras,
    gpu_step_kernels_memory_is_steady_over_10000_training_calls =>
        |t: &Target| suite::step_kernels_memory_is_steady(t, 10_000, Duration::from_secs(25)),
}
