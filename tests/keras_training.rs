//! Training a loaded Keras model (tests/data/models/training_regularized, made by
//! scripts/make_keras_model_cases.py with Keras 3.15.1): every variable a `Var` of a
//! `VarMap` under its weights-file path, Keras' regularization and activity losses, its
//! gradients for one batch, its constraint, a frozen layer, and dropout in training.

use candle_core::{DType, Device, Tensor, D};
use candle_gru::candle::io::keras::{Dropout, KerasModel, ModelCall};
use candle_gru::candle::Error;
use candle_gru::GruError;
use candle_nn::{Optimizer, VarMap, SGD};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

struct Case {
    json: Value,
    ids: Tensor,
    labels: Tensor,
}

fn case() -> Case {
    let text = std::fs::read_to_string(data("training_regularized.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Vec<i64>> = serde_json::from_value(json["inputs"].clone()).unwrap();
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.into_iter().flatten().collect();
    let ids = Tensor::from_vec(flat, (b, t), &Device::Cpu).unwrap();
    let labels: Vec<u32> = serde_json::from_value(json["training"]["labels"].clone()).unwrap();
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    Case { json, ids, labels }
}

fn numbers(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Keras' `SparseCategoricalCrossentropy` on probabilities: -mean(log(clip(p[label]))).
fn cross_entropy(probs: &Tensor, labels: &Tensor) -> Tensor {
    let p = probs.clamp(1e-7f32, 1.0 - 1e-7).unwrap();
    let picked = p.gather(&labels.unsqueeze(1).unwrap(), D::Minus1).unwrap();
    picked.log().unwrap().mean_all().unwrap().neg().unwrap()
}

fn trainable(varmap: &VarMap) -> KerasModel {
    let path = data("training_regularized.keras");
    KerasModel::load_trainable(&path, DType::F32, &Device::Cpu, varmap).unwrap()
}

/// The model's loss for the case's batch: cross-entropy + weight regularization + activity.
fn loss(model: &KerasModel, c: &Case, training: bool) -> (Tensor, Tensor) {
    let opts = ModelCall {
        mask: None,
        training,
    };
    let out = model.call_with(&c.ids, opts).unwrap();
    let data_loss = cross_entropy(&out.outputs[0], &c.labels);
    let activity = out
        .activity_loss
        .expect("GRU and Dense have activity regularizers");
    let extra = (model.regularization_loss().unwrap() + activity).unwrap();
    ((&data_loss + &extra).unwrap(), data_loss)
}

#[test]
fn keras_losses_and_gradients_of_one_batch() {
    let c = case();
    let want = &c.json["training"];
    let varmap = VarMap::new();
    let model = trainable(&varmap);
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        numbers_str(&want["all_paths"]),
        "every variable, by its path"
    );
    let (total, data_loss) = loss(&model, &c, false);
    let scalar = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let keras_data = want["data_loss"].as_f64().unwrap();
    let keras_total = want["total_loss"].as_f64().unwrap();
    assert!(
        (scalar(&data_loss) - keras_data).abs() < 1e-6,
        "{}",
        scalar(&data_loss)
    );
    assert!(
        (scalar(&total) - keras_total).abs() < 2e-6,
        "{}",
        scalar(&total)
    );
    let grads = total.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    for (path, var) in vars.iter() {
        let g = grads.get(var.as_tensor());
        match want["gradients"].get(path) {
            Some(keras) => {
                let g = g.unwrap_or_else(|| panic!("no gradient for {path}"));
                let err = max_diff(&values(g), &numbers(keras));
                assert!(err < 2e-6, "{path}: gradient error {err:.2e}");
            }
            // The frozen LayerNormalization: in the VarMap, but no gradient reaches it.
            None => assert!(g.is_none(), "{path} is not trainable in Keras"),
        }
    }
}

fn numbers_str(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn constraints_apply_as_keras_and_need_vars() {
    let c = case();
    let varmap = VarMap::new();
    let model = trainable(&varmap);
    model.apply_constraints().unwrap();
    let want = &c.json["training"]["constrained"];
    let path = want["path"].as_str().unwrap();
    let kernel = varmap.data().lock().unwrap()[path].as_tensor().clone();
    let err = max_diff(&values(&kernel), &numbers(&want["values"]));
    assert!(err < 1e-6, "MaxNorm(0.5) error {err:.2e}");
    // A model loaded for inference holds constants: a constraint cannot be applied.
    let frozen = KerasModel::load(
        &data("training_regularized.keras"),
        DType::F32,
        &Device::Cpu,
    );
    match frozen.unwrap().apply_constraints() {
        Err(Error::Gru(GruError::InvalidConfig { key, .. })) => {
            assert_eq!(key, "kernel_constraint")
        }
        other => panic!("expected a typed error, got {other:?}"),
    }
    // The same names cannot be loaded twice into one VarMap.
    let again = KerasModel::load_trainable(
        &data("training_regularized.keras"),
        DType::F32,
        &Device::Cpu,
        &varmap,
    );
    assert!(matches!(
        again,
        Err(Error::Gru(GruError::InvalidConfig { .. }))
    ));
}

#[test]
fn sgd_steps_lower_the_keras_loss() {
    let c = case();
    let varmap = VarMap::new();
    let model = trainable(&varmap);
    // Its Dropout draws from one seed, so the run repeats: unseeded, 1 run in about 30
    // (dropout draws that happen to favour the first loss) lowered it to 0.72 only.
    model.reseed(1).unwrap();
    let mut sgd = SGD::new(varmap.all_vars(), 0.5).unwrap();
    let first = loss(&model, &c, true).0.to_scalar::<f32>().unwrap();
    for _ in 0..40 {
        let (l, _) = loss(&model, &c, true);
        sgd.backward_step(&l).unwrap();
        model.apply_constraints().unwrap();
    }
    let last = loss(&model, &c, false).0.to_scalar::<f32>().unwrap();
    assert!(last < 0.7 * first, "loss {first} -> {last}");
}

#[test]
fn reseeding_repeats_the_dropout_draws() {
    let c = case();
    let varmap = VarMap::new();
    let model = trainable(&varmap);
    let opts = ModelCall {
        mask: None,
        training: true,
    };
    let run = |seed: u64| -> Vec<Vec<f64>> {
        model.reseed(seed).unwrap();
        (0..3)
            .map(|_| values(&model.call_with(&c.ids, opts).unwrap().outputs[0]))
            .collect()
    };
    let first = run(5);
    // Each call draws anew; the same seed repeats the three draws; another seed differs.
    assert_ne!(first[0], first[1]);
    assert_eq!(run(5), first);
    assert_ne!(run(6), first);
}

#[test]
fn dropout_acts_in_training_only() {
    let dev = &Device::Cpu;
    let x = Tensor::ones((8, 50, 10), DType::F32, dev).unwrap();
    let d = Dropout::new(0.25, false, Some(3)).unwrap();
    assert_eq!(values(&d.forward(&x, false).unwrap()), values(&x));
    let y = values(&d.forward(&x, true).unwrap());
    let zeros = y.iter().filter(|v| **v == 0.0).count() as f64 / y.len() as f64;
    // 4000 draws: standard error 0.007.
    assert!((zeros - 0.25).abs() < 0.04, "dropped {zeros}");
    assert!(y
        .iter()
        .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
    // SpatialDropout1D: one draw per (sample, feature), the same at every step.
    let s = Dropout::new(0.5, true, Some(3)).unwrap();
    let y = s.forward(&x, true).unwrap();
    let first = y.narrow(1, 0, 1).unwrap();
    let every = first.broadcast_as(y.dims()).unwrap();
    assert_eq!(values(&y), values(&every));
    let kept = values(&first).iter().filter(|v| **v != 0.0).count();
    assert!((20..=60).contains(&kept), "{kept} of 80 features kept");
    assert!(Dropout::new(1.5, false, None).is_err());
}

/// Bidirectional and GruStack hand on their GRUs' activity losses (Keras adds each inner
/// layer's): the sum of the layers' own.
#[test]
fn wrappers_keep_their_grus_activity_losses() {
    use candle_gru::candle::{Bidirectional, GruStack, MergeMode, StackLayer};
    use candle_gru::{CallOptions, GruConfig};
    use candle_nn::VarBuilder;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let mut c = GruConfig::from_keras_str(
        r#"{"units": 3, "return_sequences": true, "activity_regularizer": {"class_name": "L2", "config": {"l2": 0.5}}}"#,
    )
    .unwrap();
    let x = Tensor::randn(0f64, 1.0, (2, 5, 4), &Device::Cpu).unwrap();
    let bi = Bidirectional::new(c.clone(), 4, MergeMode::Sum, vb.pp("bi")).unwrap();
    let out = bi.call(&x, None, None, false).unwrap();
    let own = |g: &candle_gru::Gru, x: &Tensor| {
        let l = g
            .call(x, CallOptions::default())
            .unwrap()
            .activity_loss
            .unwrap();
        l.to_scalar::<f64>().unwrap()
    };
    let want = own(bi.forward_layer(), &x) + own(bi.backward_layer(), &x);
    let got = out.activity_loss.unwrap().to_scalar::<f64>().unwrap();
    assert!(want > 0.0 && (got - want).abs() < 1e-12, "{got} vs {want}");
    c.activity_regularizer = None;
    let quiet = Bidirectional::new(c, 4, MergeMode::Sum, vb.pp("quiet")).unwrap();
    assert!(quiet
        .call(&x, None, None, false)
        .unwrap()
        .activity_loss
        .is_none());
    let stack = GruStack::new(vec![StackLayer::Bidirectional(Box::new(bi))]).unwrap();
    let got = stack
        .call(&x, None, None, false)
        .unwrap()
        .activity_loss
        .unwrap();
    assert!((got.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
}

/// A BatchNormalization training call: the batch's masked statistics normalize it and move
/// the moving statistics, as Keras computed them; inference uses the moving ones; a model
/// loaded for inference cannot train it.
#[test]
fn batch_norm_training_call_follows_keras() {
    let text = std::fs::read_to_string(data("masking_batch_norm_gru.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Vec<Vec<f32>>> = serde_json::from_value(json["inputs"].clone()).unwrap();
    let (b, t, f) = (rows.len(), rows[0].len(), rows[0][0].len());
    let flat: Vec<f32> = rows.into_iter().flatten().flatten().collect();
    let x = Tensor::from_vec(flat, (b, t, f), &Device::Cpu).unwrap();
    let want = &json["batch_norm_training"];
    let path = data("masking_batch_norm_gru.keras");
    let varmap = VarMap::new();
    let model = KerasModel::load_trainable(&path, DType::F32, &Device::Cpu, &varmap).unwrap();
    let before = model.call(&x, None).unwrap();
    let inference: Vec<Vec<f64>> = serde_json::from_value(json["expected"][0].clone()).unwrap();
    let inference: Vec<f64> = inference.into_iter().flatten().collect();
    assert!(max_diff(&values(&before[0]), &inference) < 1e-6);
    let training = ModelCall {
        mask: None,
        training: true,
    };
    let out = model.call_with(&x, training).unwrap();
    let keras: Vec<Vec<f64>> = serde_json::from_value(want["outputs"].clone()).unwrap();
    let keras: Vec<f64> = keras.into_iter().flatten().collect();
    let err = max_diff(&values(&out.outputs[0]), &keras);
    assert!(err < 1e-5, "training call error {err:.2e}");
    assert!(
        max_diff(&values(&out.outputs[0]), &inference) > 1e-3,
        "batch statistics differ"
    );
    let vars = varmap.data().lock().unwrap();
    for (k, name) in [(2, "moving_mean"), (3, "moving_variance")] {
        let v = vars[&format!("layers/batch_normalization/vars/{k}")].as_tensor();
        let err = max_diff(&values(v), &numbers(&want[name]));
        assert!(err < 1e-6, "{name} error {err:.2e}");
    }
    drop(vars);
    let frozen = KerasModel::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        frozen.call_with(&x, training),
        Err(Error::Gru(GruError::InvalidConfig { .. }))
    ));
}
