//! GPU tests of the cuDNN path (build with `--features cudnn`; see scripts/gpu-build.sh and
//! scripts/gpu-run.sh). Every test prints "skipped: no CUDA device" and returns when there
//! is no GPU, so the file also runs on machines without one.
#![cfg(feature = "cudnn")]

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::core::{Activation, MaskFacts, UseCudnn};
use candle_gru::cudnn::MaskScan;
use candle_gru::golden::{self, Target};
use candle_gru::{CallOptions, Gru, GruConfig, Path};
use std::path::Path as FsPath;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            println!(
                "skipped: no CUDA device ({})",
                e.to_string().lines().next().unwrap_or("")
            );
            None
        }
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
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

fn values(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|k| ((k as f64) * 0.731 + seed).sin() * 0.9)
        .collect()
}

/// A layer with deterministic weights on `dev` in `dtype`.
fn layer(cfg: &GruConfig, input: usize, dtype: DType, dev: &Device) -> Gru {
    let u = cfg.units;
    let t = |n: usize, shape: (usize, usize), seed: f64| {
        Var::from_tensor(
            &Tensor::from_vec(values(n, seed), shape, dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap()
        .as_tensor()
        .clone()
    };
    let bias = cfg.use_bias.then(|| {
        let rows = if cfg.reset_after { 2 } else { 1 };
        let b = t(rows * 3 * u, (rows, 3 * u), 5.0);
        if cfg.reset_after {
            b
        } else {
            b.squeeze(0).unwrap()
        }
    });
    Gru::from_weights(
        cfg.clone(),
        t(input * 3 * u, (input, 3 * u), 1.0),
        t(u * 3 * u, (u, 3 * u), 3.0),
        bias,
    )
    .unwrap()
}

struct Outcome {
    path: Path,
    outputs: Vec<Vec<f64>>,
    grads: Vec<Vec<f64>>,
}

/// One training call with a mask and initial state; a loss over every output; gradients of
/// inputs, initial state and the three weights.
fn run_call(g: &Gru, x: &Tensor, mask: Option<&Tensor>, h0: &Tensor, training: bool) -> Outcome {
    let xv = Var::from_tensor(x).unwrap();
    let hv = Var::from_tensor(h0).unwrap();
    let out = g
        .call(
            xv.as_tensor(),
            CallOptions {
                mask,
                initial_state: Some(hv.as_tensor()),
                training,
            },
        )
        .unwrap();
    let seq = &out.output;
    let weights = Tensor::arange(0f64, seq.elem_count() as f64, seq.device())
        .unwrap()
        .reshape(seq.dims())
        .unwrap()
        .affine(0.003, -0.2)
        .unwrap()
        .to_dtype(seq.dtype())
        .unwrap();
    let state = out.state.clone().unwrap();
    let loss = ((seq * &weights).unwrap().sum_all().unwrap()
        + (&state * 0.5).unwrap().sum_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let mut tracked = vec![xv.as_tensor().clone(), hv.as_tensor().clone()];
    tracked.extend(g.weights().into_iter().cloned());
    Outcome {
        path: out.dispatch.path,
        outputs: vec![flat(seq), flat(&state)],
        grads: tracked
            .iter()
            .map(|t| flat(grads.get(t).expect("a gradient reaches every input")))
            .collect(),
    }
}

fn mask_rows(rows: &[&[u8]], dev: &Device) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<u8> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), dev).unwrap()
}

/// Row r keeps the steps where `keep(r, k)` holds.
fn mask_by(b: usize, t: usize, dev: &Device, keep: impl Fn(usize, usize) -> bool) -> Tensor {
    let flat: Vec<u8> = (0..b * t).map(|n| keep(n / t, n % t) as u8).collect();
    Tensor::from_vec(flat, (b, t), dev).unwrap()
}

fn masks(dev: &Device) -> Vec<(&'static str, Option<Tensor>)> {
    vec![
        ("no mask", None),
        (
            "right-padded",
            Some(mask_rows(
                &[
                    &[1, 1, 1, 1, 1, 1, 1],
                    &[1, 1, 1, 0, 0, 0, 0],
                    &[1, 0, 0, 0, 0, 0, 0],
                    &[1, 1, 1, 1, 1, 1, 0],
                ],
                dev,
            )),
        ),
        (
            "left-padded",
            Some(mask_rows(
                &[
                    &[0, 0, 1, 1, 1, 1, 1],
                    &[1, 1, 1, 1, 1, 1, 1],
                    &[0, 0, 0, 0, 0, 0, 1],
                    &[0, 1, 1, 1, 1, 1, 1],
                ],
                dev,
            )),
        ),
        (
            "holes",
            Some(mask_rows(
                &[
                    &[1, 0, 1, 0, 1, 0, 1],
                    &[0, 1, 1, 0, 0, 1, 0],
                    &[1, 1, 0, 1, 1, 1, 0],
                    &[0, 0, 1, 0, 0, 0, 0],
                ],
                dev,
            )),
        ),
    ]
}

