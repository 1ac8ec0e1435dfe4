//! Keras' mixed precision policies on a target: the Keras 3.15.1 cases of tests/data/mixed
//! (float32 variables, computation in float16/bfloat16), and a mixed layer against a half
//! layer on the same weights cast down.

use crate::common::target::Target;
use crate::common::{candle_dtype, eps, flat, mask_rows, max_diff, numbers, read_mixed, tensor};
use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::{CpuPath, GpuPath};
use candle_gru::{CallOptions, ExecPath, Gru, GruConfig, GruOutput};
use serde_json::Value;

/// The Keras mixed precision cases (tests/data/mixed/README.md).
pub const MIXED_CASES: [&str; 3] = [
    "mixed_float16_sequence_state_mask",
    "mixed_bfloat16_last_go_backwards_activity",
    "mixed_float16_no_bias_hard_sigmoid",
];

fn f32_var(values: Vec<f64>, shape: &[usize], dev: &Device) -> Var {
    let t = Tensor::from_vec(values, shape, dev).unwrap();
    Var::from_tensor(&t.to_dtype(DType::F32).unwrap()).unwrap()
}

/// One case: the layer on the case's float32 weights (as `Var`s) on the target, its call,
/// and what Keras computed.
struct MixedCase {
    json: Value,
    gru: Gru,
    weights: Vec<(&'static str, Var)>,
    x: Var,
    h0: Option<Var>,
    mask: Option<Tensor>,
}

impl MixedCase {
    /// The case on `dev`, on the op-by-op loop when `on_loop`.
    fn load(name: &str, dev: &Device, on_loop: bool) -> MixedCase {
        let json = read_mixed(&format!("{name}.json"));
        let config = GruConfig::from_keras_json(&json["config"]).unwrap();
        let mut weights = Vec::new();
        for n in ["kernel", "recurrent_kernel", "bias"] {
            let Some(w) = json["weights"].get(n) else {
                continue;
            };
            let shape: Vec<usize> = numbers(&w["shape"]).iter().map(|&d| d as usize).collect();
            weights.push((n, f32_var(numbers(&w["data"]), &shape, dev)));
        }
        let t = |k: usize| weights[k].1.as_tensor().clone();
        let bias = (weights.len() == 3).then(|| t(2));
        let mut gru = Gru::from_weights(config, t(0), t(1), bias).unwrap();
        if on_loop {
            gru = gru
                .with_cpu_path(CpuPath::Loop)
                .with_gpu_path(GpuPath::Loop);
        }
        let shape: Vec<usize> = numbers(&json["input_shape"])
            .iter()
            .map(|&d| d as usize)
            .collect();
        let (b, steps, u) = (shape[0], shape[1], gru.config().units);
        let x = f32_var(numbers(&json["inputs"]), &shape, dev);
        let h0 = (!json["initial_state"].is_null())
            .then(|| f32_var(numbers(&json["initial_state"]), &[b, u], dev));
        let mask = (!json["mask"].is_null()).then(|| {
            let m: Vec<u8> = numbers(&json["mask"]).iter().map(|&v| v as u8).collect();
            Tensor::from_vec(m, (b, steps), dev).unwrap()
        });
        MixedCase {
            json,
            gru,
            weights,
            x,
            h0,
            mask,
        }
    }

    fn call(&self) -> GruOutput {
        let opts = CallOptions {
            mask: self.mask.as_ref(),
            initial_state: self.h0.as_ref().map(|v| v.as_tensor()),
            training: false,
        };
        self.gru.call(self.x.as_tensor(), opts).unwrap()
    }

    /// sum(output_i (as f32) * cotangent_i), the scalar Keras differentiated.
    fn loss(&self, out: &GruOutput) -> Tensor {
        let dev = self.x.device();
        let cots = self.json["cotangents"].as_array().unwrap();
        let mut total = Tensor::zeros((), DType::F32, dev).unwrap();
        for (o, c) in out.to_vec().iter().zip(cots) {
            let c = Tensor::from_vec(numbers(c), o.dims(), dev).unwrap();
            let c = c.to_dtype(DType::F32).unwrap();
            let term = (o.to_dtype(DType::F32).unwrap() * c).unwrap().sum_all();
            total = (total + term.unwrap()).unwrap();
        }
        total
    }

