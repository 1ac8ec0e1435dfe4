//! The cuDNN path's Candle plumbing, checked on the CPU: for every mask kind, with and
//! without go_backwards and zero_output_for_mask, "scan the mask, compact the valid steps to
//! the front, run forward over right-padded rows, expand to Keras' output rule" gives the
//! loop's outputs, state and gradients. This is exactly what `gru_cudnn::keras_call::forward` does
//! around the cuDNN op, with the loop standing in for cuDNN (which only sees right-padded
//! rows); the GPU tests check the op itself and the device scan.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::paths::op_loop;
use candle_gru::candle::sequence::{CallContext, CellWeights, DropoutMasks};
use candle_gru::cudnn::MaskScan;
use candle_gru::GruConfig;
use common::{flat, max_diff};

const B: usize = 4;
const T: usize = 6;
const F: usize = 3;
const U: usize = 2;

fn var(n: usize, shape: &[usize], seed: f64) -> Var {
    let v: Vec<f64> = (0..n)
        .map(|k| ((k as f64) * 0.37 + seed).sin() * 0.8)
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

fn masks() -> Vec<(&'static str, Vec<bool>)> {
    let rows = |r: [[u8; T]; B]| -> Vec<bool> { r.iter().flatten().map(|&v| v != 0).collect() };
    vec![
        ("all valid", vec![true; B * T]),
        (
            "right-padded",
            rows([
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 0, 0, 0],
                [1, 0, 0, 0, 0, 0],
                [1, 1, 1, 1, 1, 0],
            ]),
        ),
        (
            "left-padded",
            rows([
                [0, 0, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [0, 0, 0, 0, 0, 1],
                [0, 1, 1, 1, 1, 1],
            ]),
        ),
        (
            "holes",
            rows([
                [1, 0, 1, 0, 1, 0],
                [0, 1, 1, 0, 0, 1],
                [1, 1, 0, 1, 1, 1],
                [0, 0, 1, 0, 0, 0],
            ]),
        ),
    ]
}

struct Run {
    outputs: Vec<Vec<f64>>,
    grads: Vec<Vec<f64>>,
}

fn weights(vars: &[Var]) -> CellWeights<'_> {
    CellWeights {
        kernel: vars[2].as_tensor(),
        recurrent_kernel: vars[3].as_tensor(),
        input_bias: Some(vars[4].as_tensor().get(0).unwrap()),
        recurrent_bias: Some(vars[4].as_tensor().get(1).unwrap()),
    }
}

fn loss_and_grads(seq: &Tensor, last: &Tensor, state: &Tensor, vars: &[Var]) -> Run {
    let c1 = Tensor::arange(0f64, (B * T * U) as f64, &Device::Cpu)
        .unwrap()
        .reshape((B, T, U))
        .unwrap()
        .affine(0.01, -0.3)
        .unwrap();
    let loss = ((seq * &c1).unwrap().sum_all().unwrap()
        + (state * 0.7).unwrap().sum_all().unwrap()
        + (last * -1.3).unwrap().sum_all().unwrap())
    .unwrap();
    let g = loss.backward().unwrap();
    Run {
        outputs: vec![flat(seq), flat(last), flat(state)],
        grads: vars
            .iter()
            .map(|v| flat(g.get(v.as_tensor()).unwrap()))
            .collect(),
    }
}

