//! Keras' mixed precision policies (`mixed_float16`, `mixed_bfloat16`): float32 variables,
//! computation and outputs in the half type, gradients back to the float32 variables.
//! Against the real Keras 3.15.1 (tests/data/mixed, made by
//! scripts/make_mixed_policy_cases.py) and against a half-precision layer on the same
//! weights.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::io::keras::KerasModel;
use candle_gru::candle::{Bidirectional, GruStack, MergeMode, StackLayer};
use candle_gru::{CallOptions, Error, ExecPath, Gru, GruConfig, GruError};
use common::{flat, max_diff};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mixed")
        .join(name)
}

fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data(name)).unwrap()).unwrap()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn f32_var(values: Vec<f64>, shape: &[usize]) -> Var {
    let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    Var::from_tensor(&t.to_dtype(DType::F32).unwrap()).unwrap()
}

/// The machine epsilon of a half type: the spacing of its values just above 1.
fn eps(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        other => panic!("not a half type: {other:?}"),
    }
}

fn candle_dtype(keras: &str) -> DType {
    match keras {
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float32" => DType::F32,
        other => panic!("unexpected dtype {other}"),
    }
}

/// One case of tests/data/mixed: the layer on the case's float32 weights (as `Var`s), its
/// call, and what Keras computed.
struct MixedCase {
    json: Value,
    gru: Gru,
    weights: Vec<(String, Var)>,
    x: Var,
    h0: Option<Var>,
    mask: Option<Tensor>,
}