    /// The differentiated tensors with Keras' names.
    fn watched(&self) -> Vec<(&str, &Var)> {
        let mut w: Vec<(&str, &Var)> = self.weights.iter().map(|(n, v)| (*n, v)).collect();
        w.push(("inputs", &self.x));
        w.extend(self.h0.as_ref().map(|h| ("initial_state", h)));
        w
    }
}

/// Each Keras mixed case under `use_cudnn = Auto` (cuDNN or the step kernels on a GPU, the
/// fused kernels on the CPU) and on the loop (the half type op by op): outputs, state and activity loss in the half type within two of its
/// epsilons of Keras' values (Keras' own float32 policy is about one away), gradients in
/// float32 within four epsilons of their scale.
pub fn mixed_policy_matches_keras(target: &Target) {
    for (name, on_loop) in MIXED_CASES.iter().flat_map(|n| [(*n, false), (*n, true)]) {
        let case = MixedCase::load(name, &target.dev, on_loop);
        let expected = &case.json["expected"];
        let half = candle_dtype(expected["output_dtypes"][0].as_str().unwrap());
        assert_eq!(case.gru.dtype(), DType::F32, "{name}: float32 variables");
        assert_eq!(case.gru.compute_dtype(), half, "{name}");
        let out = case.call();
        println!("{name}: path {:?}", out.dispatch.path);
        match (on_loop, target.is_cuda()) {
            (true, _) => assert_eq!(out.dispatch.path, ExecPath::Loop, "{name}"),
            (false, true) => assert_ne!(out.dispatch.path, ExecPath::Loop, "{name}"),
            (false, false) => assert_eq!(out.dispatch.path, ExecPath::Fused, "{name}"),
        }
        let want = expected["outputs"].as_array().unwrap();
        assert_eq!(out.to_vec().len(), want.len(), "{name}: number of outputs");
        for (k, (o, w)) in out.to_vec().iter().zip(want).enumerate() {
            assert_eq!(o.dtype(), half, "{name}: output {k} dtype");
            let err = max_diff(&flat(o), &numbers(w));
            println!(
                "{name}: output {k} max error {err:.3e} ({half:?} eps {:.3e})",
                eps(half)
            );
            assert!(err <= 2.0 * eps(half), "{name}: output {k} error {err:.3e}");
        }
        let losses = numbers(&expected["activity_losses"]);
        assert_eq!(out.activity_loss.is_some(), !losses.is_empty(), "{name}");
        for (l, w) in out.activity_loss.iter().zip(losses) {
            assert_eq!(l.dtype(), half, "{name}: activity loss dtype");
            let got = l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            println!("{name}: activity loss {got} (Keras {w})");
            assert!((got - w).abs() <= 2.0 * eps(half) * w.abs(), "{name}");
        }
        let grads = case.loss(&out).backward().unwrap();
        for (n, v) in case.watched() {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no d{n}"));
            assert_eq!(
                g.dtype(),
                DType::F32,
                "{name}: d{n} in the variables' dtype"
            );
            let w = numbers(&expected["gradients"][n]);
            let scale = w.iter().fold(1f64, |m, v| m.max(v.abs()));
            let err = max_diff(&flat(g), &w);
            println!("{name}: d{n} max error {err:.3e} (scale {scale:.2})");
            assert!(
                err <= 4.0 * eps(half) * scale,
                "{name}: d{n} error {err:.3e}"
            );
        }
    }
}

/// A mixed layer on float32 weights computes what a half layer on those weights cast down
/// computes, bit for bit (outputs, and weight gradients cast up), whether its input comes in
/// float32 or in the half type: the policy is casts around the half layer's call, nothing
/// else.
pub fn mixed_layer_is_a_half_layer_on_cast_weights(target: &Target) {
    let dev = &target.dev;
    for (policy, plain) in [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")] {
        let config = |dtype: &str| {
            let json = serde_json::json!({"units": 6, "return_sequences": true, "dtype": dtype});
            GruConfig::from_keras_json(&json).unwrap()
        };
        let half = candle_dtype(plain);
        let w32: Vec<Var> = [(4, 18), (6, 18), (2, 18)]
            .iter()
            .enumerate()
            .map(|(k, &(r, c))| Var::from_tensor(&tensor(&[r, c], k as f64, DType::F32, dev)))
            .collect::<candle_core::Result<_>>()
            .unwrap();
        let cast: Vec<Var> = w32
            .iter()
            .map(|w| Var::from_tensor(&w.as_tensor().to_dtype(half).unwrap()).unwrap())
            .collect();
        let build = |cfg: GruConfig, w: &[Var]| {
            let t = |k: usize| w[k].as_tensor().clone();
            Gru::from_weights(cfg, t(0), t(1), Some(t(2))).unwrap()
        };
        let mixed = build(config(policy), &w32);
        let reference = build(config(plain), &cast);
        assert_eq!(
            (mixed.compute_dtype(), reference.compute_dtype()),
            (half, half)
        );
        let x32 = tensor(&[3, 5, 4], 7.0, DType::F32, dev);
        let x_half = x32.to_dtype(half).unwrap();
        let rows: [&[u8]; 3] = [&[1, 1, 1, 1, 1], &[1, 1, 1, 0, 0], &[1, 1, 0, 0, 0]];
        let mask = mask_rows(&rows, dev);
        let opts = CallOptions {
            mask: Some(&mask),
            ..Default::default()
        };
        let a = mixed.call(&x32, opts).unwrap();
        let b = reference.call(&x_half, opts).unwrap();
        assert_eq!(a.dispatch.path, b.dispatch.path, "{policy}");
        assert_eq!(a.output.dtype(), half);
        assert_eq!(
            flat(&a.output),
            flat(&b.output),
            "{policy}: outputs bit for bit"
        );
        let again = mixed.call(&x_half, opts).unwrap().output;
        assert_eq!(flat(&again), flat(&b.output), "{policy}: half-typed input");
        let cot = tensor(a.output.dims(), 3.0, DType::F32, dev);
        let loss = |o: &Tensor| {
            let o = o.to_dtype(DType::F32).unwrap();
            (o * &cot).unwrap().sum_all().unwrap()
        };
        let ga = loss(&a.output).backward().unwrap();
        let gb = loss(&b.output).backward().unwrap();
        for (k, (v32, v_half)) in w32.iter().zip(&cast).enumerate() {
            let g32 = ga
                .get(v32.as_tensor())
                .expect("gradient reaches the f32 weight");
            let g_half = gb.get(v_half.as_tensor()).unwrap();
            assert_eq!(g32.dtype(), DType::F32);
            // A difference only here on a GPU would point at a nondeterministic kernel.
            assert_eq!(flat(g32), flat(g_half), "{policy}: weight {k} gradient");
        }
    }
}