#[test]
fn gpu_golden_cases_through_cudnn_and_the_loop() {
    let Some(dev) = gpu() else { return };
    let files = golden::case_files(FsPath::new("tests/data/golden")).unwrap();
    assert!(files.len() >= 50, "golden cases missing: {}", files.len());
    let (mut failed, mut cudnn_calls, mut loop_calls, mut cudnn_cases) = (0, 0, 0, 0);
    for file in &files {
        let case = golden::load_case(file).unwrap();
        for dtype in [DType::F32, DType::F64] {
            for use_cudnn in [UseCudnn::Auto, UseCudnn::Never] {
                let target = Target::Device {
                    device: dev.clone(),
                    use_cudnn,
                };
                let r = golden::run_case_target(&case, dtype, &target);
                let label = format!("{} {dtype:?} {use_cudnn:?}", case.name);
                match r {
                    Ok(r) => {
                        let on_cudnn = r.paths.iter().filter(|p| **p == Path::Cudnn).count();
                        if use_cudnn == UseCudnn::Auto {
                            cudnn_calls += on_cudnn;
                            loop_calls += r.paths.len() - on_cudnn;
                            if on_cudnn > 0 && dtype == DType::F32 {
                                cudnn_cases += 1;
                            }
                        }
                        let status = if r.failures.is_empty() {
                            "PASS"
                        } else {
                            "FAIL"
                        };
                        println!(
                            "{label:<70} {status} paths {:?} out {:.1e} grad {:?}",
                            r.paths, r.max_output_err, r.max_grad_err
                        );
                        for f in &r.failures {
                            println!("    {f}");
                        }
                        if !r.failures.is_empty() {
                            failed += 1;
                        }
                    }
                    Err(e) => {
                        println!("{label:<70} FAIL could not run: {e}");
                        failed += 1;
                    }
                }
            }
        }
    }
    println!(
        "golden on GPU: {} cases, {cudnn_cases} with cuDNN calls; Auto calls: {cudnn_calls} cuDNN, \
         {loop_calls} loop; {failed} failed runs",
        files.len()
    );
    assert_eq!(failed, 0);
    assert!(
        cudnn_cases >= 10,
        "too few cases reached cuDNN: {cudnn_cases}"
    );
}

#[test]
fn gpu_mask_scan_matches_the_host_scan() {
    let Some(dev) = gpu() else { return };
    let (b, t) = (37, 53);
    // Rows of every kind: full, right-padded, left-padded, holes, single step, empty.
    let mut mask = vec![false; b * t];
    for r in 0..b {
        for k in 0..t {
            let h = (r * 7919 + k * 104729) % 97;
            mask[r * t + k] = match r % 6 {
                0 => true,
                1 => k < (r * 3) % t + 1,
                2 => k >= (r * 5) % t,
                3 => h % 3 != 0,
                4 => k == r % t,
                _ => false,
            };
        }
    }
    let mt = Tensor::from_vec(
        mask.iter().map(|&m| m as u8).collect::<Vec<u8>>(),
        (b, t),
        &dev,
    )
    .unwrap();
    let x = Tensor::from_vec(values(b * t * 3, 0.4), (b, t, 3), &dev).unwrap();
    for go_backwards in [false, true] {
        for zero in [false, true] {
            let d = MaskScan::on_device(&mt, go_backwards, zero).unwrap();
            let h = MaskScan::on_host(&mask, b, t, go_backwards, zero, &dev).unwrap();
            assert_eq!(d.lengths, h.lengths);
            assert_eq!(d.flags(), h.flags());
            assert_eq!(d.index_maps().unwrap(), h.index_maps().unwrap());
            assert_eq!(d.first_empty, h.first_empty);
            assert_eq!(d.first_not_right_padded, h.first_not_right_padded);
            assert_eq!(
                d.dev_lengths.to_vec1::<i32>().unwrap(),
                h.dev_lengths.to_vec1::<i32>().unwrap()
            );
            assert_eq!(flat(&d.compact(&x).unwrap()), flat(&h.compact(&x).unwrap()));
            assert_eq!(flat(&d.expand(&x).unwrap()), flat(&h.expand(&x).unwrap()));
        }
    }
    println!("device mask scan == host scan on {b}x{t}, 4 settings");
}

