//! The numbers of Keras' own `keras/src/layers/rnn/gru_test.py`, literally: kernel
//! Constant(0.01), recurrent_kernel Constant(0.02), bias Constant(0.03).

mod common;

use candle_core::{DType, Device, Module, Tensor};
use candle_gru::core::{Initializer, Num};
use candle_gru::{CallOptions, Gru, GruConfig};

const TOL: f64 = 1e-6;

fn config(units: usize) -> GruConfig {
    let mut c = GruConfig::new(units);
    c.kernel_initializer = Initializer::Constant {
        value: Num::Float(0.01),
    };
    c.recurrent_initializer = Initializer::Constant {
        value: Num::Float(0.02),
    };
    c.bias_initializer = Initializer::Constant {
        value: Num::Float(0.03),
    };
    c
}

fn layer(c: GruConfig, input_dim: usize) -> Gru {
    common::initialized(c, input_dim, DType::F32)
}

fn arange(n: usize, shape: &[usize]) -> Tensor {
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .reshape(shape)
        .unwrap()
}

fn assert_close(got: &Tensor, want: &[Vec<f32>]) {
    let got: Vec<Vec<f32>> = got.to_vec2().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            assert!(
                ((a - b).abs() as f64) <= TOL + TOL * b.abs() as f64,
                "{got:?} vs {want:?}"
            );
        }
    }
}

fn rows(vals: &[f32], width: usize) -> Vec<Vec<f32>> {
    vals.iter().map(|v| vec![*v; width]).collect()
}

#[test]
fn correctness_default_go_backwards_unroll_reset_before_no_bias() {
    let x = arange(72, &[3, 6, 4]);
    let out = layer(config(3), 4).forward(&x).unwrap();
    assert_close(&out, &rows(&[0.5217289, 0.6371659, 0.39384964], 3));

    let mut c = config(3);
    c.go_backwards = true;
    assert_close(
        &layer(c, 4).forward(&x).unwrap(),
        &rows(&[0.24406259, 0.611516, 0.3928808], 3),
    );

    let mut c = config(3);
    c.unroll = true;
    assert_close(
        &layer(c, 4).forward(&x).unwrap(),
        &rows(&[0.5217289, 0.6371659, 0.39384964], 3),
    );

    let mut c = config(3);
    c.reset_after = false;
    assert_close(
        &layer(c, 4).forward(&x).unwrap(),
        &rows(&[0.51447755, 0.6426879, 0.40208298], 3),
    );

    let mut c = config(3);
    c.use_bias = false;
    assert_close(
        &layer(c, 4).forward(&x).unwrap(),
        &rows(&[0.49988455, 0.64701194, 0.4103359], 3),
    );
}

#[test]
fn legacy_implementation_zero_gives_the_default_result() {
    let mut json = config(3).to_keras_json();
    json["implementation"] = serde_json::json!(0);
    let mut c = GruConfig::from_keras_json(&json).unwrap();
    c.kernel_initializer = Initializer::Constant {
        value: Num::Float(0.01),
    };
    let x = arange(72, &[3, 6, 4]);
    assert_close(
        &layer(c, 4).forward(&x).unwrap(),
        &rows(&[0.5217289, 0.6371659, 0.39384964], 3),
    );
}

#[test]
fn statefulness_and_reset_states() {
    let x = arange(24, &[2, 3, 4]);
    let mut c = config(4);
    c.stateful = true;
    let gru = layer(c, 4);
    let want = rows(&[0.29542392, 0.5885018], 4);
    gru.forward(&x).unwrap();
    assert_close(&gru.forward(&x).unwrap(), &want);
    gru.reset_states();
    gru.forward(&x).unwrap();
    assert_close(&gru.forward(&x).unwrap(), &want);
}

#[test]
fn pass_initial_state() {
    let x = arange(24, &[2, 4, 3]);
    let h0 = arange(4, &[2, 2]);
    let opts = CallOptions {
        initial_state: Some(&h0),
        ..Default::default()
    };
    let out = layer(config(2), 3).call(&x, opts).unwrap();
    assert_close(
        &out.output,
        &[vec![0.23774096, 0.33508456], vec![0.83659905, 1.0227708]],
    );

    let mut c = config(2);
    c.go_backwards = true;
    let out = layer(c, 3).call(&x, opts).unwrap();
    assert_close(
        &out.output,
        &[vec![0.13486053, 0.23261218], vec![0.78257304, 0.9691353]],
    );

    let mut c = config(2);
    c.return_state = true;
    let out = layer(c, 3).call(&x, opts).unwrap();
    let state = out.state.unwrap();
    assert_eq!(
        out.output.to_vec2::<f32>().unwrap(),
        state.to_vec2::<f32>().unwrap()
    );
}

#[test]
fn masking() {
    let x = arange(24, &[2, 4, 3]);
    let mask = Tensor::new(&[[1u8, 1, 0, 1], [1, 0, 0, 1]], &Device::Cpu).unwrap();
    let opts = CallOptions {
        mask: Some(&mask),
        ..Default::default()
    };

    let mut c = config(2);
    c.unroll = true;
    assert_close(
        &layer(c, 3).call(&x, opts).unwrap().output,
        &rows(&[0.19393763, 0.30818558], 2),
    );

    let mut c = config(2);
    c.return_sequences = true;
    let seq = layer(c, 3).call(&x, opts).unwrap().output;
    assert_close(
        &seq.get(0).unwrap(),
        &rows(&[0.03606692, 0.09497581, 0.09497581, 0.19393763], 2),
    );
    assert_close(
        &seq.get(1).unwrap(),
        &rows(&[0.16051409, 0.16051409, 0.16051409, 0.30818558], 2),
    );

    let mut c = config(2);
    c.return_sequences = true;
    c.zero_output_for_mask = true;
    let seq = layer(c, 3).call(&x, opts).unwrap().output;
    assert_close(
        &seq.get(0).unwrap(),
        &rows(&[0.03606692, 0.09497581, 0.0, 0.19393763], 2),
    );
    assert_close(
        &seq.get(1).unwrap(),
        &rows(&[0.16051409, 0.0, 0.0, 0.30818558], 2),
    );

    let mut c = config(2);
    c.go_backwards = true;
    assert_close(
        &layer(c, 3).call(&x, opts).unwrap().output,
        &rows(&[0.11669192, 0.28380975], 2),
    );
}
