//! The step sequence on the host backend (the CUDA C kernels built as C++) against the
//! fused CPU kernels (`seq`), which every golden case checks against Keras: outputs and
//! every gradient, over both reset forms, activations, masks, go_backwards,
//! zero_output_for_mask, ONNX's clip, and recurrent dropout masks; and the kernels'
//! activations against `Activation`'s definitions.

use super::host::{kernel_activation, kernel_derivative, Host};
use super::{activation_code, backward, forward, StepInputs};
use crate::activation::Activation;
use crate::seq::{self, SeqInputs, SeqSpec, SeqWeights, Threads};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn vals(rng: &mut StdRng, n: usize, s: f64) -> Vec<f64> {
    (0..n)
        .map(|_| s * (rng.random::<f64>() * 2.0 - 1.0))
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
        )
}

fn spec(
    reset_after: bool,
    act: Activation,
    ract: Activation,
    gb: bool,
    zero: bool,
    clip: Option<f64>,
) -> SeqSpec {
    SeqSpec {
        batch: 3,
        time: 6,
        input: 4,
        units: 5,
        activation: act,
        recurrent_activation: ract,
        reset_after,
        use_bias: true,
        go_backwards: gb,
        zero_output_for_mask: zero,
        threads: Threads::ONE,
        clip,
        wanted: Default::default(),
    }
}

/// Runs one configuration both ways and compares everything.
fn compare(seed: u64, spec: SeqSpec, masked: bool, rec_masks: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (b, t, i, u) = (spec.batch, spec.time, spec.input, spec.units);
    let kernel = vals(&mut rng, i * 3 * u, 0.6);
    let recurrent = vals(&mut rng, u * 3 * u, 0.6);
    let bias = vals(&mut rng, spec.bias_rows() * 3 * u, 0.3);
    let x = vals(&mut rng, b * t * i, 1.0);
    let h0 = vals(&mut rng, b * u, 0.5);
    let mask: Option<Vec<u8>> = masked.then(|| {
        (0..b * t)
            .map(|k| !(k * 7 + seed as usize).is_multiple_of(3) as u8)
            .collect()
    });
    let rmasks: Vec<Vec<f64>> = match rec_masks {
        true => (0..3)
            .map(|_| {
                (0..b * u)
                    .map(|_| {
                        if rng.random::<f64>() < 0.3 {
                            0.0
                        } else {
                            1.0 / 0.7
                        }
                    })
                    .collect()
            })
            .collect(),
        false => vec![],
    };
    let (d_seq, d_state) = (vals(&mut rng, b * t * u, 1.0), vals(&mut rng, b * u, 1.0));
    // The reference: the fused CPU kernels.
    let w = SeqWeights {
        kernel: &kernel,
        recurrent: &recurrent,
        bias: &bias,
    };
    let sin = SeqInputs {
        x: &x,
        h0: &h0,
        mask: mask.as_deref(),
        input_masks: &[],
        recurrent_masks: &rmasks,
    };
    let (want, saved) = seq::forward(&spec, &w, &sin, true).unwrap();
    let wg = seq::backward(&spec, &w, &sin, &saved.unwrap(), &d_seq, &d_state).unwrap();
    // The step sequence: xp = x @ W + b_in computed here, as the op's caller does.
    let mut xp = vec![0.0; b * t * 3 * u];
    for (r, row) in xp.chunks_mut(3 * u).enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = bias[c]
                + (0..i)
                    .map(|k| x[r * i + k] * kernel[k * 3 * u + c])
                    .sum::<f64>();
        }
    }
    let mut params = recurrent.clone();
    if spec.reset_after {
        params.extend_from_slice(&bias[3 * u..]);
    }
    let rm: Vec<f64> = rmasks.concat();
    let be = Host::<f64>::new();
    let inp = StepInputs::<Host<f64>> {
        xp: &xp,
        h0: &h0,
        params: &params,
        rec_bias: spec.reset_after,
        mask: mask.as_ref(),
        rec_masks: rec_masks.then_some(&rm),
    };
    let got = forward(&be, &spec, &inp, true).unwrap();
    let label = format!("seed {seed} {spec:?} masked={masked} rec_masks={rec_masks}");
    assert!(
        max_diff(&got.sequence, &want.sequence) < 1e-12,
        "{label}: sequence"
    );
    assert!(max_diff(&got.state, &want.state) < 1e-12, "{label}: state");
    let g = backward(&be, &spec, &inp, &got.saved.unwrap(), &d_seq, &d_state).unwrap();
    assert!(max_diff(&g.h0, &wg.h0) < 1e-12, "{label}: d h0");
    assert!(
        max_diff(&g.params[..3 * u * u], &wg.recurrent) < 1e-12,
        "{label}: d U"
    );
    if spec.reset_after {
        assert!(
            max_diff(&g.params[3 * u * u..], &wg.bias[3 * u..]) < 1e-12,
            "{label}: d b_rec"
        );
    }
    // dx = dxp @ W^T and dW = x^T @ dxp: the input side the op's caller differentiates.
    let dx: Vec<f64> = (0..b * t * i)
        .map(|n| {
            (0..3 * u)
                .map(|c| g.xp[(n / i) * 3 * u + c] * kernel[(n % i) * 3 * u + c])
                .sum()
        })
        .collect();
    assert!(max_diff(&dx, &wg.x) < 1e-12, "{label}: d x");
    let dw: Vec<f64> = (0..i * 3 * u)
        .map(|n| {
            (0..b * t)
                .map(|r| x[r * i + n / (3 * u)] * g.xp[r * 3 * u + n % (3 * u)])
                .sum()
        })
        .collect();
    assert!(max_diff(&dw, &wg.kernel) < 1e-12, "{label}: d kernel");
}

