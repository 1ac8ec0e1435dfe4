//! The Keras `GRUCell` cases of tests/data/cell (made by
//! scripts/make_keras_gru_cell_cases.py): reading them, stepping a [`GruCell`] over one on a
//! device, and checking its states and gradients against Keras'.

use super::{candle_dtype, eps, flat, max_diff};
use candle_core::{DType, Device, Tensor, Var};
use candle_gru::{GruCell, GruCellConfig};
use serde_json::Value;

/// The step cases (every file but configs.json).
pub const CASES: &[&str] = &[
    "default",
    "reset_before",
    "no_bias_relu_hard_sigmoid",
    "implementation_1",
    "batch_1_long",
    "mixed_float16",
];

/// A file of tests/data/cell.
pub fn read(name: &str) -> Value {
    let path = format!("{}/tests/data/cell/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Nested JSON lists as a flat vector and a shape.
pub fn nested(v: &Value) -> (Vec<f64>, Vec<usize>) {
    match v {
        Value::Array(items) => {
            let mut data = Vec::new();
            let mut inner = Vec::new();
            for item in items {
                let (d, s) = nested(item);
                data.extend(d);
                inner = s;
            }
            let mut shape = vec![items.len()];
            shape.extend(inner);
            (data, shape)
        }
        other => (vec![other.as_f64().unwrap()], vec![]),
    }
}

/// Nested JSON lists as a tensor of `dtype` on `dev`.
pub fn tensor(v: &Value, dtype: DType, dev: &Device) -> Tensor {
    let (data, shape) = nested(v);
    Tensor::from_vec(data, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_device(dev)
        .unwrap()
}

/// The variables' dtype of a Keras policy (a mixed policy's are float32).
fn variable_dtype(policy: &str) -> DType {
    match policy {
        "float64" => DType::F64,
        _ => DType::F32,
    }
}

struct Stepped {
    states: Vec<Tensor>,
    grads: candle_core::backprop::GradStore,
    checks: Vec<(String, Tensor)>,
}

/// Steps the case's cell (its step layer set up by `configure`) over its inputs on `dev`
/// and differentiates Keras' loss, `sum_t sum(h_t * c_t)`.
fn step_case(
    case: &Value,
    policy: &str,
    dev: &Device,
    configure: &dyn Fn(GruCell) -> GruCell,
) -> Stepped {
    let dt = variable_dtype(policy);
    let mut config = GruCellConfig::from_keras_json(&case["config"]).unwrap();
    config.dtype = candle_gru::core::DTypePolicy::from_keras_value(&Value::from(policy)).unwrap();
    let names = ["kernel", "recurrent_kernel", "bias"];
    let present: Vec<&str> = names
        .into_iter()
        .filter(|n| case["weights"].get(*n).is_some())
        .collect();
    let weights: Vec<Var> = present
        .iter()
        .map(|n| Var::from_tensor(&tensor(&case["weights"][*n], dt, dev)).unwrap())
        .collect();
    let cell = GruCell::from_weights(
        config,
        weights[0].as_tensor().clone(),
        weights[1].as_tensor().clone(),
        weights.get(2).map(|v| v.as_tensor().clone()),
    )
    .unwrap();
    let cell = configure(cell);
    let xs = tensor(&case["inputs"], dt, dev);
    let inputs: Vec<Var> = (0..xs.dim(0).unwrap())
        .map(|t| Var::from_tensor(&xs.get(t).unwrap()).unwrap())
        .collect();
    let h0 = Var::from_tensor(&tensor(&case["initial_state"], dt, dev)).unwrap();
    let cot = tensor(&case["cotangents"], DType::F64, dev);
    let mut h = h0.as_tensor().clone();
    let mut states = Vec::new();
    let mut loss = Tensor::zeros((), DType::F64, dev).unwrap();
    for (t, x) in inputs.iter().enumerate() {
        h = cell.call(x.as_tensor(), &h, false).unwrap();
        let term = (h.to_dtype(DType::F64).unwrap() * cot.get(t).unwrap()).unwrap();
        loss = (loss + term.sum_all().unwrap()).unwrap();
        states.push(h.clone());
    }
    let grads = loss.backward().unwrap();
    let mut checks: Vec<(String, Tensor)> = present
        .iter()
        .zip(&weights)
        .map(|(n, w)| (n.to_string(), w.as_tensor().clone()))
        .collect();
    for (t, x) in inputs.iter().enumerate() {
        checks.push((format!("inputs[{t}]"), x.as_tensor().clone()));
    }
    checks.push(("initial_state".into(), h0.as_tensor().clone()));
    Stepped {
        states,
        grads,
        checks,
    }
}

/// (max error, tolerance) of `got` against Keras' values for this policy.
fn within(got: &[f64], want: &[f64], policy: &str, gradient: bool) -> (f64, f64) {
    let err = max_diff(got, want);
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    let tol = match (policy, gradient) {
        ("float64", false) => 1e-12,
        ("float64", true) => 1e-10 * scale,
        ("float32", false) => 1e-5,
        ("float32", true) => 5e-6 * scale,
        // Keras' own float32 policy is about one half epsilon away.
        (_, false) => 2.0 * eps(DType::F16),
        (_, true) => 4.0 * eps(DType::F16) * scale,
    };
    (err, tol)
}

/// The value at `path` ("inputs[3]" -> inputs, 3) of a case's gradients.
fn keras_gradient<'a>(g: &'a Value, what: &str) -> &'a Value {
    match what.strip_prefix("inputs[") {
        Some(rest) => &g["inputs"][rest.trim_end_matches(']').parse::<usize>().unwrap()],
        None => &g[what],
    }
}

/// Every case under every policy it has, stepped on `dev`: states and every gradient
/// within the tolerances of Keras'. Returns the number of (case, policy) runs.
pub fn check_all(dev: &Device, configure: impl Fn(GruCell) -> GruCell) -> usize {
    let mut runs = 0;
    for name in CASES {
        let case = read(&format!("{name}.json"));
        for (policy, expected) in case["expected"].as_object().unwrap() {
            let s = step_case(&case, policy, dev, &configure);
            let want_dtype = expected["compute_dtype"].as_str().unwrap();
            assert_eq!(s.states[0].dtype(), candle_dtype(want_dtype));
            let got: Vec<f64> = s.states.iter().flat_map(flat).collect();
            let (err, tol) = within(&got, &nested(&expected["states"]).0, policy, false);
            println!("{name} {policy} on {dev:?}: states {err:.2e}");
            assert!(err <= tol, "{name} {policy}: states {err:.3e} > {tol:.1e}");
            for (what, var) in &s.checks {
                let grad = s.grads.get(var);
                let got = flat(grad.unwrap_or_else(|| panic!("{name}: no gradient of {what}")));
                let want = keras_gradient(&case["gradients"][policy], what);
                let (err, tol) = within(&got, &nested(want).0, policy, true);
                assert!(err <= tol, "{name} {policy}: d{what} {err:.3e} > {tol:.1e}");
            }
            runs += 1;
        }
    }
    runs
}
