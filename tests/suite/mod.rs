//! The bodies of the GPU tests, each over a [`Target`]. tests/gpu_cudnn.rs runs them on a
//! CUDA device (the layer under test on cuDNN, the reference the loop on the GPU);
//! tests/device_suite.rs runs them on the CPU in every CI run (the layer under test on the
//! CPU's fast path, the reference the CPU loop), so a wrong dtype, shape, mask or expected
//! path in a GPU test fails in CI, not in a rare GPU window. Assertions that need cuDNN
//! itself run only when `target.is_cuda()`.

use crate::common::target::Target;
use crate::common::{flat, mask_by, mask_rows, max_diff, tensor};
use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::GpuPath;
use candle_gru::core::{Activation, MaskFacts, UseCudnn};
use candle_gru::cudnn::MaskScan;
use candle_gru::{CallOptions, ExecPath, Gru, GruConfig};
use gru_support::golden::{self, Target as GoldenTarget};
use std::path::Path as FsPath;
use std::time::{Duration, Instant};

mod calls;
mod cell;
mod mixed;
mod models;
mod step_kernels;
pub use calls::*;
pub use cell::*;
pub use mixed::*;
pub use models::*;
pub use step_kernels::*;

/// Every golden case in f32 and f64, under Auto (cuDNN wherever the conditions hold, on a
/// GPU; the step kernels elsewhere) and Never (the fused step kernels, and the loop, on the
/// device), outputs and gradients at the golden tolerances.
pub fn golden_cases(target: &Target) {
    let files = golden::case_files(FsPath::new("tests/data/golden")).unwrap();
    assert!(files.len() >= 50, "golden cases missing: {}", files.len());
    let (mut failed, mut fast_cases, mut runs) = (0, 0, 0);
    for file in &files {
        let case = golden::load_case(file).unwrap();
        for dtype in [DType::F32, DType::F64] {
            for (use_cudnn, gpu_path) in [
                (UseCudnn::Auto, GpuPath::StepKernels),
                (UseCudnn::Never, GpuPath::StepKernels),
                (UseCudnn::Never, GpuPath::Loop),
            ] {
                let t = GoldenTarget::Device {
                    device: target.dev.clone(),
                    use_cudnn,
                    gpu_path,
                };
                let label = format!("{} {dtype:?} {use_cudnn:?} {gpu_path:?}", case.name);
                runs += 1;
                let r = match golden::run_case_target(&case, dtype, &t) {
                    Ok(r) => r,
                    Err(e) => {
                        println!("{label:<70} FAIL could not run: {e}");
                        failed += 1;
                        continue;
                    }
                };
                let on_cudnn = r.paths.iter().filter(|p| **p == ExecPath::Cudnn).count();
                if use_cudnn == UseCudnn::Auto && on_cudnn > 0 && dtype == DType::F32 {
                    fast_cases += 1;
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
                failed += usize::from(!r.failures.is_empty());
            }
        }
    }
    println!(
        "golden on {:?}: {} cases, {runs} runs, {fast_cases} cases with cuDNN calls, {failed} failed",
        target.dev,
        files.len()
    );
    assert_eq!(failed, 0);
    if target.is_cuda() {
        assert!(
            fast_cases >= 10,
            "too few cases reached cuDNN: {fast_cases}"
        );
    }
}

/// The mask scan on the target (the device kernel on a GPU) equals the host scan: maps,
/// flags, lengths, compaction and expansion, on rows of every kind.
pub fn mask_scan_matches_the_host_scan(target: &Target) {
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
    let dev = &target.dev;
    let mt = Tensor::from_vec(
        mask.iter().map(|&m| m as u8).collect::<Vec<u8>>(),
        (b, t),
        dev,
    )
    .unwrap();
    let x = tensor(&[b, t, 3], 0.4, DType::F32, dev);
    for go_backwards in [false, true] {
        for zero in [false, true] {
            let d = target.scan(&mt, go_backwards, zero);
            let h = MaskScan::on_host(&mask, b, t, go_backwards, zero, dev).unwrap();
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
    println!(
        "mask scan on {:?} == host scan on {b}x{t}, 4 settings",
        target.dev
    );
}

/// The four mask kinds of the path tests: none, right-padded, left-padded, holes.
pub(crate) fn masks(dev: &Device) -> Vec<(&'static str, Option<Tensor>)> {
    let right: [&[u8]; 4] = [
        &[1, 1, 1, 1, 1, 1, 1],
        &[1, 1, 1, 0, 0, 0, 0],
        &[1, 0, 0, 0, 0, 0, 0],
        &[1, 1, 1, 1, 1, 1, 0],
    ];
    let left: [&[u8]; 4] = [
        &[0, 0, 1, 1, 1, 1, 1],
        &[1, 1, 1, 1, 1, 1, 1],
        &[0, 0, 0, 0, 0, 0, 1],
        &[0, 1, 1, 1, 1, 1, 1],
    ];
    let holes: [&[u8]; 4] = [
        &[1, 0, 1, 0, 1, 0, 1],
        &[0, 1, 1, 0, 0, 1, 0],
        &[1, 1, 0, 1, 1, 1, 0],
        &[0, 0, 1, 0, 0, 0, 0],
    ];
    vec![
        ("no mask", None),
        ("right-padded", Some(mask_rows(&right, dev))),
        ("left-padded", Some(mask_rows(&left, dev))),
        ("holes", Some(mask_rows(&holes, dev))),
    ]
}

/// The layer under test equals the loop on every mask kind x go_backwards x
/// zero_output_for_mask x training, in f64 (1e-10) and f32 (2e-5): outputs and the
/// gradients of inputs, initial state and the three weights.
pub fn every_mask_kind_matches_the_loop(target: &Target) {
    let (b, t, f, u) = (4, 7, 5, 6);
    let mut n = 0;
    for dtype in [DType::F64, DType::F32] {
        let x = tensor(&[b, t, f], 0.3, dtype, &target.dev);
        let h0 = tensor(&[b, u], 2.2, dtype, &target.dev);
        for (name, mask) in masks(&target.dev) {
            for (go_backwards, zero, training) in flags3() {
                let mut cfg = GruConfig::new(u);
                cfg.return_sequences = true;
                cfg.return_state = true;
                cfg.go_backwards = go_backwards;
                cfg.zero_output_for_mask = zero;
                let fast = run_call(
                    &target.fast_layer(&cfg, f, dtype),
                    &x,
                    mask.as_ref(),
                    &h0,
                    training,
                );
                let slow = run_call(
                    &target.loop_layer(&cfg, f, dtype),
                    &x,
                    mask.as_ref(),
                    &h0,
                    training,
                );
                assert_eq!(fast.path, target.fast_path(dtype));
                assert_eq!(slow.path, ExecPath::Loop);
                let tol = if dtype == DType::F64 { 1e-10 } else { 2e-5 };
                let label = format!(
                    "{dtype:?} {name} go_backwards={go_backwards} zero={zero} training={training}"
                );
                fast.assert_close(&slow, tol, tol * 10.0, &label);
                n += 1;
            }
        }
    }
    println!(
        "{:?} == loop in {n} configurations (outputs, 5 gradients each)",
        target.fast_path(DType::F32)
    );
}

/// Every combination of three flags.
pub(crate) fn flags3() -> Vec<(bool, bool, bool)> {
    (0..8)
        .map(|k| (k & 4 != 0, k & 2 != 0, k & 1 != 0))
        .collect()
}

/// f16 and bf16 against f32 (stated tolerance: outputs within 3e-2 on unit-scale data,
/// gradients within 1e-1 relative to max(1, |g|)).
pub fn half_types_track_f32(target: &Target) {
    let mut cfg = GruConfig::new(16);
    cfg.return_sequences = true;
    cfg.return_state = true;
    halves_track_f32(
        target,
        |dt| target.fast_layer(&cfg, 12, dt),
        |dt| target.fast_path(dt),
        "",
    );
}

/// The training call (8 rows, 16 steps, 12 features, a mask shortening row r by r steps) of
/// `layer(dtype)` in f16 and bf16 tracks its f32 call ([`Outcome::assert_tracks_f32`]); each
/// call takes `path(dtype)`.
pub(crate) fn halves_track_f32(
    target: &Target,
    layer: impl Fn(DType) -> Gru,
    path: impl Fn(DType) -> ExecPath,
    label: &str,
) {
    let (b, t, f) = (8, 16, 12);
    let dev = &target.dev;
    let mask = mask_by(b, t, dev, |r, k| k < t - r);
    let g = layer(DType::F32);
    let x = tensor(&[b, t, f], 0.9, DType::F32, dev);
    let h0 = tensor(&[b, g.config().units], 1.7, DType::F32, dev);
    let reference = run_call(&g, &x, Some(&mask), &h0, true);
    assert_eq!(reference.path, path(DType::F32));
    for dtype in [DType::F16, DType::BF16] {
        let (xd, hd) = (x.to_dtype(dtype).unwrap(), h0.to_dtype(dtype).unwrap());
        let got = run_call(&layer(dtype), &xd, Some(&mask), &hd, true);
        assert_eq!(got.path, path(dtype));
        got.assert_tracks_f32(&reference, &format!("{label}{dtype:?}"));
    }
}

/// Auto, Force and Never: which path runs, and the condition a forced call names.
pub fn auto_force_never(target: &Target) {
    let (b, t, f, u) = (3, 4, 2, 3);
    let dev = &target.dev;
    let x = tensor(&[b, t, f], 0.1, DType::F32, dev);
    let empty_row = mask_rows(&[&[1, 1, 0, 0], &[0, 0, 0, 0], &[1, 1, 1, 1]], dev);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    let opts = |m| CallOptions {
        mask: m,
        ..Default::default()
    };
    let train = CallOptions {
        training: true,
        ..Default::default()
    };
    let layer = |c: &GruConfig| crate::common::layer(c, f, DType::F32, dev);
    // Auto: cuDNN without a mask (on a GPU); an all-False row keeps it out.
    let auto = layer(&cfg);
    let path = auto.call(&x, opts(None)).unwrap().dispatch.path;
    assert_eq!(
        path,
        if target.is_cuda() {
            ExecPath::Cudnn
        } else {
            ExecPath::Fused
        }
    );
    let fell_back = auto.call(&x, opts(Some(&empty_row))).unwrap();
    assert_eq!(fell_back.dispatch.path, target.never_path(DType::F32));
    assert!(fell_back.dispatch.explain().contains("row 1 is all False"));
    // Force: the same mask is an error naming condition 7.
    cfg.use_cudnn = UseCudnn::Force;
    let err = layer(&cfg)
        .call(&x, opts(Some(&empty_row)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("7. mask"), "{err}");
    // Force with relu: condition 1.
    let mut relu = cfg.clone();
    relu.activation = Activation::Relu;
    let err = layer(&relu).call(&x, opts(None)).unwrap_err().to_string();
    assert!(err.contains("1. activation"), "{err}");
    // Force with recurrent dropout in training: condition 3; at inference it runs.
    let mut rd = cfg.clone();
    rd.recurrent_dropout = 0.3;
    let l = layer(&rd);
    let err = l.call(&x, train).unwrap_err().to_string();
    assert!(err.contains("3. no recurrent dropout"), "{err}");
    target.expect_forced(l.call(&x, opts(None)), |o| o.dispatch.path);
    // Input dropout in training stays on cuDNN (one mask shared over time).
    let mut dp = cfg.clone();
    dp.dropout = 0.5;
    dp.seed = Some(3);
    let l = layer(&dp);
    let out = l.call(&x, train);
    if let Ok(o) = &out {
        assert!(flat(&o.output).iter().all(|v| v.is_finite()));
    }
    target.expect_forced(out, |o| o.dispatch.path);
    // Never: the loop on a GPU.
    cfg.use_cudnn = UseCudnn::Never;
    let path = layer(&cfg).call(&x, opts(None)).unwrap().dispatch.path;
    assert_eq!(path, target.never_path(DType::F32));
    // The scan feeds the dispatcher.
    assert_eq!(
        target.scan(&empty_row, false, false).facts(),
        MaskFacts::EmptyRow { row: 1 }
    );
}

/// Stateful calls carry the state between calls as the loop does.
pub fn stateful_calls_match_the_loop(target: &Target) {
    let (b, t, f, u) = (2, 5, 3, 4);
    let mut cfg = GruConfig::new(u);
    cfg.stateful = true;
    cfg.return_sequences = true;
    let fast = target.fast_layer(&cfg, f, DType::F64);
    let slow = target.loop_layer(&cfg, f, DType::F64);
    for call in 0..3 {
        let x = tensor(&[b, t, f], call as f64, DType::F64, &target.dev);
        let a = fast.call(&x, CallOptions::default()).unwrap();
        let s = slow.call(&x, CallOptions::default()).unwrap();
        assert_eq!(a.dispatch.path, target.fast_path(DType::F64));
        assert_eq!(s.dispatch.path, ExecPath::Loop);
        let d = max_diff(&flat(&a.output), &flat(&s.output));
        assert!(d < 1e-10, "stateful call {call}: {d:e}");
    }
}

/// A repeated call with the same shape and lengths sets no cuDNN descriptor again; new
/// lengths set the data descriptors again but build no new plan.
pub fn descriptors_are_cached_per_shape(target: &Target) {
    let (b, t, f, u) = (5, 9, 4, 8);
    let g = target.fast_layer(&GruConfig::new(u), f, DType::F32);
    let x = tensor(&[b, t, f], 0.5, DType::F32, &target.dev);
    let call = |mask: Option<&Tensor>| {
        let out = g
            .call(
                &x,
                CallOptions {
                    mask,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(out.dispatch.path, target.fast_path(DType::F32));
    };
    let m = mask_by(b, t, &target.dev, |r, k| r != 1 || k < 3);
    call(None);
    let first = cache_stats(target);
    for _ in 0..5 {
        call(None);
    }
    assert_eq!(cache_stats(target), first, "same shape rebuilt descriptors");
    call(Some(&m));
    let after = cache_stats(target);
    println!("cache (plans built, shapes set): {first:?} -> {after:?}");
    if let (Some(first), Some(after)) = (first, after) {
        assert_eq!(after.0, first.0, "new lengths built a new plan");
        assert_eq!(
            after.1,
            first.1 + 1,
            "new lengths did not set the descriptors"
        );
    }
}

/// (plans built, shapes set) of this thread's cuDNN cache; `None` off the GPU.
fn cache_stats(target: &Target) -> Option<(usize, usize)> {
    #[cfg(feature = "cudnn")]
    if target.is_cuda() {
        let s = candle_gru::cudnn::cache_stats();
        return Some((s.plans_built, s.shapes_set));
    }
    let _ = target;
    None
}

/// The weight space cuDNN reports for each dtype (printed for the report) holds six
/// matrices and six biases of the GRU's sizes; the host model of it does too.
pub fn weight_space_layout_facts(target: &Target) {
    let (i, u) = (5, 7);
    let (canonical, total) = candle_gru::cudnn::weights::Offsets::host_model(i, u);
    let mut spans: Vec<(usize, usize)> = (0..6)
        .flat_map(|id| {
            let cols = if id < 3 { i } else { u };
            [(canonical.matrix[id], u * cols), (canonical.bias[id], u)]
        })
        .collect();
    spans.sort();
    assert_eq!(spans[0].0, 0);
    for w in spans.windows(2) {
        assert_eq!(w[0].0 + w[0].1, w[1].0, "host model has a gap or overlap");
    }
    assert_eq!(spans[11].0 + spans[11].1, total);
    cudnn_layout_facts(target, i, u);
}

#[cfg(feature = "cudnn")]
fn cudnn_layout_facts(target: &Target, i: usize, u: usize) {
    let Device::Cuda(cuda) = &target.dev else {
        return;
    };
    println!("cuDNN version {}", candle_gru::cudnn::cudnn_version());
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
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

#[cfg(not(feature = "cudnn"))]
fn cudnn_layout_facts(_: &Target, _: usize, _: usize) {}

/// A second backward of one call, and a backward of an inference call, recompute what
/// they need and give the first backward's gradients (within 1e-10 in f64: cuDNN's RNN is
/// not documented to be bitwise deterministic).
pub fn second_backward_and_inference_backward_recompute(target: &Target) {
    let (b, t, f, u) = (3, 6, 4, 5);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    cfg.return_state = true;
    let g = target.fast_layer(&cfg, f, DType::F64);
    let x = Var::from_tensor(&tensor(&[b, t, f], 0.2, DType::F64, &target.dev)).unwrap();
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
        assert_eq!(out.dispatch.path, target.fast_path(DType::F64));
        let loss = out.output.sqr().unwrap().sum_all().unwrap();
        let first = flat(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        if twice {
            let second = flat(loss.backward().unwrap().get(x.as_tensor()).unwrap());
            let d = max_diff(&first, &second);
            assert!(d < 1e-10, "second backward differs by {d:e}");
        }
        first
    };
    let trained = grads_of(true, true);
    let inferred = grads_of(false, false);
    let d = max_diff(&trained, &inferred);
    assert!(d < 1e-10, "inference backward differs by {d:e}");
}

/// TF32 is opt-in for f32 and stays within 2e-2 of exact math at this shape (a simulation
/// of TF32's 10-bit mantissa products gives 5.6e-3 to 7.7e-3 here).
pub fn tf32_is_opt_in(target: &Target) {
    let (b, t, f, u) = (16, 32, 64, 64);
    let mut cfg = GruConfig::new(u);
    cfg.return_sequences = true;
    let x = tensor(&[b, t, f], 0.6, DType::F32, &target.dev);
    let exact = target.fast_layer(&cfg, f, DType::F32);
    let fast = target.fast_layer(&cfg, f, DType::F32).with_cudnn_tf32(true);
    assert!(!exact.cudnn_tf32() && fast.cudnn_tf32());
    let e = exact.call(&x, CallOptions::default()).unwrap();
    let a = fast.call(&x, CallOptions::default()).unwrap();
    assert_eq!(a.dispatch.path, target.fast_path(DType::F32));
    let d = max_diff(&flat(&e.output), &flat(&a.output));
    println!("TF32 vs FMA math: max |diff| {d:.2e}");
    assert!(d < 2e-2, "{d:e}");
}

/// Many forward+backward training calls with a mask (up to `max_calls`, or `budget` of
/// time after a 200-call warm-up): on a GPU, free device memory must not shrink by more
/// than 32 MiB.
pub fn memory_is_steady(target: &Target, max_calls: usize, budget: Duration) {
    let mut cfg = GruConfig::new(32);
    cfg.return_sequences = true;
    let g: Gru = target.fast_layer(&cfg, 16, DType::F32);
    memory_steady_with(target, &g, target.fast_path(DType::F32), max_calls, budget);
}

/// [`memory_is_steady`] for layer `g` (input 16), whose calls must take `path`.
pub fn memory_steady_with(
    target: &Target,
    g: &Gru,
    path: ExecPath,
    max_calls: usize,
    budget: Duration,
) {
    let (b, t, f) = (8, 20, 16);
    let x = tensor(&[b, t, f], 0.8, DType::F32, &target.dev);
    let mask = mask_by(b, t, &target.dev, |r, k| k >= r);
    let step = || {
        let opts = CallOptions {
            mask: Some(&mask),
            training: true,
            ..Default::default()
        };
        let out = g.call(&x, opts).unwrap();
        assert_eq!(out.dispatch.path, path);
        let grads = out.output.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(g.weights()[0]).is_some());
    };
    for _ in 0..max_calls.min(200) {
        step();
    }
    let before = free_device_memory(target);
    let start = Instant::now();
    let mut calls = 0;
    while calls < max_calls && start.elapsed() < budget {
        step();
        calls += 1;
    }
    let after = free_device_memory(target);
    println!(
        "{path:?}: {calls} forward+backward calls in {:.1} s; free device memory {before:?} -> {after:?} bytes",
        start.elapsed().as_secs_f64()
    );
    if let (Some(before), Some(after)) = (before, after) {
        let grew = before.saturating_sub(after);
        assert!(grew < 32 << 20, "device memory grew by {grew} bytes");
        assert!(calls >= 1000, "only {calls} calls ran in the time budget");
    }
}

/// Free device memory in bytes after a synchronize; `None` off the GPU.
fn free_device_memory(target: &Target) -> Option<usize> {
    #[cfg(feature = "cudnn")]
    if let Device::Cuda(cuda) = &target.dev {
        target.dev.synchronize().unwrap();
        return Some(cuda.cuda_stream().context().mem_get_info().unwrap().0);
    }
    let _ = target;
    None
}

/// Declares one `#[test]` per `name => body`, running `body(&target)` when `$target` (an
/// `Option<Target>`) is `Some`.
#[macro_export]
macro_rules! suite_tests {
    ($target:expr; $($name:ident => $body:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(t) = $target {
                    ($body)(&t);
                }
            }
        )*
    };
}
