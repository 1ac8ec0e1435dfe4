//! Model cases of tests/data/models (Keras files with their JSON): inputs, and Keras'
//! loss and gradients of one call.

use super::{flat, max_diff, numbers};
use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasModel, ModelCall};
use candle_nn::VarMap;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A file of tests/data/models.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

/// The case JSON `NAME.json`.
pub fn case(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data(&format!("{name}.json"))).unwrap()).unwrap()
}

/// The case's model inputs: `inputs`, then `extra_inputs`, each of its dtype.
pub fn inputs(case: &Value) -> Vec<Tensor> {
    gru_support::golden::models::case_inputs(case).unwrap()
}

/// Keras' loss of the case (mean(output^2) + regularization and activity losses) and
/// every variable's gradient, against Keras' (a shared layer's summed over its calls), on
/// the CPU.
pub fn check_gradients(name: &str) {
    check_gradients_on(name, &Device::Cpu, 2e-6);
}

/// [`check_gradients`] on `dev`, the outputs and gradients within `tol`; returns the largest
/// error seen.
pub fn check_gradients_on(name: &str, dev: &Device, tol: f64) -> f64 {
    let c = case(name);
    let want = &c["training"];
    let varmap = VarMap::new();
    let file = data(&format!("{name}.keras"));
    let model = KerasModel::load_trainable(&file, DType::F32, dev, &varmap).unwrap();
    let x: Vec<Tensor> = inputs(&c)
        .iter()
        .map(|t| t.to_device(dev).unwrap())
        .collect();
    let out = model.call_inputs(&x, ModelCall::default()).unwrap();
    let keras_out = gru_support::golden::Array::from_json(&c["expected"][0])
        .unwrap()
        .data;
    let mut worst = max_diff(&flat(&out.outputs[0]), &keras_out);
    assert!(
        worst < tol.max(1e-5),
        "{name}: outputs {worst:.2e} off Keras"
    );
    let mut losses = model.regularization_loss().unwrap();
    if let Some(a) = out.activity_loss {
        losses = (losses + a).unwrap();
    }
    let total = (out.outputs[0].sqr().unwrap().mean_all().unwrap() + &losses).unwrap();
    let scalar = |t: &Tensor| flat(t)[0];
    let (l, keras_l) = (scalar(&losses), want["losses"].as_f64().unwrap());
    assert!(
        (l - keras_l).abs() < 1e-6,
        "{name}: losses {l} vs Keras {keras_l}"
    );
    let (t, keras_t) = (scalar(&total), want["total_loss"].as_f64().unwrap());
    assert!(
        (t - keras_t).abs() < tol.max(2e-6),
        "{name}: total {t} vs Keras {keras_t}"
    );
    let grads = total.backward().unwrap();
    let keras = want["gradients"].as_object().unwrap();
    let vars = varmap.data().lock().unwrap();
    // Keras' non-trainable variables (BatchNormalization's moving statistics) are Vars
    // too, which no gradient reaches.
    for (path, var) in vars.iter().filter(|(p, _)| !keras.contains_key(*p)) {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "{name}: a gradient reaches {path}, which Keras does not train"
        );
    }
    let mut errors = Vec::new();
    for (path, g) in keras {
        let var = vars
            .get(path)
            .unwrap_or_else(|| panic!("{name}: no Var {path}"));
        let ours = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient: {path}"));
        let err = max_diff(&flat(ours), &numbers(g));
        worst = worst.max(err);
        errors.push((path, err));
    }
    assert!(
        errors.iter().all(|(_, e)| *e < tol),
        "{name}: gradient errors {errors:?}"
    );
    worst
}
