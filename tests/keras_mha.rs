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

/// Keras keeps masks on tensor objects and MultiHeadAttention clears the masks of the
/// tensors it takes. Keras runs the second attention layer of this case first (its run
/// order), so the first one sees the GRU's sequence without a mask: its output is the
/// unmasked attention, the second's the masked one (both checked against Keras by the
/// model case; here against the layers run by hand).
#[test]
fn an_attention_layer_sees_no_mask_after_another_took_the_same_tensor() {
    let c = case("gru_multi_head_padded_queries");
    let file = data("gru_multi_head_padded_queries.keras");
    let m = KerasModel::load(&file, DType::F32, &Device::Cpu).unwrap();
    let x = inputs(&c);
    let outs = m.call_inputs(&x, ModelCall::default()).unwrap().outputs;
    let mha: Vec<_> = m
        .layers
        .iter()
        .filter_map(|(_, l)| match l {
            ModelLayer::MultiHeadAttention(a) => Some(a),
            _ => None,
        })
        .collect();
    let gru = m
        .layers
        .iter()
        .find_map(|(_, l)| match l {
            ModelLayer::Gru(g) => Some(g),
            _ => None,
        })
        .unwrap();
    let mask = x[0]
        .ne(0f64)
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .squeeze(2)
        .unwrap();
    let opts = candle_gru::CallOptions {
        mask: Some(&mask),
        initial_state: None,
        training: false,
    };
    let h = gru.call(&x[0], opts).unwrap().output;
    let attend = |a: &candle_gru::candle::io::keras::MultiHeadAttention, masked: bool| {
        let m = masked.then(|| mask.clone());
        let xs = [h.clone(), h.clone()];
        flat(&a.forward(&xs, &[m.clone(), m], None, false).unwrap().0[0])
    };
    assert!(!mha[0].explicit && mha[1].explicit);
    assert!(max_diff(&flat(&outs[0]), &attend(mha[0], false)) < 1e-6);
    assert!(max_diff(&flat(&outs[1]), &attend(mha[1], true)) < 1e-6);
    assert!(max_diff(&flat(&outs[0]), &attend(mha[0], true)) > 1e-2);
}
