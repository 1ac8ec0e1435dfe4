//! The fused step-kernel path on a target: the CUDA backend on a GPU, the host backend (the
//! same CUDA C compiled as C++) on the CPU. The reference is the op-by-op loop on the same
//! device with the same weights and the same dropout masks.

use super::{masks, memory_steady_with};
use crate::common::target::Target;
use crate::common::{mask_rows, max_diff, tensor};
use crate::suite::calls::{run_call, Outcome};
use candle_core::{DType, Var};
use candle_gru::core::Activation;
use candle_gru::{CallOptions, ExecPath, GruConfig, GruError};
use std::time::Duration;

/// A configuration of the comparison: what it changes from the default layer.
struct Variant {
    name: &'static str,
    apply: fn(&mut GruConfig),
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "default",
            apply: |_| {},
        },
        Variant {
            name: "reset_before",
            apply: |c| c.reset_after = false,
        },
        Variant {
            name: "relu/hard_sigmoid reset_before",
            apply: |c| {
                c.reset_after = false;
                c.activation = Activation::Relu;
                c.recurrent_activation = Activation::HardSigmoid;
            },
        },
        Variant {
            name: "gelu/sigmoid no bias",
            apply: |c| {
                c.activation = Activation::Gelu;
                c.use_bias = false;
            },
        },
        Variant {
            name: "no bias reset_before",
            apply: |c| {
                c.use_bias = false;
                c.reset_after = false;
            },
        },
        Variant {
            name: "dropout 0.3 recurrent 0.25",
            apply: |c| {
                c.dropout = 0.3;
                c.recurrent_dropout = 0.25;
                c.seed = Some(11);
            },
        },
        Variant {
            name: "dropout + recurrent reset_before",
            apply: |c| {
                c.reset_after = false;
                c.dropout = 0.2;
                c.recurrent_dropout = 0.4;
                c.seed = Some(12);
            },
        },
        Variant {
            name: "cell clip 0.3",
            apply: |c| c.cell_clip = Some(0.3),
        },
        Variant {
            name: "softsign/hard_sigmoid",
            apply: |c| {
                c.activation = Activation::Softsign;
                c.recurrent_activation = Activation::HardSigmoid;
            },
        },
        Variant {
            name: "elu/sigmoid reset_before",
            apply: |c| {
                c.activation = Activation::Elu;
                c.reset_after = false;
            },
        },
    ]
}

/// The step kernels equal the loop on every variant x mask kind (with an all-False row
/// added) x go_backwards x zero_output_for_mask, training and not: outputs and the gradients
/// of inputs, initial state and the three weights; f64 within 1e-10, f32 within 2e-5
/// (gradients 2e-4).
pub fn step_kernels_match_the_loop(target: &Target) {
    let (b, t, f, u) = (4, 7, 5, 6);
    let dev = &target.dev;
    let mut mask_kinds = masks(dev);
    let empty: [&[u8]; 4] = [
        &[1, 1, 1, 0, 0, 0, 0],
        &[0, 0, 0, 0, 0, 0, 0],
        &[0, 1, 0, 1, 1, 0, 1],
        &[1, 1, 1, 1, 1, 1, 1],
    ];
    mask_kinds.push(("all-False row", Some(mask_rows(&empty, dev))));
    let mut n = 0;
    for dtype in [DType::F64, DType::F32] {
        let x = tensor(&[b, t, f], 0.3, dtype, dev);
        let h0 = tensor(&[b, u], 2.2, dtype, dev);
        let (out_tol, grad_tol) = match dtype {
            DType::F64 => (1e-10, 1e-10),
            _ => (2e-5, 2e-4),
        };
        for (vi, v) in variants().iter().enumerate() {
            for (fi, (go_backwards, zero, training)) in super::flags3().into_iter().enumerate() {
                for (k, (mask_name, mask)) in mask_kinds.iter().enumerate() {
                    // Every mask kind with every flag for the default; each other variant
                    // with one mask kind per flag combination, rotating.
                    if vi != 0 && k != (fi + vi) % mask_kinds.len() {
                        continue;
                    }
                    let mut cfg = GruConfig::new(u);
                    cfg.return_sequences = true;
                    cfg.return_state = true;
                    cfg.go_backwards = go_backwards;
                    cfg.zero_output_for_mask = zero;
                    (v.apply)(&mut cfg);
                    let label = format!(
                        "{dtype:?} {} {mask_name} go_backwards={go_backwards} zero={zero} \
                         training={training}",
                        v.name
                    );
                    let call = |g: &candle_gru::Gru| run_call(g, &x, mask.as_ref(), &h0, training);
                    let step: Outcome = call(&target.step_layer(&cfg, f, dtype));
                    let reference = call(&target.loop_layer(&cfg, f, dtype));
                    assert_eq!(step.path, target.step_path(dtype), "{label}");
                    assert_eq!(reference.path, ExecPath::Loop, "{label}");
                    step.assert_close(&reference, out_tol, grad_tol, &label);
                    n += 1;
                }
            }
        }
    }
    println!(
        "step kernels on {:?} == loop in {n} calls (outputs, 5 gradients each)",
        dev
    );
    assert_eq!(n, 2 * (5 * 8 + 9 * 8), "comparisons that ran");
}