#[test]
fn the_step_sequence_on_the_host_equals_the_fused_cpu_kernels() {
    use Activation::*;
    let onnx = crate::activation::onnx::from_onnx(&["HardSigmoid", "ScaledTanh"], &[0.3], &[0.45])
        .unwrap();
    let mut seed = 0;
    for reset_after in [true, false] {
        for (act, ract) in [
            (Tanh, Sigmoid),
            (Selu, Softplus),
            (Mish, HardSigmoid),
            (onnx[1], onnx[0]),
        ] {
            for (gb, zero, masked, rec) in [
                (false, false, false, false),
                (true, false, true, false),
                (false, true, true, true),
                (true, true, true, true),
            ] {
                seed += 1;
                compare(
                    seed,
                    spec(reset_after, act, ract, gb, zero, None),
                    masked,
                    rec,
                );
            }
        }
        seed += 1;
        compare(
            seed,
            spec(reset_after, Tanh, Sigmoid, true, false, Some(0.4)),
            true,
            true,
        );
    }
}

#[test]
fn the_kernels_activations_are_the_core_definitions() {
    let onnx = crate::activation::onnx::from_onnx(
        &[
            "Affine",
            "LeakyRelu",
            "ThresholdedRelu",
            "ScaledTanh",
            "HardSigmoid",
            "Elu",
        ],
        &[0.7, 0.05, 0.3, 1.3, 0.25, 0.9],
        &[0.2, 0.8, 0.45],
    )
    .unwrap();
    for act in Activation::ALL.into_iter().chain(onnx) {
        let (code, alpha, beta) = activation_code(act);
        for k in -40..=40 {
            let x = k as f64 * 0.173 + 0.0123;
            let y = kernel_activation(code, x, alpha as f64, beta as f64);
            assert!(
                (y - act.apply(x)).abs() <= 1e-13 * (1.0 + y.abs()),
                "{} at {x}",
                act.name()
            );
            let d = kernel_derivative(code, x, y, alpha as f64, beta as f64);
            let want = act.derivative(x);
            assert!(
                (d - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "{}' at {x}: {d} vs {want}",
                act.name()
            );
        }
    }
}
