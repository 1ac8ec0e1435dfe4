//! Helpers shared by the integration tests. Each test file that needs them declares
//! `mod common;`; a file uses only some of them.
#![allow(dead_code)]

pub mod cell_cases;
pub mod ctc_cases;
pub mod keras_cases;
pub mod target;

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::{Gru, GruConfig};
use serde_json::Value;

/// The tensor's values as f64, flattened (any float dtype, any device).
pub fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The largest |a - b| over two equally long slices; a NaN anywhere gives infinity, so it
/// can never pass a tolerance.
pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
        )
}

/// `n` deterministic values in [-0.9, 0.9], different for each `seed`.
pub fn values(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|k| ((k as f64) * 0.731 + seed).sin() * 0.9)
        .collect()
}

/// A tensor of `values(n, seed)` with `shape`, on `dev` in `dtype`.
pub fn tensor(shape: &[usize], seed: f64, dtype: DType, dev: &Device) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// A layer with deterministic weights (trainable `Var`s) on `dev` in `dtype`.
pub fn layer(cfg: &GruConfig, input: usize, dtype: DType, dev: &Device) -> Gru {
    let u = cfg.units;
    let var = |shape: &[usize], seed: f64| {
        Var::from_tensor(&tensor(shape, seed, dtype, dev))
            .unwrap()
            .as_tensor()
            .clone()
    };
    let bias = cfg.use_bias.then(|| match cfg.reset_after {
        true => var(&[2, 3 * u], 5.0),
        false => var(&[3 * u], 5.0),
    });
    Gru::from_weights(
        cfg.clone(),
        var(&[input, 3 * u], 1.0),
        var(&[u, 3 * u], 3.0),
        bias,
    )
    .unwrap()
}

/// A (batch, time) U8 mask from rows of 0/1.
pub fn mask_rows(rows: &[&[u8]], dev: &Device) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<u8> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), dev).unwrap()
}

/// A (batch, time) U8 mask where row r keeps the steps k with `keep(r, k)`.
pub fn mask_by(b: usize, t: usize, dev: &Device, keep: impl Fn(usize, usize) -> bool) -> Tensor {
    let flat: Vec<u8> = (0..b * t).map(|n| keep(n / t, n % t) as u8).collect();
    Tensor::from_vec(flat, (b, t), dev).unwrap()
}

/// A layer built by `Gru::new` on the CPU: weights from the config's initializers, as
/// trainable Vars of a fresh VarMap.
pub fn initialized(cfg: GruConfig, input_dim: usize, dtype: DType) -> Gru {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    Gru::new(cfg, input_dim, vb).unwrap()
}

/// A JSON file of tests/data/mixed.
pub fn read_mixed(name: &str) -> Value {
    let path = format!("tests/data/mixed/{name}");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A JSON array of numbers.
pub fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The machine epsilon of a half type: the spacing of its values just above 1.
pub fn eps(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        other => panic!("not a half type: {other:?}"),
    }
}

/// The Candle dtype of a Keras dtype name.
pub fn candle_dtype(keras: &str) -> DType {
    match keras {
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float32" => DType::F32,
        "float64" => DType::F64,
        other => panic!("unexpected dtype {other}"),
    }
}

/// The float inputs (batch, T, features) of a model case of tests/data/models (`NAME.json`).
pub fn model_case_inputs(name: &str) -> Tensor {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(format!("{name}.json"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rows: Vec<Vec<Vec<f32>>> = serde_json::from_value(json["inputs"].clone()).unwrap();
    let (b, t, f) = (rows.len(), rows[0].len(), rows[0][0].len());
    let flat: Vec<f32> = rows.into_iter().flatten().flatten().collect();
    Tensor::from_vec(flat, (b, t, f), &Device::Cpu).unwrap()
}