/// f16 and bf16 on the step kernels (f32 arithmetic in the kernels) against f32, for both
/// reset forms (reset_before with recurrent dropout): outputs within 3e-2 on unit-scale
/// data, gradients within 1e-1 relative to max(1, |g|). On the CPU the half types run the
/// loop.
pub fn step_kernels_half_types_track_f32(target: &Target) {
    for reset_after in [true, false] {
        let mut cfg = GruConfig::new(16);
        cfg.return_sequences = true;
        cfg.return_state = true;
        cfg.reset_after = reset_after;
        if !reset_after {
            // Recurrent dropout too (the same seeded masks in every dtype): every kernel of
            // the path runs in this test, which the GPU run also puts under memcheck.
            cfg.recurrent_dropout = 0.25;
            cfg.seed = Some(21);
        }
        super::halves_track_f32(
            target,
            |dt| target.step_layer(&cfg, 12, dt),
            |dt| target.step_path(dt),
            &format!("reset_after={reset_after} "),
        );
    }
}

/// A second backward of one call, and the backward of an inference call, recompute the
/// activations and give the first backward's gradients exactly.
pub fn step_kernels_second_backward_recomputes(target: &Target) {
    let (b, t, f, u) = (3, 6, 4, 5);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    cfg.reset_after = false;
    let g = target.step_layer(&cfg, f, DType::F64);
    let x = Var::from_tensor(&tensor(&[b, t, f], 0.2, DType::F64, &target.dev)).unwrap();
    let grads_of = |training: bool| {
        let out = g
            .call(
                x.as_tensor(),
                CallOptions {
                    training,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(out.dispatch.path, ExecPath::StepKernels);
        let loss = out.output.sqr().unwrap().sum_all().unwrap();
        let first = crate::common::flat(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        let second = crate::common::flat(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        assert_eq!(first, second, "a second backward differs");
        first
    };
    let trained = grads_of(true);
    let inferred = grads_of(false);
    let d = max_diff(&trained, &inferred);
    assert!(d < 1e-12, "inference backward differs by {d:e}");
}

/// Bad input on the step-kernel path gets the same typed errors as on the other paths.
pub fn step_kernels_bad_input_is_typed(target: &Target) {
    let cfg = GruConfig::new(4);
    let g = target.step_layer(&cfg, 3, DType::F32);
    let wrong_dim = tensor(&[2, 5, 4], 0.1, DType::F32, &target.dev);
    let err = g.call(&wrong_dim, CallOptions::default()).unwrap_err();
    assert!(
        matches!(err, candle_gru::Error::Gru(GruError::Shape { .. })),
        "{err}"
    );
    let wrong_type = tensor(&[2, 5, 3], 0.1, DType::F64, &target.dev);
    let err = g.call(&wrong_type, CallOptions::default()).unwrap_err();
    assert!(
        matches!(err, candle_gru::Error::Gru(GruError::DType { .. })),
        "{err}"
    );
    let short_mask = mask_rows(&[&[1, 1, 1]], &target.dev);
    let x = tensor(&[2, 5, 3], 0.1, DType::F32, &target.dev);
    let opts = CallOptions {
        mask: Some(&short_mask),
        ..Default::default()
    };
    let err = g.call(&x, opts).unwrap_err();
    assert!(
        matches!(err, candle_gru::Error::Gru(GruError::Shape { .. })),
        "{err}"
    );
}

/// Device memory stays steady over many training calls on the step kernels (reset_before
/// with recurrent dropout and a mask: every buffer kind of the path).
pub fn step_kernels_memory_is_steady(target: &Target, max_calls: usize, budget: Duration) {
    let mut cfg = GruConfig::new(32);
    cfg.return_sequences = true;
    cfg.reset_after = false;
    cfg.recurrent_dropout = 0.2;
    cfg.seed = Some(5);
    let g = target.step_layer(&cfg, 16, DType::F32);
    memory_steady_with(target, &g, target.step_path(DType::F32), max_calls, budget);
}