impl MixedCase {
    fn load(name: &str) -> MixedCase {
        let json = read(&format!("{name}.json"));
        let config = GruConfig::from_keras_json(&json["config"]).unwrap();
        let var = |n: &str| {
            let w = &json["weights"][n];
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            f32_var(numbers(&w["data"]), &shape)
        };
        let mut weights = vec![
            ("kernel".to_string(), var("kernel")),
            ("recurrent_kernel".to_string(), var("recurrent_kernel")),
        ];
        if json["weights"].get("bias").is_some() {
            weights.push(("bias".to_string(), var("bias")));
        }
        let bias = weights.get(2).map(|(_, v)| v.as_tensor().clone());
        let gru = Gru::from_weights(
            config,
            weights[0].1.as_tensor().clone(),
            weights[1].1.as_tensor().clone(),
            bias,
        )
        .unwrap();
        let shape: Vec<usize> = numbers(&json["input_shape"])
            .iter()
            .map(|&d| d as usize)
            .collect();
        let (b, t, u) = (shape[0], shape[1], gru.config().units);
        let x = f32_var(numbers(&json["inputs"]), &shape);
        let h0 = (!json["initial_state"].is_null())
            .then(|| f32_var(numbers(&json["initial_state"]), &[b, u]));
        let mask = (!json["mask"].is_null()).then(|| {
            let m: Vec<u8> = numbers(&json["mask"]).iter().map(|&v| v as u8).collect();
            Tensor::from_vec(m, (b, t), &Device::Cpu).unwrap()
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

    fn compute_dtype(&self) -> DType {
        candle_dtype(self.json["expected"]["output_dtypes"][0].as_str().unwrap())
    }

    fn call(&self) -> candle_gru::GruOutput {
        let opts = CallOptions {
            mask: self.mask.as_ref(),
            initial_state: self.h0.as_ref().map(|v| v.as_tensor()),
            training: false,
        };
        self.gru.call(self.x.as_tensor(), opts).unwrap()
    }

    /// sum(output_i (as f32) * cotangent_i), the scalar Keras differentiated.
    fn loss(&self, out: &candle_gru::GruOutput) -> Tensor {
        let cots = self.json["cotangents"].as_array().unwrap();
        let mut total = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        for (o, c) in out.to_vec().iter().zip(cots) {
            let c = Tensor::from_vec(numbers(c), o.dims(), &Device::Cpu).unwrap();
            let c = c.to_dtype(DType::F32).unwrap();
            let term = (o.to_dtype(DType::F32).unwrap() * c).unwrap().sum_all();
            total = (total + term.unwrap()).unwrap();
        }
        total
    }
}

const CASES: [&str; 3] = [
    "mixed_float16_sequence_state_mask",
    "mixed_bfloat16_last_go_backwards_activity",
    "mixed_float16_no_bias_hard_sigmoid",
];

#[test]
fn keras_mixed_policy_cases_match_keras() {
    for name in CASES {
        let case = MixedCase::load(name);
        let half = case.compute_dtype();
        assert_eq!(case.gru.dtype(), DType::F32, "{name}: float32 variables");
        assert_eq!(case.gru.compute_dtype(), half, "{name}");
        let out = case.call();
        let expected = &case.json["expected"];
        // The loop computes f16/bf16 on the CPU; the dispatcher says so.
        assert_eq!(out.dispatch.path, ExecPath::Loop, "{name}");
        let outputs = out.to_vec();
        let want = expected["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), want.len(), "{name}: number of outputs");
        for (k, (o, w)) in outputs.iter().zip(want).enumerate() {
            assert_eq!(o.dtype(), half, "{name}: output {k} dtype");
            // Keras' own float32 policy differs from its mixed one by about this much; ours
            // must be as close to Keras' mixed values as a few steps of half rounding.
            let err = max_diff(&flat(o), &numbers(w));
            println!(
                "{name}: output {k} max error {err:.3e} ({half:?} eps {:.3e})",
                eps(half)
            );
            assert!(err <= 2.0 * eps(half), "{name}: output {k} error {err:.3e}");
        }
        for (l, w) in out
            .activity_loss
            .iter()
            .zip(numbers(&expected["activity_losses"]))
        {
            assert_eq!(l.dtype(), half, "{name}: activity loss dtype");
            let got = l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert!(
                (got - w).abs() <= 2.0 * eps(half) * w.abs(),
                "{name}: {got} vs {w}"
            );
        }
        assert_eq!(
            out.activity_loss.is_some(),
            !numbers(&expected["activity_losses"]).is_empty()
        );
        let grads = case.loss(&out).backward().unwrap();
        let mut wanted: Vec<(&str, &Var)> =
            case.weights.iter().map(|(n, v)| (n.as_str(), v)).collect();
        wanted.push(("inputs", &case.x));
        wanted.extend(case.h0.as_ref().map(|h| ("initial_state", h)));
        for (n, v) in wanted {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no grad {n}"));
            assert_eq!(
                g.dtype(),
                DType::F32,
                "{name}: gradient of {n} in the variables' dtype"
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

/// A mixed layer on float32 weights computes exactly what a half layer on those weights
/// cast to the half type computes, and its weights' gradients are the half layer's, cast up.
#[test]
fn mixed_layer_is_a_half_layer_on_cast_weights() {
    for (policy, half) in [
        ("mixed_float16", DType::F16),
        ("mixed_bfloat16", DType::BF16),
    ] {
        let json = serde_json::json!({"units": 6, "return_sequences": true, "dtype": policy});
        let mixed_cfg = GruConfig::from_keras_json(&json).unwrap();
        let mut half_cfg = mixed_cfg.clone();
        half_cfg.dtype = GruConfig::from_keras_str(&format!(
            r#"{{"units": 6, "dtype": "{}"}}"#,
            if half == DType::F16 {
                "float16"
            } else {
                "bfloat16"
            }
        ))
        .unwrap()
        .dtype;
        let dev = Device::Cpu;
        let w32: Vec<Var> = [(4, 18), (6, 18), (2, 18)]
            .iter()
            .enumerate()
            .map(|(k, &(r, c))| {
                Var::from_tensor(&common::tensor(&[r, c], k as f64, DType::F32, &dev)).unwrap()
            })
            .collect();
        let w16: Vec<Var> = w32
            .iter()
            .map(|w| Var::from_tensor(&w.as_tensor().to_dtype(half).unwrap()).unwrap())
            .collect();
        let build = |cfg: &GruConfig, w: &[Var]| {
            let t = |k: usize| w[k].as_tensor().clone();
            Gru::from_weights(cfg.clone(), t(0), t(1), Some(t(2))).unwrap()
        };
        let mixed = build(&mixed_cfg, &w32);
        let plain = build(&half_cfg, &w16);
        assert_eq!(plain.compute_dtype(), half);
        let x32 = common::tensor(&[3, 5, 4], 7.0, DType::F32, &dev);
        let x16 = x32.to_dtype(half).unwrap();
        let mask = common::mask_rows(
            &[&[1, 1, 1, 1, 1], &[1, 1, 1, 0, 0], &[0, 1, 1, 1, 1]],
            &dev,
        );
        let opts = CallOptions {
            mask: Some(&mask),
            ..Default::default()
        };
        let a = mixed.call(&x32, opts).unwrap().output;
        let b = plain.call(&x16, opts).unwrap().output;
        assert_eq!(a.dtype(), half);
        assert_eq!(flat(&a), flat(&b), "{policy}: outputs bit for bit");
        // Half-typed input to the mixed layer: the same again.
        assert_eq!(flat(&mixed.call(&x16, opts).unwrap().output), flat(&b));
        let cot = common::tensor(a.dims(), 3.0, DType::F32, &dev);
        let loss = |o: &Tensor| {
            (o.to_dtype(DType::F32).unwrap() * &cot)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let ga = loss(&a).backward().unwrap();
        let gb = loss(&b).backward().unwrap();
        for (k, (v32, v16)) in w32.iter().zip(&w16).enumerate() {
            let g32 = ga
                .get(v32.as_tensor())
                .expect("gradient reaches the f32 weight");
            let g16 = gb.get(v16.as_tensor()).unwrap();
            assert_eq!(g32.dtype(), DType::F32);
            assert_eq!(flat(g32), flat(g16), "{policy}: weight {k} gradient");
        }
    }
}

fn mixed_layer(units: usize, input: usize, extra: &str) -> Gru {
    let cfg = GruConfig::from_keras_str(&format!(
        r#"{{"units": {units}, "dtype": "mixed_float16"{extra}}}"#
    ))
    .unwrap();
    common::layer(&cfg, input, DType::F32, &Device::Cpu)
}

#[test]
fn mixed_inputs_state_and_errors() {
    let dev = Device::Cpu;
    let gru = mixed_layer(4, 3, r#", "stateful": true, "return_state": true"#);
    let x = common::tensor(&[2, 5, 3], 1.0, DType::F32, &dev);
    let out = gru.call(&x, CallOptions::default()).unwrap();
    assert_eq!(out.state.as_ref().unwrap().dtype(), DType::F16);
    assert_eq!(gru.states().unwrap().dtype(), DType::F16, "kept state");
    // The second call starts from the kept f16 state; an f32 initial state is cast.
    let h0 = common::tensor(&[2, 4], 2.0, DType::F32, &dev);
    let with_h0 = CallOptions {
        initial_state: Some(&h0),
        ..Default::default()
    };
    let a = gru.call(&x, with_h0).unwrap().output;
    let h0_half = h0.to_dtype(DType::F16).unwrap();
    let b = gru
        .call(
            &x,
            CallOptions {
                initial_state: Some(&h0_half),
                ..Default::default()
            },
        )
        .unwrap()
        .output;
    assert_eq!(flat(&a), flat(&b));
    let explained = gru.explain_dispatch(&x, CallOptions::default()).unwrap();
    assert_eq!(explained.path, ExecPath::Loop, "f16 runs on the CPU loop");
    // Neither the compute nor the variables' dtype: a typed error naming both.
    for (what, opts, input) in [
        (
            "inputs",
            CallOptions::default(),
            x.to_dtype(DType::F64).unwrap(),
        ),
        (
            "inputs",
            CallOptions::default(),
            x.to_dtype(DType::BF16).unwrap(),
        ),
    ] {
        match gru.call(&input, opts) {
            Err(Error::Gru(GruError::DType {
                what: w,
                expected,
                got,
            })) => {
                assert_eq!(w, what);
                assert!(
                    expected.contains("F16") && expected.contains("F32"),
                    "{expected}"
                );
                assert_eq!(got, format!("{:?}", input.dtype()));
            }
            other => panic!("expected a dtype error, got {other:?}"),
        }
    }
    let h64 = h0.to_dtype(DType::F64).unwrap();
    let bad_h0 = CallOptions {
        initial_state: Some(&h64),
        ..Default::default()
    };
    assert!(matches!(
        gru.call(&x, bad_h0),
        Err(Error::Gru(GruError::DType { what, .. })) if what == "initial_state"
    ));
    // A plain float32 layer still takes float32 only.
    let plain = common::layer(&GruConfig::new(4), 3, DType::F32, &dev);
    assert_eq!(plain.compute_dtype(), DType::F32);
    assert!(plain
        .call(&x.to_dtype(DType::F16).unwrap(), CallOptions::default())
        .is_err());
}

#[test]
fn mixed_keras_model_file_runs_in_float16() {
    let case = read("mixed_float16_masking_gru_dense.json");
    let shape: Vec<usize> = numbers(&case["input_shape"])
        .iter()
        .map(|&d| d as usize)
        .collect();
    let x = Tensor::from_vec(numbers(&case["inputs"]), shape.as_slice(), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let keras = data("mixed_float16_masking_gru_dense.keras");
    let from_archive = KerasModel::load(&keras, DType::F32, &Device::Cpu).unwrap();
    let config = KerasModel::archive_config(&keras).unwrap();
    let h5 = data("mixed_float16_masking_gru_dense.weights.h5");
    let from_h5 = KerasModel::load_weights_h5(&config, &h5, DType::F32, &Device::Cpu).unwrap();
    let want_dtype = candle_dtype(case["output_dtype"].as_str().unwrap());
    for model in [from_archive, from_h5] {
        let dtypes: Vec<Option<DType>> = model
            .layers
            .iter()
            .map(|(_, l)| l.compute_dtype())
            .collect();
        assert_eq!(dtypes, [None, None, Some(DType::F16), Some(DType::F16)]);
        let out = model.call(&x, None).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dtype(), want_dtype);
        let err = max_diff(&flat(&out[0]), &numbers(&case["expected"]));
        let scale = numbers(&case["expected"])
            .iter()
            .fold(1f64, |m, v| m.max(v.abs()));
        println!("mixed model: max error {err:.3e} (scale {scale:.2})");
        assert!(err <= 2.0 * eps(DType::F16) * scale, "error {err:.3e}");
    }
}

#[test]
fn stacks_autocast_between_layers_and_bidirectional_directions_agree() {
    let dev = Device::Cpu;
    let first = mixed_layer(4, 3, r#", "return_sequences": true"#);
    let second = common::layer(&GruConfig::new(2), 4, DType::F32, &dev);
    let stack = GruStack::new(vec![
        StackLayer::Gru(Box::new(first)),
        StackLayer::Gru(Box::new(second)),
    ])
    .unwrap();
    let x = common::tensor(&[2, 5, 3], 1.0, DType::F32, &dev);
    let out = stack.call(&x, None, None, false).unwrap();
    assert_eq!(
        out.output.dtype(),
        DType::F32,
        "the float32 layer computes in float32"
    );
    // The first layer still checks the stack's own input.
    assert!(stack
        .call(&x.to_dtype(DType::F64).unwrap(), None, None, false)
        .is_err());
    let mut backwards = GruConfig::new(4);
    backwards.go_backwards = true;
    let fw = mixed_layer(4, 3, "");
    let bw = common::layer(&backwards, 3, DType::F32, &dev);
    match Bidirectional::from_layers(fw, bw, MergeMode::Concat) {
        Err(Error::Gru(GruError::InvalidConfig { key, expected, got })) => {
            assert_eq!(key, "backward_layer.compute dtype");
            assert!(
                expected.contains("F16") && got.contains("F32"),
                "{expected} / {got}"
            );
        }
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
    let fw = mixed_layer(4, 3, "");
    let bw = mixed_layer(4, 3, r#", "go_backwards": true"#);
    let bi = Bidirectional::from_layers(fw, bw, MergeMode::Concat).unwrap();
    let out = bi.call(&x, None, None, false).unwrap();
    assert_eq!(out.outputs[0].dtype(), DType::F16);
    assert_eq!(out.outputs[0].dims(), &[2, 8]);
}
