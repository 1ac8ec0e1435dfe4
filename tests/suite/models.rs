//! Keras models with convolutional front ends (keras.io's DeepSpeech2 and captcha OCR
//! models, Conv2D's and the poolings' settings, 1-D convolutions and poolings, a CNN on every
//! video frame), models whose masks come in as boolean inputs, and CTC on a target: outputs,
//! Keras' loss and every gradient; CTC losses, gradients, greedy and beam search decoding;
//! against Keras 3.15.1.

use crate::common::ctc_cases;
use crate::common::keras_cases::check_gradients_on;
use crate::common::target::Target;

/// The model cases of tests/data/models made by scripts/make_keras_conv2d_cases.py.
pub const CONV_MODEL_CASES: [&str; 5] = [
    "deepspeech2_conv2d_bigru",
    "crnn_ocr_conv2d_pooling",
    "conv2d_variants_gru",
    "pooling1d_training",
    "time_distributed_conv2d_frames",
];

/// The error allowed on a target: f32 round-off on the CPU; on a GPU also cuDNN's
/// convolutions, which may run f32 on TF32 tensor cores (a 10-bit mantissa: about 1e-3
/// relative per product sum).
fn tolerance(target: &Target) -> f64 {
    if target.is_cuda() {
        2e-3
    } else {
        2e-6
    }
}

/// Every convolutional model case on the target: outputs, loss and gradients.
pub fn conv_models_match_keras(target: &Target) {
    for name in CONV_MODEL_CASES {
        let worst = check_gradients_on(name, &target.dev, tolerance(target));
        println!("{name:<32} outputs and gradients within {worst:.2e} of Keras");
    }
}

/// The model cases of tests/data/models made by scripts/make_keras_mask_input_cases.py:
/// boolean model inputs handed to layers as their `mask` argument.
pub const MASK_INPUT_CASES: [&str; 2] = ["video_classifier_mask_input", "mask_input_everywhere"];

/// Every mask-input model case on the target: outputs, loss and gradients (the fused and
/// cuDNN GRU paths under masks; no convolution, so f32 round-off on every target).
pub fn mask_input_models_match_keras(target: &Target) {
    for name in MASK_INPUT_CASES {
        let worst = check_gradients_on(name, &target.dev, 2e-6);
        println!("{name:<32} outputs and gradients within {worst:.2e} of Keras");
    }
}

/// The CTC cases on the target: losses, gradients, greedy and beam search labels and scores.
pub fn ctc_matches_keras(target: &Target) {
    let worst = ctc_cases::check_losses(&target.dev, 2e-5, tolerance(target).max(2e-6));
    println!("ctc losses and gradients within {worst:.2e} of Keras");
    ctc_cases::check_greedy(&target.dev);
    let beam = ctc_cases::check_beam(&target.dev);
    println!("ctc beam search scores within {beam:.2e} of Keras");
}
