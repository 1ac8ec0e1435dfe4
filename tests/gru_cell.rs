//! `GruCell` (Keras' `GRUCell`) against Keras 3.15.1: cells stepped by hand (states and
//! gradients, f32, f64 and mixed_float16, on the fused path and the loop), configs and
//! `from_config` verdicts, the activity loss, the dropout masks a cell keeps, a layer's
//! cell, candle-nn's `RNN` trait, and typed errors.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::CpuPath;
use candle_gru::{Gru, GruCell, GruCellConfig, GruConfig};
use candle_nn::rnn::{GRUState, RNN};
use common::{cell_cases, flat, max_diff};
use serde_json::Value;

fn read(name: &str) -> Value {
    cell_cases::read(name)
}

fn nested(v: &Value) -> (Vec<f64>, Vec<usize>) {
    cell_cases::nested(v)
}

fn tensor(v: &Value, dtype: DType) -> Tensor {
    cell_cases::tensor(v, dtype, &Device::Cpu)
}

#[test]
fn cells_stepped_by_hand_match_keras_states_and_gradients() {
    for path in [CpuPath::Fused, CpuPath::Loop] {
        let runs = cell_cases::check_all(&Device::Cpu, |c| c.with_cpu_path(path));
        assert_eq!(runs, 11, "{path:?}: every case under every policy");
    }
}

#[test]
fn configs_and_from_config_verdicts_match_keras() {
    let data = read("configs.json");
    for (name, want) in data["configs"].as_object().unwrap() {
        let c = GruCellConfig::from_keras_json(want).unwrap();
        assert_eq!(&c.to_keras_json(), want, "{name}");
    }
    // A GRU layer's cell, as Keras' `gru.cell`.
    let layer = GruConfig::from_keras_json(&data["layer_configs"]["of_gru_layer"]).unwrap();
    assert_eq!(
        layer.cell_config().to_keras_json(),
        data["configs"]["of_gru_layer"]
    );
    for probe in data["from_config"].as_array().unwrap() {
        let ours = GruCellConfig::from_keras_json(&probe["config"]);
        match probe["accepted"].as_bool().unwrap() {
            true => {
                // Keras numbers the names it makes up (gru_cell_12); ours is gru_cell.
                let mut want = probe["get_config"].clone();
                let mut got = ours.unwrap().to_keras_json();
                if probe["config"].get("name").is_none() {
                    assert!(want["name"].as_str().unwrap().starts_with("gru_cell"));
                    want["name"] = Value::Null;
                    got["name"] = Value::Null;
                }
                assert_eq!(got, want, "{probe}");
            }
            false => assert!(ours.is_err(), "Keras refused {}", probe["config"]),
        }
    }
}

