//! Model files from the real Keras 3.15.1 and PyTorch, Bidirectional/stacked GRUs, export,
//! and typed errors for malformed or mismatched files.

use candle_core::{DType, Device, Module, Tensor};
use candle_gru::candle::io::{export, keras::KerasModel, torch::TorchGru};
use candle_gru::candle::{Bidirectional, Error, FileProblem, GruStack, MergeMode, StackLayer};
use candle_gru::{CallOptions, Gru, GruConfig};
use candle_nn::{VarBuilder, VarMap};
use gru_support::golden::models::{model_case_files, run_model_case};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-gru-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn file_problem<T: std::fmt::Debug>(r: candle_gru::candle::Result<T>) -> FileProblem {
    match r {
        Err(Error::File { problem, .. }) => problem,
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn every_model_case_reproduces_its_framework() {
    let files = model_case_files(&data("")).unwrap();
    assert_eq!(files.len(), 61);
    let mut runs = 0;
    for f in files {
        let r = run_model_case(&f).unwrap();
        println!("{}", r.line());
        assert!(r.passed(), "{}", r.line());
        runs += r.files.len();
    }
    assert_eq!(
        runs, 134,
        "44 keras cases x (.keras, .weights.h5) + 2 torch cases + 30 legacy .h5 files + 14 tf_keras .keras archives"
    );
}

#[test]
fn truncated_and_missing_files() {
    let bytes = std::fs::read(data("stacked_gru_dense.keras")).unwrap();
    let cut = scratch("truncated.keras");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        file_problem(KerasModel::load(&cut, DType::F32, &Device::Cpu)),
        FileProblem::Unreadable(_)
    ));
    let h5 = std::fs::read(data("stacked_gru_dense.weights.h5")).unwrap();
    let cut = scratch("truncated.weights.h5");
    std::fs::write(&cut, &h5[..h5.len() / 3]).unwrap();
    let cfg = KerasModel::archive_config(&data("stacked_gru_dense.keras")).unwrap();
    assert!(matches!(
        KerasModel::load_weights_h5(&cfg, &cut, DType::F32, &Device::Cpu),
        Err(Error::File { .. })
    ));
    let p = file_problem(TorchGru::load(
        Path::new("/no/such/file.safetensors"),
        DType::F32,
        &Device::Cpu,
    ));
    assert!(matches!(p, FileProblem::Unreadable(_)));
}

#[test]
fn keras_config_that_does_not_match_the_weights() {
    let mut cfg = KerasModel::archive_config(&data("stacked_gru_dense.keras")).unwrap();
    // gru_a has 6 units in the file; say 5.
    cfg["config"]["layers"][1]["config"]["units"] = 5.into();
    let p = file_problem(KerasModel::load_weights_h5(
        &cfg,
        &data("stacked_gru_dense.weights.h5"),
        DType::F32,
        &Device::Cpu,
    ));
    match p {
        FileProblem::Shape {
            name,
            expected,
            got,
        } => {
            assert_eq!(name, "layers/gru/cell/vars/0");
            assert_eq!((expected, got), (vec![5, 15], vec![5, 18]));
        }
        other => panic!("{other:?}"),
    }
    // An unsupported layer.
    let mut cfg = KerasModel::archive_config(&data("stacked_gru_dense.keras")).unwrap();
    cfg["config"]["layers"][2]["class_name"] = "LSTM".into();
    let p = file_problem(KerasModel::load_weights_h5(
        &cfg,
        &data("stacked_gru_dense.weights.h5"),
        DType::F32,
        &Device::Cpu,
    ));
    assert!(
        matches!(&p, FileProblem::Unsupported(w) if w.contains("LSTM")),
        "{p:?}"
    );
    // A second GRU the file has no weights for.
    let mut cfg = KerasModel::archive_config(&data("sequential_masking.keras")).unwrap();
    let extra = cfg["config"]["layers"][2].clone();
    cfg["config"]["layers"].as_array_mut().unwrap().push(extra);
    let p = file_problem(KerasModel::load_weights_h5(
        &cfg,
        &data("sequential_masking.weights.h5"),
        DType::F32,
        &Device::Cpu,
    ));
    assert!(
        matches!(&p, FileProblem::Missing(w) if w.contains("layers/gru_1/cell/vars/0")),
        "{p:?}"
    );
}

