//! Dropout in training, tested statistically (Keras' outputs there are random): masks drawn
//! once per call and shared by every timestep, inverted scaling, seeded, one mask per gate
//! with implementation 1, no effect with training=false.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::core::{Implementation, Initializer};
use candle_gru::{CallOptions, Gru, GruConfig};

fn base(units: usize) -> GruConfig {
    let mut c = GruConfig::new(units);
    c.return_sequences = true;
    c.kernel_initializer =
        Initializer::preset(candle_gru::core::ScalingPreset::GlorotUniform, Some(11));
    c.recurrent_initializer = Initializer::Orthogonal {
        gain: 1.0.into(),
        seed: Some(12),
    };
    // A nonzero bias: with zero bias and zero state, a dropped candidate input gives
    // tanh(0) = 0 forever, which would hide the other gates' masks.
    c.bias_initializer = Initializer::Constant { value: 0.3.into() };
    c
}

/// Builds a layer from a config, with the same weights for every config of a test.
fn layer(c: GruConfig, input_dim: usize) -> Gru {
    common::initialized(c, input_dim, DType::F64)
}

fn seq(g: &Gru, x: &Tensor, training: bool) -> Vec<Vec<Vec<f64>>> {
    g.call(
        x,
        CallOptions {
            training,
            ..Default::default()
        },
    )
    .unwrap()
    .output
    .to_vec3()
    .unwrap()
}

fn same(a: &[Vec<f64>], b: &[Vec<f64>]) -> bool {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .all(|(x, y)| (x - y).abs() < 1e-12)
}

#[test]
fn input_mask_is_shared_over_time_and_inverted() {
    let (b, t, rate, c) = (400, 8, 0.3, 0.7);
    let mut cfg = base(2);
    cfg.dropout = rate;
    cfg.seed = Some(5);
    let g = layer(cfg.clone(), 1);
    let reference = layer(base(2), 1);
    let x = Tensor::full(c, (b, t, 1), &Device::Cpu).unwrap();
    let got = seq(&g, &x, true);
    let dropped = seq(&reference, &x.zeros_like().unwrap(), false);
    let kept = seq(
        &reference,
        &(x.clone() * (1.0 / (1.0 - rate))).unwrap(),
        false,
    );
    let mut n_dropped = 0;
    for row in 0..b {
        if same(&got[row], &dropped[row]) {
            n_dropped += 1;
        } else {
            // Kept inputs are scaled by 1/(1-rate) at every timestep of the row.
            assert!(
                same(&got[row], &kept[row]),
                "row {row} mixes masks across timesteps"
            );
        }
    }
    // Binomial(400, 0.3): mean 120, sd 9.2.
    assert!((80..=160).contains(&n_dropped), "{n_dropped} rows dropped");
}

#[test]
fn implementation_1_draws_one_mask_per_gate() {
    let (b, t, rate, c) = (200, 4, 0.5, 0.9);
    let mut cfg = base(2);
    cfg.dropout = rate;
    cfg.implementation = Implementation::One;
    cfg.seed = Some(3);
    let g = layer(cfg, 1);
    let reference = layer(base(2), 1);
    let x = Tensor::full(c, (b, t, 1), &Device::Cpu).unwrap();
    let got = seq(&g, &x, true);
    let dropped = seq(&reference, &x.zeros_like().unwrap(), false);
    let kept = seq(&reference, &(x.clone() * 2.0).unwrap(), false);
    // Three independent per-gate masks: a row keeps all or drops all gates with probability
    // 1/4, so about 150 of 200 rows match neither reference (sd 6.1). With one shared mask
    // (implementation 2) none would.
    let mixed = (0..b)
        .filter(|&r| !same(&got[r], &dropped[r]) && !same(&got[r], &kept[r]))
        .count();
    assert!(
        (120..=180).contains(&mixed),
        "{mixed} of {b} rows mix gates"
    );
}

#[test]
fn seeds_reproduce_and_calls_draw_new_masks() {
    let mut cfg = base(4);
    cfg.dropout = 0.4;
    cfg.recurrent_dropout = 0.3;
    cfg.seed = Some(99);
    let x = Tensor::randn(0f64, 1.0, (3, 6, 5), &Device::Cpu).unwrap();
    let a = layer(cfg.clone(), 5);
    let b = layer(cfg.clone(), 5);
    let first = seq(&a, &x, true);
    assert_eq!(first, seq(&b, &x, true), "same seed, same masks");
    assert_ne!(first, seq(&a, &x, true), "a new call draws new masks");
    cfg.seed = Some(100);
    assert_ne!(
        first,
        seq(&layer(cfg, 5), &x, true),
        "another seed, other masks"
    );
}

#[test]
fn no_effect_when_not_training() {
    let mut cfg = base(4);
    cfg.dropout = 0.5;
    cfg.recurrent_dropout = 0.5;
    let x = Tensor::randn(0f64, 1.0, (3, 6, 5), &Device::Cpu).unwrap();
    let with = seq(&layer(cfg.clone(), 5), &x, false);
    let without = seq(&layer(base(4), 5), &x, false);
    // Implementation 1 (per-gate matmuls) differs from the fused one only by rounding.
    assert!(with
        .iter()
        .flatten()
        .flatten()
        .zip(without.iter().flatten().flatten())
        .all(|(a, b)| (a - b).abs() < 1e-14));
    // And training=true does change the output.
    assert_ne!(seq(&layer(cfg, 5), &x, true), without);
}

#[test]
fn recurrent_dropout_trains_with_gradients() {
    let mut cfg = base(3);
    cfg.recurrent_dropout = 0.5;
    cfg.reset_after = false;
    let vm = candle_nn::VarMap::new();
    let g = Gru::new(
        cfg,
        2,
        candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 5, 2), &Device::Cpu).unwrap();
    let out = g
        .call(
            &x,
            CallOptions {
                training: true,
                ..Default::default()
            },
        )
        .unwrap();
    let grads = out.output.sum_all().unwrap().backward().unwrap();
    let gk = grads
        .get(g.recurrent_kernel())
        .expect("gradient reaches the recurrent kernel");
    assert!(
        gk.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}