#[test]
fn gpu_every_mask_kind_matches_the_loop_f64_and_f32() {
    let Some(dev) = gpu() else { return };
    let (b, t, f, u) = (4, 7, 5, 6);
    let mut n = 0;
    for dtype in [DType::F64, DType::F32] {
        let x = Tensor::from_vec(values(b * t * f, 0.3), (b, t, f), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let h0 = Tensor::from_vec(values(b * u, 2.2), (b, u), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        for (name, mask) in masks(&dev) {
            for go_backwards in [false, true] {
                for zero in [false, true] {
                    for training in [false, true] {
                        let mut cfg = GruConfig::new(u);
                        cfg.return_sequences = true;
                        cfg.return_state = true;
                        cfg.go_backwards = go_backwards;
                        cfg.zero_output_for_mask = zero;
                        cfg.use_cudnn = UseCudnn::Force;
                        let fast = run_call(
                            &layer(&cfg, f, dtype, &dev),
                            &x,
                            mask.as_ref(),
                            &h0,
                            training,
                        );
                        cfg.use_cudnn = UseCudnn::Never;
                        let slow = run_call(
                            &layer(&cfg, f, dtype, &dev),
                            &x,
                            mask.as_ref(),
                            &h0,
                            training,
                        );
                        assert_eq!(fast.path, Path::Cudnn);
                        assert_eq!(slow.path, Path::Loop);
                        let tol = if dtype == DType::F64 { 1e-10 } else { 2e-5 };
                        let label = format!(
                            "{dtype:?} {name} go_backwards={go_backwards} zero={zero} training={training}"
                        );
                        for (k, (a, s)) in fast.outputs.iter().zip(&slow.outputs).enumerate() {
                            let d = max_diff(a, s);
                            assert!(d <= tol, "{label}: output {k} differs by {d:e}");
                        }
                        for (k, (a, s)) in fast.grads.iter().zip(&slow.grads).enumerate() {
                            let d = max_diff(a, s);
                            assert!(d <= tol * 10.0, "{label}: gradient {k} differs by {d:e}");
                        }
                        n += 1;
                    }
                }
            }
        }
    }
    println!("cuDNN == loop on GPU in {n} configurations (outputs, 5 gradients each)");
}

#[test]
fn gpu_half_types_track_f32() {
    let Some(dev) = gpu() else { return };
    // Stated tolerance: f16 and bf16 run with f32 accumulation (CUDNN_TENSOR_OP_MATH);
    // their outputs stay within 3e-2 of the f32 cuDNN result on unit-scale data (the CPU
    // path's half-type tolerance), gradients within 1e-1.
    let (b, t, f, u) = (8, 16, 12, 16);
    let mask = mask_by(b, t, &dev, |r, k| k < t - r);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    cfg.return_state = true;
    cfg.use_cudnn = UseCudnn::Force;
    let x = Tensor::from_vec(values(b * t * f, 0.9), (b, t, f), &dev).unwrap();
    let h0 = Tensor::from_vec(values(b * u, 1.7), (b, u), &dev).unwrap();
    let reference = run_call(
        &layer(&cfg, f, DType::F32, &dev),
        &x.to_dtype(DType::F32).unwrap(),
        Some(&mask),
        &h0.to_dtype(DType::F32).unwrap(),
        true,
    );
    for dtype in [DType::F16, DType::BF16] {
        let got = run_call(
            &layer(&cfg, f, dtype, &dev),
            &x.to_dtype(dtype).unwrap(),
            Some(&mask),
            &h0.to_dtype(dtype).unwrap(),
            true,
        );
        assert_eq!(got.path, Path::Cudnn);
        for (k, (a, r)) in got.outputs.iter().zip(&reference.outputs).enumerate() {
            let d = max_diff(a, r);
            println!("{dtype:?} output {k}: max |diff| vs f32 {d:.2e}");
            assert!(d < 3e-2, "{dtype:?} output {k}: {d:e}");
        }
        for (k, (a, r)) in got.grads.iter().zip(&reference.grads).enumerate() {
            let scale = r.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let d = max_diff(a, r) / scale;
            println!("{dtype:?} gradient {k}: max |diff| / max(1, |g|) {d:.2e}");
            assert!(d < 1e-1, "{dtype:?} gradient {k}: {d:e}");
        }
    }
}

#[test]
fn gpu_auto_force_never() {
    let Some(dev) = gpu() else { return };
    let (b, t, f, u) = (3, 4, 2, 3);
    let x = Tensor::from_vec(values(b * t * f, 0.1), (b, t, f), &dev).unwrap();
    let empty_row = mask_rows(&[&[1, 1, 0, 0], &[0, 0, 0, 0], &[1, 1, 1, 1]], &dev);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    let opts = |m| CallOptions {
        mask: m,
        ..Default::default()
    };
    // Auto: cuDNN without a mask, the loop with an all-False row, and the loop's numbers.
    let auto = layer(&cfg, f, DType::F32, &dev);
    assert_eq!(
        auto.call(&x, opts(None)).unwrap().dispatch.path,
        Path::Cudnn
    );
    let fell_back = auto.call(&x, opts(Some(&empty_row))).unwrap();
    assert_eq!(fell_back.dispatch.path, Path::Loop);
    assert!(fell_back.dispatch.explain().contains("row 1 is all False"));
    // Force: the same mask is an error naming condition 7.
    cfg.use_cudnn = UseCudnn::Force;
    let forced = layer(&cfg, f, DType::F32, &dev);
    let err = forced
        .call(&x, opts(Some(&empty_row)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("7. mask"), "{err}");
    // Force with relu: condition 1.
    let mut relu = cfg.clone();
    relu.activation = Activation::Relu;
    let err = layer(&relu, f, DType::F32, &dev)
        .call(&x, opts(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1. activation"), "{err}");
    // Force with recurrent dropout in training: condition 3; at inference it runs.
    let mut rd = cfg.clone();
    rd.recurrent_dropout = 0.3;
    let l = layer(&rd, f, DType::F32, &dev);
    let err = l
        .call(
            &x,
            CallOptions {
                training: true,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("3. no recurrent dropout"), "{err}");
    assert_eq!(l.call(&x, opts(None)).unwrap().dispatch.path, Path::Cudnn);
    // Input dropout in training stays on cuDNN (one mask shared over time).
    let mut dp = cfg.clone();
    dp.dropout = 0.5;
    dp.seed = Some(3);
    let l = layer(&dp, f, DType::F32, &dev);
    let out = l
        .call(
            &x,
            CallOptions {
                training: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.dispatch.path, Path::Cudnn);
    assert!(flat(&out.output).iter().all(|v| v.is_finite()));
    // Never: the loop.
    cfg.use_cudnn = UseCudnn::Never;
    assert_eq!(
        layer(&cfg, f, DType::F32, &dev)
            .call(&x, opts(None))
            .unwrap()
            .dispatch
            .path,
        Path::Loop
    );
    // The device scan feeds the dispatcher.
    let scan = MaskScan::on_device(&empty_row, false, false).unwrap();
    assert_eq!(scan.facts(), MaskFacts::EmptyRow { row: 1 });
}

#[test]
fn gpu_stateful_calls_match_the_loop() {
    let Some(dev) = gpu() else { return };
    let (b, t, f, u) = (2, 5, 3, 4);
    let mut cfg = GruConfig::new(u);
    cfg.stateful = true;
    cfg.return_sequences = true;
    let fast = layer(&cfg, f, DType::F64, &dev);
    cfg.use_cudnn = UseCudnn::Never;
    let slow = layer(&cfg, f, DType::F64, &dev);
    for call in 0..3 {
        let x = Tensor::from_vec(values(b * t * f, call as f64), (b, t, f), &dev).unwrap();
        let a = fast.call(&x, CallOptions::default()).unwrap();
        let s = slow.call(&x, CallOptions::default()).unwrap();
        assert_eq!(a.dispatch.path, Path::Cudnn);
        let d = max_diff(&flat(&a.output), &flat(&s.output));
        assert!(d < 1e-10, "stateful call {call}: {d:e}");
    }
}

#[test]
fn gpu_descriptors_are_cached_per_shape() {
    let Some(dev) = gpu() else { return };
    let (b, t, f, u) = (5, 9, 4, 8);
    let mut cfg = GruConfig::new(u);
    cfg.use_cudnn = UseCudnn::Force;
    let g = layer(&cfg, f, DType::F32, &dev);
    let x = Tensor::from_vec(values(b * t * f, 0.5), (b, t, f), &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    g.call(&x, CallOptions::default()).unwrap();
    let first = candle_gru::cudnn::cache_stats();
    for _ in 0..5 {
        g.call(&x, CallOptions::default()).unwrap();
    }
    assert_eq!(
        candle_gru::cudnn::cache_stats(),
        first,
        "same shape rebuilt descriptors"
    );
    // New lengths on the same shape: the data descriptors are set again, the plan is not.
    let m = mask_rows(
        &[
            &[1u8; 9][..],
            &[1, 1, 1, 0, 0, 0, 0, 0, 0],
            &[1u8; 9][..],
            &[1u8; 9][..],
            &[1u8; 9][..],
        ],
        &dev,
    );
    g.call(
        &x,
        CallOptions {
            mask: Some(&m),
            ..Default::default()
        },
    )
    .unwrap();
    let after = candle_gru::cudnn::cache_stats();
    assert_eq!(after.plans_built, first.plans_built);
    assert_eq!(after.shapes_set, first.shapes_set + 1);
    println!("cache: {first:?} -> {after:?}");
}

#[test]
fn gpu_weight_space_layout_facts() {
    let Some(dev) = gpu() else { return };
    let Device::Cuda(cuda) = &dev else { return };
    println!("cuDNN version {}", candle_gru::cudnn::cudnn_version());
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let (i, u) = (5, 7);
        let l = candle_gru::cudnn::weight_layout_of(cuda, dtype, i, u).unwrap();
        println!(
            "{dtype:?} input {i} units {u}: {} bytes, direct (six matrices then six biases, \
             packed) = {}, offsets {:?}, matrix dims {:?}, bias dims {:?}",
            l.bytes, l.direct, l.offsets, l.matrix_dims, l.bias_dims
        );
        for id in 0..6 {
            let cols = if id < 3 { i } else { u };
            let n: i32 = l.matrix_dims[id].iter().product();
            assert_eq!(n as usize, u * cols, "{dtype:?} matrix {id}");
        }
    }
}

#[test]
fn gpu_second_backward_and_inference_backward_recompute() {
    let Some(dev) = gpu() else { return };
    let (b, t, f, u) = (3, 6, 4, 5);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    cfg.return_state = true;
    cfg.use_cudnn = UseCudnn::Force;
    let g = layer(&cfg, f, DType::F64, &dev);
    let x = Var::from_tensor(&Tensor::from_vec(values(b * t * f, 0.2), (b, t, f), &dev).unwrap())
        .unwrap();
    let grads_of = |training: bool, twice: bool| -> Vec<f64> {
        let out = g
            .call(
                x.as_tensor(),
                CallOptions {
                    training,
                    ..Default::default()
                },
            )
            .unwrap();
        let loss = out.output.sqr().unwrap().sum_all().unwrap();
        let first = flat(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        if twice {
            let second = flat(loss.backward().unwrap().get(x.as_tensor()).unwrap());
            assert_eq!(first, second, "second backward differs");
        }
        first
    };
    let trained = grads_of(true, true);
    let inferred = grads_of(false, false);
    assert!(max_diff(&trained, &inferred) < 1e-12);
}

#[test]
fn gpu_tf32_is_opt_in() {
    let Some(dev) = gpu() else { return };
    let (b, t, f, u) = (16, 32, 64, 64);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    cfg.use_cudnn = UseCudnn::Force;
    let x = Tensor::from_vec(values(b * t * f, 0.6), (b, t, f), &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let exact = layer(&cfg, f, DType::F32, &dev);
    let fast = layer(&cfg, f, DType::F32, &dev).with_cudnn_tf32(true);
    let e = flat(&exact.call(&x, CallOptions::default()).unwrap().output);
    let a = flat(&fast.call(&x, CallOptions::default()).unwrap().output);
    let d = max_diff(&e, &a);
    println!("TF32 vs FMA math: max |diff| {d:.2e}");
    assert!(d < 1e-2, "{d:e}");
}

#[test]
fn gpu_memory_is_steady_over_10000_training_calls() {
    let Some(dev) = gpu() else { return };
    let Device::Cuda(cuda) = &dev else { return };
    let (b, t, f, u) = (8, 20, 16, 32);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    cfg.use_cudnn = UseCudnn::Force;
    let g = layer(&cfg, f, DType::F32, &dev);
    let x = Tensor::from_vec(values(b * t * f, 0.8), (b, t, f), &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let mask = mask_by(b, t, &dev, |r, k| k >= r);
    let step = || {
        let out = g
            .call(
                &x,
                CallOptions {
                    mask: Some(&mask),
                    training: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let loss = out.output.sum_all().unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(g.weights()[0]).is_some());
    };
    let free = || {
        dev.synchronize().unwrap();
        cuda.cuda_stream().context().mem_get_info().unwrap().0
    };
    for _ in 0..200 {
        step();
    }
    let before = free();
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        step();
    }
    let after = free();
    let grew = before.saturating_sub(after);
    println!(
        "10,000 forward+backward calls in {:.1} s; free memory {} -> {} MiB (grew {} KiB)",
        start.elapsed().as_secs_f64(),
        before >> 20,
        after >> 20,
        grew >> 10
    );
    assert!(grew < 32 << 20, "device memory grew by {grew} bytes");
}
