//! Convolutional front ends before GRUs, against Keras 3.15.1 (tests/data/models, made by
//! scripts/make_keras_conv2d_cases.py): keras.io's DeepSpeech2 (Conv2D over a spectrogram of
//! any length, BatchNormalization, Reshape with -1, bidirectional GRUs) and captcha OCR
//! (Conv2D + MaxPooling2D over an image, its height folded into features) models at a small
//! size, Conv2D's and the poolings' settings one by one, and the 1-D poolings a training
//! call goes through: outputs, Keras' loss and every gradient; typed refusals.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasModel, ModelLayer};
use candle_gru::candle::{Error, FileProblem};
use candle_gru::GruError;
use common::keras_cases::{case, check_gradients, data};
use common::{flat, max_diff};
use gru_support::golden::Array;

#[test]
fn deepspeech2_gradients_match_keras() {
    check_gradients("deepspeech2_conv2d_bigru");
}

#[test]
fn crnn_ocr_gradients_match_keras() {
    check_gradients("crnn_ocr_conv2d_pooling");
}

#[test]
fn conv2d_and_pooling_settings_gradients_match_keras() {
    check_gradients("conv2d_variants_gru");
}

#[test]
fn one_dimensional_pooling_gradients_match_keras() {
    check_gradients("pooling1d_training");
}

/// The spectrogram model takes any number of frames: its `Reshape((-1, bins, 1))` is
/// resolved at each call, as Keras resolves it.
#[test]
fn deepspeech2_runs_any_length() {
    let c = case("deepspeech2_conv2d_bigru");
    let file = data("deepspeech2_conv2d_bigru.keras");
    let model = KerasModel::load(&file, DType::F32, &Device::Cpu).unwrap();
    let longer = &c["longer"];
    let x = Array::from_json(&longer["inputs"])
        .unwrap()
        .tensor(DType::F32, &Device::Cpu)
        .unwrap();
    let out = model.call(&x, None).unwrap();
    assert_eq!(out[0].dims(), &[2, 7, 5]);
    let keras = Array::from_json(&longer["expected"]).unwrap().data;
    let err = max_diff(&flat(&out[0]), &keras);
    assert!(err < 1e-5, "longer input: {err:.2e} off Keras");
    // Frames that fold into no whole frequency row are a typed shape error.
    let bad = Tensor::zeros((2, 9, 11), DType::F32, &Device::Cpu).unwrap();
    match model.call(&bad, None) {
        Err(Error::Gru(GruError::Shape { what, .. })) => assert!(what.contains("Reshape")),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn the_layers_are_what_keras_built() {
    let file = data("crnn_ocr_conv2d_pooling.keras");
    let model = KerasModel::load(&file, DType::F32, &Device::Cpu).unwrap();
    let convs: Vec<(usize, usize)> = model
        .layers
        .iter()
        .filter_map(|(_, l)| match l {
            ModelLayer::Conv2D(c) => Some(c.strides),
            ModelLayer::Pooling2D(p) => Some(p.size),
            _ => None,
        })
        .collect();
    assert_eq!(convs, [(1, 1), (2, 2), (1, 1), (2, 2)]);
    // An image of another size no longer folds into the Reshape's target.
    let x = Tensor::zeros((1, 16, 9, 1), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.call(&x, None),
        Err(Error::Gru(GruError::Shape { .. }))
    ));
    // A rank-3 input to a 2-D layer is a typed error too.
    let x = Tensor::zeros((1, 15, 9), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.call(&x, None),
        Err(Error::Gru(GruError::Shape { .. }))
    ));
}

#[test]
fn conv1d_and_pooling_inputs_of_another_rank_are_shape_errors() {
    let file = data("pooling1d_training.keras");
    let model = KerasModel::load(&file, DType::F32, &Device::Cpu).unwrap();
    for dims in [vec![2, 33, 4, 1], vec![2, 33]] {
        let x = Tensor::zeros(dims.as_slice(), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            model.call(&x, None),
            Err(Error::Gru(GruError::Shape { .. }))
        ));
    }
    // Channels other than the kernel's.
    let x = Tensor::zeros((2, 33, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.call(&x, None),
        Err(Error::Gru(GruError::Shape { .. }))
    ));
}

/// Settings Conv2D and the poolings do not run here are refused by name.
#[test]
fn unsupported_settings_are_refused_by_name() {
    let config = KerasModel::archive_config(&data("conv2d_variants_gru.keras")).unwrap();
    let weights = data("conv2d_variants_gru.weights.h5");
    let refused = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut c = config.clone();
        edit(&mut c);
        match KerasModel::load_weights_h5(&c, &weights, DType::F32, &Device::Cpu) {
            Err(Error::File {
                problem: FileProblem::Unsupported(what),
                ..
            }) => assert!(what.contains(needle), "{what}"),
            other => panic!("expected a refusal naming {needle}, got {other:?}"),
        }
    };
    fn conv(c: &mut serde_json::Value) -> &mut serde_json::Value {
        &mut c["config"]["layers"][1]["config"]
    }
    fn pool(c: &mut serde_json::Value) -> &mut serde_json::Value {
        &mut c["config"]["layers"][3]["config"]
    }
    refused(
        &|c| conv(c)["data_format"] = "channels_first".into(),
        "channels_first",
    );
    refused(&|c| conv(c)["padding"] = "causal".into(), "causal");
    refused(&|c| conv(c)["groups"] = 3.into(), "groups");
    refused(
        &|c| conv(c)["strides"] = serde_json::json!([0, 1]),
        "strides",
    );
    refused(
        &|c| pool(c)["pool_size"] = serde_json::json!([2, 0]),
        "pool_size",
    );
}

#[test]
fn a_cnn_on_every_video_frame_gradients_match_keras() {
    check_gradients("time_distributed_conv2d_frames");
}