fn torch_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(data("torch_gru_2layer_bidir.safetensors"), &Device::Cpu)
        .unwrap()
}

#[test]
fn torch_state_dict_that_is_wrong() {
    let mut t = torch_tensors();
    t.remove("weight_hh_l1_reverse");
    let p = file_problem(TorchGru::from_tensors("t", &t, DType::F32, &Device::Cpu));
    assert_eq!(p, FileProblem::Missing("weight_hh_l1_reverse".into()));
    let mut t = torch_tensors();
    t.insert(
        "weight_ih_l1".into(),
        Tensor::zeros((12, 7), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = file_problem(TorchGru::from_tensors("t", &t, DType::F32, &Device::Cpu));
    assert_eq!(
        p,
        FileProblem::Shape {
            name: "weight_ih_l1".into(),
            expected: vec![12, 8],
            got: vec![12, 7]
        }
    );
    let p = file_problem(TorchGru::from_tensors(
        "t",
        &HashMap::new(),
        DType::F32,
        &Device::Cpu,
    ));
    assert!(matches!(p, FileProblem::Missing(_)));
    // A prefix (e.g. a module attribute name) is fine.
    let t: HashMap<String, Tensor> = torch_tensors()
        .into_iter()
        .map(|(k, v)| (format!("encoder.gru.{k}"), v))
        .collect();
    let m = TorchGru::from_tensors("t", &t, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        (m.num_layers, m.bidirectional, m.hidden_size, m.input_size),
        (2, true, 4, 5)
    );
}

fn layer(config: GruConfig, input_dim: usize, vm: &VarMap, prefix: &str) -> Gru {
    Gru::new(
        config,
        input_dim,
        VarBuilder::from_varmap(vm, DType::F64, &Device::Cpu).pp(prefix),
    )
    .unwrap()
}

#[test]
fn bidirectional_merge_modes_and_mask_rule() {
    let mut c = GruConfig::new(3);
    c.return_sequences = true;
    c.return_state = true;
    let x = Tensor::randn(0f64, 1.0, (2, 5, 4), &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u8, 1, 1, 0, 0], [1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let concat = Bidirectional::new(c.clone(), 4, MergeMode::Concat, vb.pp("bi")).unwrap();
    // The same weights (same VarMap paths) under every merge mode.
    let mk = |m| Bidirectional::new(c.clone(), 4, m, vb.pp("bi")).unwrap();
    let (f, b) = (concat.forward_layer(), concat.backward_layer());
    assert!(
        f.config().zero_output_for_mask && b.config().zero_output_for_mask,
        "Keras forces zero_output_for_mask = return_sequences"
    );
    assert!(b.config().go_backwards && !f.config().go_backwards);
    let opts = CallOptions {
        mask: Some(&mask),
        ..Default::default()
    };
    let yf = f.call(&x, opts).unwrap();
    let yb = b.call(&x, opts).unwrap();
    let yb_flipped = yb.output.flip(&[1]).unwrap();
    let v = |t: &Tensor| -> Vec<f64> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let out = concat.call(&x, Some(&mask), None, false).unwrap();
    assert_eq!(
        v(&out.outputs[0]),
        v(&Tensor::cat(&[&yf.output, &yb_flipped], 2).unwrap())
    );
    let (sf, sb) = out.states.unwrap();
    assert_eq!(v(&sf), v(yf.state.as_ref().unwrap()));
    assert_eq!(v(&sb), v(yb.state.as_ref().unwrap()));
    let sum = mk(MergeMode::Sum)
        .call(&x, Some(&mask), None, false)
        .unwrap();
    assert_eq!(v(&sum.outputs[0]), v(&(&yf.output + &yb_flipped).unwrap()));
    let mul = mk(MergeMode::Mul)
        .call(&x, Some(&mask), None, false)
        .unwrap();
    assert_eq!(v(&mul.outputs[0]), v(&(&yf.output * &yb_flipped).unwrap()));
    let ave = mk(MergeMode::Ave)
        .call(&x, Some(&mask), None, false)
        .unwrap();
    assert_eq!(
        v(&ave.outputs[0]),
        v(&((&yf.output + &yb_flipped).unwrap() * 0.5).unwrap())
    );
    let none = mk(MergeMode::None)
        .call(&x, Some(&mask), None, false)
        .unwrap();
    assert_eq!(none.outputs.len(), 2);
    assert_eq!(
        mk(MergeMode::Concat).forward(&x).unwrap().dims(),
        &[2, 5, 6]
    );
    // Masked steps are zeros in both directions (zero_output_for_mask).
    let row0: Vec<Vec<f64>> = out.outputs[0].get(0).unwrap().to_vec2().unwrap();
    assert!(row0[3].iter().chain(&row0[4]).all(|&v| v == 0.0));
    // Gradients flow through both directions.
    let grads = out.outputs[0].sum_all().unwrap().backward().unwrap();
    assert!(grads.get(f.kernel()).is_some() && grads.get(b.kernel()).is_some());
}

#[test]
fn bidirectional_pairs_must_match() {
    let vm = VarMap::new();
    let mut c = GruConfig::new(3);
    c.return_sequences = true;
    let f = layer(c.clone(), 4, &vm, "f");
    let b = layer(c.clone(), 4, &vm, "b"); // not go_backwards
    assert!(Bidirectional::from_layers(f, b, MergeMode::Concat).is_err());
    let f = layer(c.clone(), 4, &vm, "f");
    let mut c2 = GruConfig::new(2);
    c2.return_sequences = true;
    c2.go_backwards = true;
    assert!(Bidirectional::from_layers(f, layer(c2, 4, &vm, "b2"), MergeMode::Concat).is_err());
    assert!(MergeMode::from_keras_value(&"max".into()).is_err());
}

#[test]
fn stacks_check_their_chain() {
    let vm = VarMap::new();
    let mut seq = GruConfig::new(6);
    seq.return_sequences = true;
    let last = GruConfig::new(4);
    let ok = GruStack::new(vec![
        StackLayer::Gru(Box::new(layer(seq.clone(), 5, &vm, "a"))),
        StackLayer::Gru(Box::new(layer(last.clone(), 6, &vm, "b"))),
    ])
    .unwrap();
    let x = Tensor::randn(0f64, 1.0, (3, 7, 5), &Device::Cpu).unwrap();
    assert_eq!(ok.forward(&x).unwrap().dims(), &[3, 4]);
    let bad_dim = GruStack::new(vec![
        StackLayer::Gru(Box::new(layer(seq.clone(), 5, &vm, "c"))),
        StackLayer::Gru(Box::new(layer(last.clone(), 5, &vm, "d"))),
    ]);
    assert!(matches!(
        bad_dim,
        Err(Error::Gru(candle_gru::GruError::Shape { .. }))
    ));
    let bad_seq = GruStack::new(vec![
        StackLayer::Gru(Box::new(layer(last.clone(), 5, &vm, "e"))),
        StackLayer::Gru(Box::new(layer(last, 4, &vm, "g"))),
    ]);
    assert!(matches!(
        bad_seq,
        Err(Error::Gru(candle_gru::GruError::InvalidConfig { .. }))
    ));
}

#[test]
fn export_round_trip_and_missing_variables() {
    let vm = VarMap::new();
    let mut c = GruConfig::new(5);
    c.reset_after = false;
    c.return_sequences = true;
    let g = layer(c.clone(), 3, &vm, "gru");
    let path = scratch("gru.safetensors");
    export::save_safetensors(&g, &path).unwrap();
    let json = g.config().to_keras_json();
    let back = export::load_safetensors(
        GruConfig::from_keras_json(&json).unwrap(),
        &path,
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    let x = Tensor::randn(0f64, 1.0, (2, 4, 3), &Device::Cpu).unwrap();
    let (a, b) = (g.forward(&x).unwrap(), back.forward(&x).unwrap());
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    );
    // The same file under a config that wants a (2, 3u) bias: a typed shape error.
    let mut c2 = c.clone();
    c2.reset_after = true;
    assert!(matches!(
        export::load_safetensors(c2, &path, DType::F64, &Device::Cpu),
        Err(Error::Gru(candle_gru::GruError::Shape { .. }))
    ));
    // A file without a bias for a layer that has one.
    let mut m = HashMap::new();
    m.insert("kernel".to_string(), g.kernel().clone());
    m.insert("recurrent_kernel".to_string(), g.recurrent_kernel().clone());
    let p2 = scratch("nobias.safetensors");
    candle_core::safetensors::save(&m, &p2).unwrap();
    assert_eq!(
        file_problem(export::load_safetensors(c, &p2, DType::F64, &Device::Cpu)),
        FileProblem::Missing("bias".into())
    );
}
