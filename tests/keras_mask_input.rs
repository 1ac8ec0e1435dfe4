//! Masks that come in as model inputs, against Keras 3.15.1 (tests/data/models, made by
//! scripts/make_keras_mask_input_cases.py): keras.io's video classifier (frame features and
//! a boolean frame mask in, `GRU(...)(x, mask=mask_input)`) and one boolean input handed to
//! a Bidirectional GRU, an attention layer, a pooling and a go_backwards GRU: outputs,
//! Keras' loss and every gradient; the classifier as tf_keras 2.21.0 wrote it (the mask
//! argument in Keras 2's form); the mask in any dtype; what a mask hides cannot change
//! the outputs; a mask of the wrong shape is a typed error.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasModel, ModelCall};
use candle_gru::candle::Error;
use candle_gru::GruError;
use common::keras_cases::{case, check_gradients, data, inputs};
use common::{flat, max_diff};

#[test]
fn video_classifier_gradients_match_keras() {
    check_gradients("video_classifier_mask_input");
}

#[test]
fn one_mask_input_everywhere_gradients_match_keras() {
    check_gradients("mask_input_everywhere");
}

/// The cases and the file each is read from (the tf_keras twin from its Keras 2 `.h5`).
const CASES: [(&str, &str); 3] = [
    ("video_classifier_mask_input", "keras"),
    ("mask_input_everywhere", "keras"),
    ("keras2_video_classifier_mask_input", "h5"),
];

fn load(name: &str, ext: &str) -> KerasModel {
    KerasModel::load(&data(&format!("{name}.{ext}")), DType::F32, &Device::Cpu).unwrap()
}

fn run(model: &KerasModel, x: &Tensor, mask: &Tensor) -> Vec<f64> {
    let out = model.call_inputs(&[x.clone(), mask.clone()], ModelCall::default());
    flat(&out.unwrap().outputs[0])
}

/// The mask as u8 (Keras' bool), i64 or f32 0/1 gives Keras' outputs; the frames it hides
/// can hold anything; without it (every frame kept) the outputs are others.
#[test]
fn the_mask_input_in_any_dtype_hides_its_frames() {
    for (name, ext) in CASES {
        let c = case(name);
        let model = load(name, ext);
        let all = inputs(&c);
        let (x, mask) = (&all[0], &all[1]);
        let keras = gru_support::golden::Array::from_json(&c["expected"][0])
            .unwrap()
            .data;
        for dtype in [DType::U8, DType::I64, DType::F32] {
            let got = run(&model, x, &mask.to_dtype(dtype).unwrap());
            assert!(max_diff(&got, &keras) < 2e-7, "{name} {dtype:?}");
        }
        let hidden = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let noise = Tensor::randn(0f32, 3.0, x.shape(), &Device::Cpu).unwrap();
        let scribbled = (x + noise.broadcast_mul(&(1.0 - &hidden).unwrap()).unwrap()).unwrap();
        let got = run(&model, &scribbled, mask);
        assert!(
            max_diff(&got, &keras) < 2e-7,
            "{name}: hidden frames changed the outputs"
        );
        let every = Tensor::ones(mask.shape(), DType::U8, &Device::Cpu).unwrap();
        let unmasked = run(&model, &scribbled, &every);
        assert!(
            max_diff(&unmasked, &keras) > 1e-3,
            "{name}: the mask did nothing"
        );
    }
}

#[test]
fn a_mask_input_of_the_wrong_shape_is_a_typed_error() {
    let name = "video_classifier_mask_input";
    let model = load(name, "keras");
    let all = inputs(&case(name));
    let x = &all[0];
    let (b, t) = (x.dim(0).unwrap(), x.dim(1).unwrap());
    for shape in [vec![b, t + 1], vec![b + 1, t], vec![b, t, 1]] {
        let mask = Tensor::ones(shape.as_slice(), DType::U8, &Device::Cpu).unwrap();
        let r = model.call_inputs(&[x.clone(), mask], ModelCall::default());
        assert!(
            matches!(&r, Err(Error::Gru(GruError::Shape { what, .. })) if what == "mask"),
            "{shape:?}: {:?}",
            r.err()
        );
    }
}
