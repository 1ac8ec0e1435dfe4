//! Keras' `MultiHeadAttention` over GRU sequences against Keras 3.15.1 (tests/data/models,
//! made by scripts/make_keras_mha_cases.py): the loss and every gradient of one call, the
//! mask Keras builds, and typed refusals.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasModel, ModelCall, ModelLayer};
use common::keras_cases::{case, check_gradients, data, inputs};
use common::{flat, max_diff};

#[test]
fn self_attention_gradients_match_keras() {
    check_gradients("gru_multi_head_self_attention");
}

#[test]
fn the_value_mask_keeps_padded_steps_out_of_the_attention() {
    let c = case("gru_multi_head_self_attention");
    let file = data("gru_multi_head_self_attention.keras");
    let m = KerasModel::load(&file, DType::F32, &Device::Cpu).unwrap();
    let x = inputs(&c);
    let out = |m: &KerasModel| flat(&m.call_inputs(&x, ModelCall::default()).unwrap().outputs[0]);
    let keras: Vec<f64> = c["expected"][0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(common::numbers)
        .collect();
    assert!(max_diff(&out(&m), &keras) < 1e-5);
    let Some((_, ModelLayer::MultiHeadAttention(a))) = m
        .layers
        .iter()
        .find(|(_, l)| matches!(l, ModelLayer::MultiHeadAttention(_)))
    else {
        panic!("a MultiHeadAttention layer");
    };
    assert_eq!((a.num_heads, a.key_dim, a.value_dim), (2, 3, 3));
    assert!(!a.explicit && !a.causal && !a.return_scores);
    // The case depends on the value mask: without it the valid queries see padded steps.
    let h = Tensor::randn(0f32, 1.0, (3, 7, 8), &Device::Cpu).unwrap();
    let mask = common::mask_rows(
        &[&[1; 7], &[1, 1, 1, 1, 0, 0, 0], &[1, 1, 0, 0, 0, 0, 0]],
        &Device::Cpu,
    );
    let xs = [h.clone(), h];
    let run = |masks: &[Option<Tensor>]| flat(&a.forward(&xs, masks, None, false).unwrap().0[0]);
    let masked = run(&[Some(mask.clone()), Some(mask.clone())]);
    let unmasked = run(&[Some(mask), None]);
    // Row 0 has no padding: equal; row 1's valid steps differ.
    assert_eq!(masked[..56], unmasked[..56]);
    assert!(max_diff(&masked[56..56 + 32], &unmasked[56..56 + 32]) > 1e-3);
}
