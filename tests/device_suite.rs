//! The GPU tests' bodies (tests/suite) on the CPU: every dtype, shape, layer, mask and
//! expected path of tests/gpu_cudnn.rs runs here in every CI run, with the CPU's fast path
//! in place of cuDNN and the CPU loop as the reference. Only what needs cuDNN itself waits
//! for a GPU.

mod common;
#[macro_use]
mod suite;

use common::target::Target;
use std::time::Duration;

suite_tests! { Some(Target::cpu());
    golden_cases_on_the_cpu => suite::golden_cases,
    mask_scan_setup_on_the_cpu => suite::mask_scan_matches_the_host_scan,
    every_mask_kind_matches_the_loop_on_the_cpu => suite::every_mask_kind_matches_the_loop,
    half_types_track_f32_on_the_cpu => suite::half_types_track_f32,
    auto_force_never_on_the_cpu => suite::auto_force_never,
    stateful_calls_match_the_loop_on_the_cpu => suite::stateful_calls_match_the_loop,
    descriptor_cache_setup_on_the_cpu => suite::descriptors_are_cached_per_shape,
    weight_space_host_model => suite::weight_space_layout_facts,
    second_backward_and_inference_backward_on_the_cpu =>
        suite::second_backward_and_inference_backward_recompute,
    tf32_setting_on_the_cpu => suite::tf32_is_opt_in,
    memory_test_setup_on_the_cpu =>
        |t: &Target| suite::memory_is_steady(t, 20, Duration::from_secs(10)),
    mixed_policy_matches_keras_on_the_cpu => suite::mixed_policy_matches_keras,
    mixed_layer_is_a_half_layer_on_cast_weights_on_the_cpu =>
        suite::mixed_layer_is_a_half_layer_on_cast_weights,
    step_kernels_on_host_match_the_loop => suite::step_kernels_match_the_loop,
    step_kernels_half_types_setup_on_the_cpu => suite::step_kernels_half_types_track_f32,
    step_kernels_on_host_second_backward_recomputes =>
        suite::step_kernels_second_backward_recomputes,
    step_kernels_on_host_bad_input_is_typed => suite::step_kernels_bad_input_is_typed,
    cells_match_keras_on_the_cpu => suite::cells_match_keras,
    conv_models_match_keras_on_the_cpu => suite::conv_models_match_keras,
    mask_input_models_match_keras_on_the_cpu => suite::mask_input_models_match_keras,
    ctc_matches_keras_on_the_cpu => suite::ctc_matches_keras,
    step_kernels_memory_test_setup_on_the_cpu =>
        |t: &Target| suite::step_kernels_memory_is_steady(t, 20, Duration::from_secs(10)),
}