#[test]
fn compaction_around_a_right_padded_forward_is_the_loop() {
    let vars = [
        var(B * T * F, &[B, T, F], 0.1),
        var(B * U, &[B, U], 0.7),
        var(F * 3 * U, &[F, 3 * U], 1.3),
        var(U * 3 * U, &[U, 3 * U], 2.9),
        var(2 * 3 * U, &[2, 3 * U], 4.1),
    ];
    let (x, h0) = (vars[0].as_tensor(), vars[1].as_tensor());
    let mut checked = 0;
    for (name, mask) in masks() {
        let mask_t = Tensor::from_vec(
            mask.iter().map(|&m| m as u8).collect::<Vec<u8>>(),
            (B, T),
            &Device::Cpu,
        )
        .unwrap();
        for go_backwards in [false, true] {
            for zero_output_for_mask in [false, true] {
                let mut cfg = GruConfig::new(U);
                cfg.go_backwards = go_backwards;
                cfg.zero_output_for_mask = zero_output_for_mask;
                let none = DropoutMasks::default();
                let ctx = |config, x, mask| CallContext {
                    config,
                    x,
                    h0,
                    mask,
                    dropout: &none,
                    training: false,
                };
                let reference =
                    op_loop::run(&ctx(&cfg, x, Some(&mask_t)), &weights(&vars)).unwrap();
                let want = loss_and_grads(
                    &reference.sequence,
                    &reference.last_output,
                    &reference.state,
                    &vars,
                );

                let scan = MaskScan::on_host(
                    &mask,
                    B,
                    T,
                    go_backwards,
                    zero_output_for_mask,
                    &Device::Cpu,
                )
                .unwrap();
                assert_eq!(scan.first_empty, None);
                // What cuDNN sees: compacted rows, right-padded to their lengths, forward.
                let right: Vec<u8> = scan
                    .lengths
                    .iter()
                    .flat_map(|&l| (0..T as i32).map(move |t| (t < l) as u8))
                    .collect();
                let right = Tensor::from_vec(right, (B, T), &Device::Cpu).unwrap();
                let xc = scan.compact(x).unwrap();
                let forward = GruConfig::new(U);
                let inner =
                    op_loop::run(&ctx(&forward, &xc, Some(&right)), &weights(&vars)).unwrap();
                let seq = scan.expand(&inner.sequence).unwrap();
                let last = seq.narrow(1, T - 1, 1).unwrap().squeeze(1).unwrap();
                let got = loss_and_grads(&seq, &last, &inner.state, &vars);

                for (k, (a, b)) in want.outputs.iter().zip(&got.outputs).enumerate() {
                    let d = max_diff(a, b);
                    assert!(
                        d < 1e-12,
                        "{name} go_backwards={go_backwards} zero={zero_output_for_mask} \
                         output {k}: {d}"
                    );
                }
                for (k, (a, b)) in want.grads.iter().zip(&got.grads).enumerate() {
                    let d = max_diff(a, b);
                    assert!(
                        d < 1e-12,
                        "{name} go_backwards={go_backwards} zero={zero_output_for_mask} \
                         gradient {k}: {d}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16);
}

#[test]
fn scan_reports_rows_and_lengths() {
    let mask = [
        true, true, false, // right-padded, length 2
        false, true, true, // left-padded
        false, false, false, // empty
    ];
    let scan = MaskScan::on_host(&mask, 3, 3, false, false, &Device::Cpu).unwrap();
    assert_eq!(scan.lengths, [2, 2, 0]);
    assert_eq!(scan.first_not_right_padded, Some(1));
    assert_eq!(scan.first_empty, Some(2));
    assert_eq!(
        scan.facts(),
        candle_gru::core::MaskFacts::EmptyRow { row: 2 }
    );
    assert_eq!(scan.dev_lengths.to_vec1::<i32>().unwrap(), [2, 2, 0]);
    assert_eq!(scan.dev_lengths.dtype(), DType::I32);
    // go_backwards compacts in processing order: row 1's steps 2 then 1.
    let x = Tensor::arange(0f64, 9.0, &Device::Cpu)
        .unwrap()
        .reshape((3, 3, 1))
        .unwrap();
    let back = MaskScan::on_host(&mask, 3, 3, true, false, &Device::Cpu).unwrap();
    assert_eq!(
        flat(&back.compact(&x).unwrap()),
        [1., 0., 0., 5., 4., 0., 0., 0., 0.]
    );
}
