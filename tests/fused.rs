//! The fused CPU kernels against the reference loop where the golden cases do not reach:
//! dropout in training (same seed, same masks), every implementation, threads.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::paths::fused_cpu::FusedSettings;
use candle_gru::candle::CpuPath;
use candle_gru::core::{Activation, Implementation, Initializer, Num};
use candle_gru::{CallOptions, ExecPath, Gru, GruConfig};
use common::{flat, max_diff};

fn build(c: &GruConfig, path: CpuPath, threads: Option<usize>) -> Gru {
    common::initialized(c.clone(), 5, DType::F64)
        .with_cpu_path(path)
        .with_threads(threads)
}

/// Runs a training call with a mask and an initial state; returns the outputs (and the state
/// when returned) and the gradients.
fn run(g: &Gru, want: ExecPath) -> Vec<Vec<f64>> {
    let x = Var::from_tensor(
        &Tensor::arange(0f64, 120.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 6, 5))
            .unwrap()
            .affine(0.013, -0.7)
            .unwrap()
            .sin()
            .unwrap(),
    )
    .unwrap();
    let h0 = Var::from_tensor(
        &Tensor::arange(0f64, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 3))
            .unwrap()
            .affine(0.1, -0.5)
            .unwrap(),
    )
    .unwrap();
    let mask = Tensor::new(
        &[
            [1u8, 1, 0, 1, 1, 0],
            [1, 0, 0, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let out = g
        .call(
            x.as_tensor(),
            CallOptions {
                mask: Some(&mask),
                initial_state: Some(h0.as_tensor()),
                training: true,
            },
        )
        .unwrap();
    assert_eq!(out.dispatch.path, want);
    let w = Tensor::arange(0f64, out.output.elem_count() as f64, &Device::Cpu)
        .unwrap()
        .reshape(out.output.shape())
        .unwrap()
        .cos()
        .unwrap();
    let mut loss = out.output.mul(&w).unwrap().sum_all().unwrap();
    if let Some(s) = &out.state {
        loss = (loss + s.sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let mut v = vec![flat(&out.output)];
    v.extend(out.state.as_ref().map(flat));
    for t in [
        g.kernel(),
        g.recurrent_kernel(),
        x.as_tensor(),
        h0.as_tensor(),
    ]
    .into_iter()
    .chain(g.bias())
    {
        v.push(flat(grads.get(t).expect("gradient")));
    }
    v
}

#[test]
fn fused_matches_the_loop_with_dropout_in_training() {
    let mut n = 0;
    for reset_after in [true, false] {
        for (dropout, recurrent_dropout, implementation) in [
            (0.3, 0.0, Implementation::Two),
            (0.3, 0.0, Implementation::One),
            (0.25, 0.4, Implementation::Two),
            (0.0, 0.4, Implementation::Two),
        ] {
            for (go_backwards, zero) in [(false, false), (true, true)] {
                let mut c = GruConfig::new(3);
                c.return_sequences = true;
                c.return_state = true;
                c.reset_after = reset_after;
                c.dropout = dropout;
                c.recurrent_dropout = recurrent_dropout;
                c.implementation = implementation;
                c.go_backwards = go_backwards;
                c.zero_output_for_mask = zero;
                c.activation = Activation::Selu;
                c.seed = Some(11);
                c.kernel_initializer = Initializer::RandomUniform {
                    minval: Num::Float(-0.7),
                    maxval: Num::Float(0.7),
                    seed: Some(1),
                };
                c.recurrent_initializer = Initializer::Orthogonal {
                    gain: Num::Float(1.0),
                    seed: Some(2),
                };
                c.bias_initializer = Initializer::RandomUniform {
                    minval: Num::Float(-0.3),
                    maxval: Num::Float(0.3),
                    seed: Some(3),
                };
                let fused = run(&build(&c, CpuPath::Fused, None), ExecPath::Fused);
                let reference = run(&build(&c, CpuPath::Loop, None), ExecPath::Loop);
                for (k, (a, b)) in fused.iter().zip(&reference).enumerate() {
                    let d = max_diff(a, b);
                    assert!(d < 1e-12, "{c:?}\nitem {k}: fused vs loop differ by {d}");
                }
                n += 1;
            }
        }
    }
    assert_eq!(n, 16);
}

/// A config returning sequences whose weights are drawn from fixed seeds (`seed`,
/// `seed + 1`): every layer built from it holds the same weights.
fn seeded(units: usize, limit: f64, seed: u64) -> GruConfig {
    let mut c = GruConfig::new(units);
    c.return_sequences = true;
    c.kernel_initializer = Initializer::RandomUniform {
        minval: Num::Float(-limit),
        maxval: Num::Float(limit),
        seed: Some(seed),
    };
    c.recurrent_initializer = Initializer::Orthogonal {
        gain: Num::Float(1.0),
        seed: Some(seed + 1),
    };
    c
}

/// Every output form the fused op lays out (the sequence or the last output, with or
/// without the state; see `paths::fused_outputs`) gives the loop's outputs and gradients,
/// the loss reading every returned tensor, with masks, go_backwards and
/// zero_output_for_mask.
#[test]
fn every_output_form_matches_the_loop() {
    let mut n = 0;
    for (return_sequences, return_state) in
        [(true, false), (true, true), (false, false), (false, true)]
    {
        for (go_backwards, zero) in [(false, false), (true, true), (false, true)] {
            let mut c = seeded(3, 0.7, 21);
            c.return_sequences = return_sequences;
            c.return_state = return_state;
            c.go_backwards = go_backwards;
            c.zero_output_for_mask = zero;
            let fused = run(&build(&c, CpuPath::Fused, None), ExecPath::Fused);
            let reference = run(&build(&c, CpuPath::Loop, None), ExecPath::Loop);
            assert_eq!(fused.len(), reference.len());
            for (k, (a, b)) in fused.iter().zip(&reference).enumerate() {
                let d = max_diff(a, b);
                assert!(d < 1e-12, "{c:?}\nitem {k}: fused vs loop differ by {d}");
                assert!(a.iter().any(|v| v.abs() > 1e-9), "item {k} is all zeros");
            }
            n += 1;
        }
    }
    assert_eq!(n, 12);
}

#[test]
fn threads_do_not_change_results() {
    let c = seeded(3, 0.7, 1);
    let one = run(&build(&c, CpuPath::Fused, Some(1)), ExecPath::Fused);
    let two = run(&build(&c, CpuPath::Fused, Some(2)), ExecPath::Fused);
    for (a, b) in one.iter().zip(&two) {
        assert!(max_diff(a, b) < 1e-12);
    }
}

/// f16 and bf16 calls run on the fused kernels in f32: bit for bit the f32 call on the same
/// (half-valued) weights, inputs, state and dropout, with its outputs and gradients rounded
/// to the half type.
#[test]
fn half_types_run_fused_in_f32_and_round_the_results() {
    let dev = &Device::Cpu;
    let mut c = GruConfig::new(6);
    c.return_sequences = true;
    c.return_state = true;
    // Keep factors 1/(1-rate) of 2 and 1.25: exact in every float type, so both layers'
    // masks (the same seed, the same draws) hold the same numbers.
    c.dropout = 0.5;
    c.recurrent_dropout = 0.2;
    c.seed = Some(4);
    for half in [DType::F16, DType::BF16] {
        // Half-valued f32 weights: the two layers hold the same numbers.
        let w: Vec<Tensor> = [(5, 18), (6, 18), (2, 18)]
            .iter()
            .enumerate()
            .map(|(k, &(r, cols))| common::tensor(&[r, cols], k as f64, half, dev))
            .collect();
        let layer = |dtype: DType| {
            let v = |k: usize| Var::from_tensor(&w[k].to_dtype(dtype).unwrap()).unwrap();
            let (k, r, b) = (v(0), v(1), v(2));
            let g = Gru::from_weights(
                c.clone(),
                k.as_tensor().clone(),
                r.as_tensor().clone(),
                Some(b.as_tensor().clone()),
            );
            (g.unwrap(), [k, r, b])
        };
        let (g_half, w_half) = layer(half);
        let (g32, w32) = layer(DType::F32);
        let x = Var::from_tensor(&common::tensor(&[4, 7, 5], 9.0, half, dev)).unwrap();
        let h0 = common::tensor(&[4, 6], 2.0, half, dev);
        let mask = common::mask_by(4, 7, dev, |r, k| k + r < 7);
        let cot = common::tensor(&[4, 7, 6], 5.0, half, dev);
        let call = |g: &Gru, dtype: DType| {
            let x = x.as_tensor().to_dtype(dtype).unwrap();
            let h0 = h0.to_dtype(dtype).unwrap();
            let opts = CallOptions {
                mask: Some(&mask),
                initial_state: Some(&h0),
                training: true,
            };
            let out = g.call(&x, opts).unwrap();
            assert_eq!(out.dispatch.path, ExecPath::Fused, "{dtype:?}");
            let loss = (&out.output * cot.to_dtype(dtype).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            (out, loss.backward().unwrap())
        };
        let (a, ga) = call(&g_half, half);
        let (b, gb) = call(&g32, DType::F32);
        assert_eq!(a.output.dtype(), half);
        let rounded = |t: &Tensor| flat(&t.to_dtype(half).unwrap());
        assert_eq!(flat(&a.output), rounded(&b.output), "{half:?} output");
        assert_eq!(
            flat(a.state.as_ref().unwrap()),
            rounded(b.state.as_ref().unwrap())
        );
        for (k, (vh, v32)) in w_half.iter().zip(&w32).enumerate() {
            let (dh, d32) = (
                ga.get(vh.as_tensor()).unwrap(),
                gb.get(v32.as_tensor()).unwrap(),
            );
            assert_eq!(dh.dtype(), half);
            assert_eq!(flat(dh), rounded(d32), "{half:?} gradient of weight {k}");
        }
        // The f32 call's input gradient comes back through its cast, rounded to the half type.
        let (dx_half, dx32) = (
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
        );
        assert_eq!(flat(dx_half), flat(dx32), "{half:?} input gradient");
    }
}

#[test]
fn backward_twice_and_backward_after_inference_recompute_the_same_gradients() {
    let mut c = GruConfig::new(4);
    c.return_sequences = true;
    c.kernel_initializer = Initializer::RandomUniform {
        minval: Num::Float(-0.7),
        maxval: Num::Float(0.7),
        seed: Some(5),
    };
    c.recurrent_initializer = Initializer::Orthogonal {
        gain: Num::Float(1.0),
        seed: Some(6),
    };
    let g = build(&c, CpuPath::Fused, None);
    let x = Tensor::arange(0f64, 60.0, &Device::Cpu)
        .unwrap()
        .reshape((3, 4, 5))
        .unwrap()
        .affine(0.05, -1.0)
        .unwrap();
    let grad_of = |training: bool| {
        let out = g
            .call(
                &x,
                CallOptions {
                    training,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(out.dispatch.path, ExecPath::Fused);
        let loss = out.output.sqr().unwrap().sum_all().unwrap();
        let first = flat(loss.backward().unwrap().get(g.recurrent_kernel()).unwrap());
        // The saved activations went back to the pool: a second backward recomputes them.
        let second = flat(loss.backward().unwrap().get(g.recurrent_kernel()).unwrap());
        (first, second)
    };
    let (a, b) = grad_of(true);
    let (c_inf, d_inf) = grad_of(false);
    assert!(max_diff(&a, &b) < 1e-14, "second backward");
    assert!(
        max_diff(&a, &c_inf) < 1e-14,
        "backward of an inference call"
    );
    assert!(max_diff(&a, &d_inf) < 1e-14);
    assert!(a.iter().any(|v| v.abs() > 1e-6), "non-trivial gradient");
}

/// A call too small to slice by rows (B = 1, 2) with enough units splits the units over two
/// threads: the outputs and state equal one thread's and the loop's, and the gradients equal
/// one thread's, for an inference call (the backward recomputes the forward) and a training
/// call (the split forward keeps the activations; the backward's products over all steps
/// run on both threads).
#[test]
fn unit_split_calls_equal_one_thread_and_the_loop() {
    let mut c = seeded(160, 0.5, 3);
    c.return_state = true;
    let dev = Device::Cpu;
    let cases = [(1, DType::F32), (2, DType::F64)];
    for ((batch, dtype), training) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let x = common::tensor(&[batch, 7, 5], 0.3, dtype, &dev);
        let keep = |b: usize, t: usize| (b + t) % 4 != 2;
        let mask = common::mask_by(batch, 7, &dev, keep);
        let layer = |path, threads| {
            common::initialized(c.clone(), 5, dtype)
                .with_cpu_path(path)
                .with_threads(threads)
        };
        let call = |g: &Gru| {
            let xv = Var::from_tensor(&x).unwrap();
            let opts = CallOptions {
                mask: Some(&mask),
                initial_state: None,
                training,
            };
            let out = g.call(xv.as_tensor(), opts).unwrap();
            let state = out.state.clone().expect("state");
            let loss = out.output.sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let dx = flat(grads.get(xv.as_tensor()).expect("dx"));
            let dk = flat(grads.get(g.recurrent_kernel()).expect("dU"));
            [flat(&out.output), flat(&state), dx, dk]
        };
        let settings = FusedSettings {
            threads: Some(2),
            ..Default::default()
        };
        let plan = settings.plan(batch, 7, 160, true);
        assert_eq!((plan.unit_threads, plan.all_steps_threads), (2, 2));
        let one = call(&layer(CpuPath::Fused, Some(1)));
        let two = call(&layer(CpuPath::Fused, Some(2)));
        let reference = call(&layer(CpuPath::Loop, None));
        for n in 0..2 {
            let d = max_diff(&one[n], &two[n]);
            assert!(d == 0.0, "B = {batch}: value {n} differs by {d}");
        }
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        for (n, (a, b)) in two.iter().zip(&one).enumerate().skip(2) {
            assert!(max_diff(a, b) < tol, "B = {batch}: gradient {n}");
        }
        for (n, (a, b)) in two.iter().zip(&reference).enumerate() {
            assert!(max_diff(a, b) < tol, "B = {batch}: loop, value {n}");
        }
    }
}

#[test]
fn an_input_that_is_data_gets_no_gradient_and_the_weights_the_same() {
    let mut c = seeded(6, 0.6, 4);
    c.return_state = true;
    let dev = Device::Cpu;
    let g = build(&c, CpuPath::Fused, Some(1));
    let x = common::tensor(&[3, 5, 5], 0.4, DType::F64, &dev);
    let h0 = common::tensor(&[3, 6], 0.3, DType::F64, &dev);
    fn opts(h0: &Tensor) -> CallOptions<'_> {
        CallOptions {
            mask: None,
            initial_state: Some(h0),
            training: true,
        }
    }
    let grads = |y: &Tensor| y.sqr().and_then(|s| s.sum_all()?.backward()).unwrap();
    // The input and the state as variables: every gradient.
    let (xv, hv) = (
        Var::from_tensor(&x).unwrap(),
        Var::from_tensor(&h0).unwrap(),
    );
    let out = g.call(xv.as_tensor(), opts(hv.as_tensor())).unwrap();
    assert_eq!(out.dispatch.path, ExecPath::Fused);
    let all = grads(&out.output);
    assert!(all.get(xv.as_tensor()).is_some() && all.get(hv.as_tensor()).is_some());
    // The same call on plain tensors: no gradient for them, the same for the weights.
    let out = g.call(&x, opts(&h0)).unwrap();
    let data = grads(&out.output);
    assert!(data.get(&x).is_none() && data.get(&h0).is_none());
    for w in [g.kernel(), g.recurrent_kernel()] {
        let (a, b) = (flat(all.get(w).unwrap()), flat(data.get(w).unwrap()));
        assert_eq!(a, b);
    }
}

/// A layer whose weights no gradient can reach (`trainable = false`) runs the fused op over
/// its weights in place: the same outputs as the trainable layer, bit for bit, and the same
/// gradients for the inputs and the initial state; at one step and at many (the recurrent
/// weights read in place below eight steps, packed from eight), f32 and f64, inference and
/// training calls, one and two threads.
#[test]
fn frozen_weights_give_the_trainable_layers_outputs_and_input_gradients() {
    for dtype in [DType::F32, DType::F64] {
        for (t, threads) in [(1, Some(1)), (3, Some(1)), (12, Some(1)), (12, Some(2))] {
            for training in [false, true] {
                let mut c = GruConfig::new(40);
                c.return_sequences = true;
                c.return_state = true;
                let trainable = common::layer(&c, 6, dtype, &Device::Cpu).with_threads(threads);
                c.trainable = false;
                let w: Vec<Tensor> = trainable.weights().into_iter().cloned().collect();
                let frozen =
                    Gru::from_weights(c, w[0].detach(), w[1].detach(), Some(w[2].detach()))
                        .unwrap()
                        .with_threads(threads);
                let x = Var::from_tensor(&common::tensor(&[3, t, 6], 0.4, dtype, &Device::Cpu))
                    .unwrap();
                let h0 =
                    Var::from_tensor(&common::tensor(&[3, 40], 1.3, dtype, &Device::Cpu)).unwrap();
                let opts = CallOptions {
                    mask: None,
                    initial_state: Some(h0.as_tensor()),
                    training,
                };
                let run = |g: &Gru| {
                    let out = g.call(x.as_tensor(), opts).unwrap();
                    let loss = (out.output.sqr().unwrap().sum_all().unwrap()
                        + out.state.as_ref().unwrap().sum_all().unwrap())
                    .unwrap();
                    let grads = loss.backward().unwrap();
                    let weight_grads = g
                        .weights()
                        .iter()
                        .filter(|w| grads.get(w).is_some())
                        .count();
                    let (dx, dh) = (
                        grads.get(x.as_tensor()).map(flat),
                        grads.get(h0.as_tensor()).map(flat),
                    );
                    (
                        flat(&out.output),
                        flat(out.state.as_ref().unwrap()),
                        dx.unwrap(),
                        dh.unwrap(),
                        weight_grads,
                    )
                };
                let (a, f) = (run(&trainable), run(&frozen));
                let what = format!("{dtype:?} T={t} {threads:?} training={training}");
                assert_eq!(a.0, f.0, "{what}: outputs");
                assert_eq!(a.1, f.1, "{what}: state");
                assert_eq!(a.2, f.2, "{what}: dx");
                assert_eq!(a.3, f.3, "{what}: dh0");
                assert_eq!((a.4, f.4), (3, 0), "{what}: weight gradients");
            }
        }
    }
}