#[test]
fn activity_loss_is_what_keras_collects_per_step() {
    let a = &read("configs.json")["activity"];
    let config = GruCellConfig::from_keras_json(&a["config"]).unwrap();
    let w: Vec<Tensor> = a["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| tensor(v, DType::F32))
        .collect();
    let cell =
        GruCell::from_weights(config, w[0].clone(), w[1].clone(), Some(w[2].clone())).unwrap();
    let h = cell
        .call(
            &tensor(&a["inputs"], DType::F32),
            &tensor(&a["state"], DType::F32),
            false,
        )
        .unwrap();
    assert!(max_diff(&flat(&h), &nested(&a["output"]).0) < 1e-6);
    let want: f64 = a["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let got = cell
        .activity_loss(&h)
        .unwrap()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!((got - want).abs() < 1e-7 * want.max(1.0), "{got} vs {want}");
    let plain = GruCell::from_weights(
        GruCellConfig::new(3),
        w[0].clone(),
        w[1].clone(),
        Some(w[2].clone()),
    )
    .unwrap();
    assert!(plain.activity_loss(&h).unwrap().is_none());
}

fn layer(cfg: GruConfig, input: usize, dtype: DType) -> Gru {
    common::layer(&cfg, input, dtype, &Device::Cpu)
}

#[test]
fn a_layers_cell_steps_what_the_layer_runs_and_shares_its_vars() {
    for reset_after in [true, false] {
        let mut cfg = GruConfig::new(7);
        cfg.return_sequences = true;
        cfg.reset_after = reset_after;
        let gru = layer(cfg, 5, DType::F64);
        let x = common::tensor(&[3, 6, 5], 0.3, DType::F64, &Device::Cpu);
        let h0 = common::tensor(&[3, 7], 1.1, DType::F64, &Device::Cpu);
        let opts = candle_gru::CallOptions {
            initial_state: Some(&h0),
            ..Default::default()
        };
        let seq = gru.call(&x, opts).unwrap().output;
        let cell = gru.cell().unwrap();
        assert_eq!(cell.config().name, "gru_cell");
        let mut h = h0.clone();
        let mut steps = Vec::new();
        for t in 0..6 {
            h = cell.call(&x.get_on_dim(1, t).unwrap(), &h, false).unwrap();
            steps.push(h.clone());
        }
        let stepped = Tensor::stack(&steps, 1).unwrap();
        assert!(max_diff(&flat(&stepped), &flat(&seq)) < 1e-13);
        // The same Vars: a loss over the cell's steps has gradients for the layer's weights.
        let grads = stepped.sum_all().unwrap().backward().unwrap();
        for w in gru.weights() {
            assert!(grads.get(w).is_some());
        }
        // candle-nn's RNN trait: seq_init runs the sequence in one call, step by step agrees.
        let states = cell.seq_init(&x, &GRUState { h: h0.clone() }).unwrap();
        let by_seq = cell.states_to_tensor(&states).unwrap();
        assert_eq!(by_seq.dims(), &[3, 6, 7]);
        assert!(max_diff(&flat(&by_seq), &flat(&seq)) < 1e-13);
        let one = cell
            .step(&x.get_on_dim(1, 0).unwrap(), &cell.zero_state(3).unwrap())
            .unwrap();
        let zero_start = cell.seq(&x).unwrap();
        assert!(max_diff(&flat(&one.h), &flat(&zero_start[0].h)) < 1e-13);
    }
}

/// A training step of `cell` from the fixed input and state.
fn train_step(cell: &GruCell, b: usize) -> Vec<f64> {
    let x = common::tensor(&[b, 5], 0.7, DType::F64, &Device::Cpu);
    let h = common::tensor(&[b, 6], 0.2, DType::F64, &Device::Cpu);
    flat(&cell.call(&x, &h, true).unwrap())
}

fn dropout_cell(dropout: f64, recurrent: f64) -> GruCell {
    let cfg = GruCellConfig {
        dropout,
        recurrent_dropout: recurrent,
        seed: Some(4),
        ..GruCellConfig::new(6)
    };
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    GruCell::new(cfg, 5, vb).unwrap()
}

#[test]
fn a_cell_keeps_its_dropout_masks_until_reset_as_keras_does() {
    for (dropout, recurrent) in [(0.5, 0.0), (0.0, 0.5), (0.4, 0.4)] {
        let cell = dropout_cell(dropout, recurrent);
        let x = common::tensor(&[4, 5], 0.7, DType::F64, &Device::Cpu);
        let h = common::tensor(&[4, 6], 0.2, DType::F64, &Device::Cpu);
        let inference = flat(&cell.call(&x, &h, false).unwrap());
        let first = train_step(&cell, 4);
        assert!(max_diff(&first, &inference) > 1e-3, "dropout acted");
        // The same masks at every later step.
        assert_eq!(train_step(&cell, 4), first);
        // Inference ignores them and keeps them.
        assert_eq!(flat(&cell.call(&x, &h, false).unwrap()), inference);
        assert_eq!(train_step(&cell, 4), first);
        // A step of another batch size is an error that says how to draw new masks.
        let e = cell
            .call(
                &common::tensor(&[2, 5], 0.7, DType::F64, &Device::Cpu),
                &h.narrow(0, 0, 2).unwrap(),
                true,
            )
            .unwrap_err();
        assert!(e.to_string().contains("reset_dropout_mask"), "{e}");
        cell.reset_dropout_mask();
        cell.reset_recurrent_dropout_mask();
        let redrawn = train_step(&cell, 4);
        assert_ne!(redrawn, first);
        assert_eq!(train_step(&cell, 4), redrawn);
        cell.reset_dropout_mask();
        cell.reset_recurrent_dropout_mask();
        assert_eq!(
            train_step(&cell, 2).len(),
            12,
            "after a reset any batch draws its own"
        );
    }
    // Resetting one kind keeps the other.
    let cell = dropout_cell(0.0, 0.5);
    let first = train_step(&cell, 4);
    cell.reset_dropout_mask();
    assert_eq!(train_step(&cell, 4), first);
    // Rate 1 is no dropout in Keras (it applies 0 < rate < 1).
    let cell = dropout_cell(1.0, 0.0);
    let x = common::tensor(&[4, 5], 0.7, DType::F64, &Device::Cpu);
    let h = common::tensor(&[4, 6], 0.2, DType::F64, &Device::Cpu);
    assert_eq!(
        train_step(&cell, 4),
        flat(&cell.call(&x, &h, false).unwrap())
    );
}

#[test]
fn bad_steps_are_typed_errors_naming_what_came() {
    let cell = dropout_cell(0.0, 0.0);
    let x = common::tensor(&[2, 5], 0.7, DType::F64, &Device::Cpu);
    let h = common::tensor(&[2, 6], 0.2, DType::F64, &Device::Cpu);
    let cases = [
        (
            common::tensor(&[2, 1, 5], 0.7, DType::F64, &Device::Cpu),
            h.clone(),
            "inputs",
        ),
        (
            common::tensor(&[2, 4], 0.7, DType::F64, &Device::Cpu),
            h.clone(),
            "inputs",
        ),
        (
            common::tensor(&[0, 5], 0.7, DType::F64, &Device::Cpu),
            h.narrow(0, 0, 0).unwrap(),
            "inputs",
        ),
        (
            x.clone(),
            common::tensor(&[3, 6], 0.2, DType::F64, &Device::Cpu),
            "state",
        ),
        (x.clone(), h.to_dtype(DType::F32).unwrap(), "state"),
        (x.to_dtype(DType::F32).unwrap(), h.clone(), "inputs"),
    ];
    for (x, h, what) in cases {
        let e = cell.call(&x, &h, false).unwrap_err();
        let g = e.as_gru().unwrap_or_else(|| panic!("untyped: {e}"));
        assert!(g.to_string().contains(what), "{g}");
    }
    assert!(GruCellConfig::from_keras_str(r#"{"units": 2, "return_state": true}"#).is_err());
}

#[test]
fn a_model_rnn_over_a_cell_with_an_activity_regularizer_is_refused_by_name() {
    use candle_gru::candle::io::keras::KerasModel;
    use candle_gru::candle::{Error, FileProblem};
    let dir = format!("{}/tests/data/models", env!("CARGO_MANIFEST_DIR"));
    let archive = std::path::PathBuf::from(format!("{dir}/rnn_gru_cells.keras"));
    let weights = std::path::PathBuf::from(format!("{dir}/rnn_gru_cells.weights.h5"));
    let mut config = KerasModel::model_config(&archive).unwrap();
    // As written, the model loads.
    KerasModel::load_weights_h5(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    let layers = config["config"]["layers"].as_array_mut().unwrap();
    let rnn = layers
        .iter_mut()
        .find(|l| l["class_name"] == "RNN")
        .unwrap();
    rnn["config"]["cell"]["config"]["activity_regularizer"] = serde_json::json!("l2");
    match KerasModel::load_weights_h5(&config, &weights, DType::F32, &Device::Cpu) {
        Err(Error::File {
            problem: FileProblem::Unsupported(what),
            ..
        }) => assert!(what.contains("activity_regularizer"), "{what}"),
        other => panic!("expected an Unsupported file error, got {other:?}"),
    }
}

#[test]
fn frozen_twins_share_the_weights_and_take_no_gradient() {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cell = GruCell::new(GruCellConfig::new(6), 5, vb.pp("cell")).unwrap();
    let frozen = cell.frozen().unwrap();
    assert!(!frozen.config().trainable && cell.config().trainable);
    let x = Var::from_tensor(&common::tensor(&[2, 5], 0.7, DType::F32, &Device::Cpu)).unwrap();
    let h = common::tensor(&[2, 6], 0.2, DType::F32, &Device::Cpu);
    let (a, f) = (
        cell.call(&x, &h, false).unwrap(),
        frozen.call(&x, &h, false).unwrap(),
    );
    assert_eq!(flat(&a), flat(&f));
    let grads = f.sum_all().unwrap().backward().unwrap();
    assert!(
        grads.get(x.as_tensor()).is_some(),
        "the input still gets its gradient"
    );
    assert!(cell.weights().iter().all(|w| grads.get(w).is_none()));
    // An optimizer step on the trainable cell's Vars reaches the twin.
    let grads = a.sum_all().unwrap().backward().unwrap();
    use candle_nn::Optimizer;
    let mut sgd = candle_nn::SGD::new(vm.all_vars(), 0.5).unwrap();
    sgd.step(&grads).unwrap();
    let (a2, f2) = (
        cell.call(&x, &h, false).unwrap(),
        frozen.call(&x, &h, false).unwrap(),
    );
    assert!(
        max_diff(&flat(&a2), &flat(&a)) > 1e-3,
        "the step moved the weights"
    );
    assert_eq!(flat(&a2), flat(&f2));
    // The same for a layer, and `with_trainable(false)` is the same freeze.
    let mut cfg = GruConfig::new(6);
    cfg.return_sequences = true;
    let gru = Gru::new(cfg, 5, vb.pp("gru")).unwrap();
    let xs = common::tensor(&[2, 4, 5], 0.3, DType::F32, &Device::Cpu);
    let run = |g: &Gru| flat(&g.call(&xs, Default::default()).unwrap().output);
    let twin = gru.frozen().unwrap();
    assert_eq!(run(&gru), run(&twin));
    let out = twin.call(&xs, Default::default()).unwrap().output;
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(gru.weights().iter().all(|w| grads.get(w).is_none()));
    let off = gru.with_trainable(false);
    let grads = off
        .call(&xs, Default::default())
        .unwrap()
        .output
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(off.weights().iter().all(|w| grads.get(w).is_none()));
}
