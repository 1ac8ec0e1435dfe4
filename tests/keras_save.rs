//! Writing loaded models back in Keras 3's formats (`KerasModel::save`,
//! `save_weights_h5`): the variables by object-tree path, trained values written, files that
//! read back to the same model, and write errors. That Keras 3 itself reads the files is
//! checked in CI (`examples/keras_export`, `scripts/check_keras_export.py`).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasLayer, KerasModel, ModelCall};
use candle_gru::candle::{Bidirectional, Error, FileProblem, GruStack, MergeMode, StackLayer};
use candle_gru::{CallOptions, Gru, GruConfig, GruError};
use candle_nn::{Optimizer, VarMap, SGD};
use common::flat;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-gru-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn x() -> Tensor {
    let v: Vec<f32> = (0..3 * 7 * 5).map(|k| ((k as f32) * 0.37).sin()).collect();
    Tensor::from_vec(v, (3, 7, 5), &Device::Cpu).unwrap()
}

fn out(m: &KerasModel, x: &Tensor) -> Vec<f32> {
    m.call(x, None).unwrap()[0]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn variables_are_named_by_keras_3_object_tree_paths_for_every_source() {
    let keras3 =
        KerasModel::load(&data("stacked_gru_dense.keras"), DType::F32, &Device::Cpu).unwrap();
    let names: Vec<&str> = keras3.variables().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "layers/gru/cell/vars/0",
            "layers/gru/cell/vars/1",
            "layers/gru/cell/vars/2",
            "layers/gru_1/cell/vars/0",
            "layers/gru_1/cell/vars/1",
            "layers/gru_1/cell/vars/2",
            "layers/dense/vars/0",
            "layers/dense/vars/1",
        ]
    );
    // A Keras 2 file names its layers gru_3, dense_2...; the object tree is Keras 3's.
    let keras2 =
        KerasModel::load(&data("keras2_embedding_bigru.h5"), DType::F32, &Device::Cpu).unwrap();
    let names: Vec<&str> = keras2.variables().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "layers/embedding/vars/0");
    assert_eq!(names[4], "layers/bidirectional/backward_layer/cell/vars/0");
    assert_eq!(names[7], "layers/gru/cell/vars/0");
    assert_eq!(names.len(), 12);
}

#[test]
fn a_trained_model_is_written_with_its_trained_values_and_reads_back() {
    let x = x();
    for file in [
        "keras2_sequential_masking.h5",
        "masking_batch_norm_gru.keras",
    ] {
        let varmap = VarMap::new();
        let m = KerasModel::load_trainable(&data(file), DType::F32, &Device::Cpu, &varmap).unwrap();
        let x = x
            .narrow(
                2,
                0,
                if file.starts_with("masking_batch") {
                    4
                } else {
                    5
                },
            )
            .unwrap();
        let before = out(&m, &x);
        let mut sgd = SGD::new(varmap.all_vars(), 0.3).unwrap();
        for _ in 0..3 {
            let training = ModelCall {
                mask: None,
                training: true,
            };
            let loss = m.call_with(&x, training).unwrap().outputs[0]
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            sgd.backward_step(&loss).unwrap();
        }
        let after = out(&m, &x);
        assert_ne!(before, after, "{file}: training moved nothing");
        let (keras, h5) = (scratch("m.keras"), scratch("m.weights.h5"));
        m.save(&keras).unwrap();
        m.save_weights_h5(&h5).unwrap();
        let again = KerasModel::load(&keras, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(out(&again, &x), after, "{file}: .keras");
        let config = KerasModel::model_config(&keras).unwrap();
        let from_h5 = KerasModel::load_weights_h5(&config, &h5, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(out(&from_h5, &x), after, "{file}: .weights.h5");
        // The archive's config names the classes as Keras 3 resolves them.
        assert!(config["module"].as_str().unwrap().starts_with("keras"));
        assert!(config["config"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["module"] == "keras.layers"));
    }
}

#[test]
fn a_model_written_from_a_keras_2_file_keeps_its_functional_graph() {
    let m = KerasModel::load(&data("keras2_embedding_bigru.h5"), DType::F32, &Device::Cpu).unwrap();
    let path = scratch("functional.keras");
    m.save(&path).unwrap();
    let config = KerasModel::model_config(&path).unwrap();
    assert_eq!(config["module"], "keras.src.models.functional");
    // Nodes in Keras 3's form, each tensor with the shape and dtype the builder found.
    let gru = &config["config"]["layers"][3];
    let t = &gru["inbound_nodes"][0]["args"][0]["config"];
    assert_eq!(
        t["keras_history"],
        serde_json::json!(["bidirectional", 0, 0])
    );
    assert_eq!(
        (t["shape"][0].is_null(), t["dtype"].as_str()),
        (true, Some("float32"))
    );
    let ids = Tensor::new(
        &[[3i64, 5, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]],
        &Device::Cpu,
    )
    .unwrap();
    let again = KerasModel::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        m.call(&ids, None).unwrap()[0].to_vec2::<f32>().unwrap(),
        again.call(&ids, None).unwrap()[0].to_vec2::<f32>().unwrap()
    );
}

#[test]
fn writing_where_nothing_can_be_written_is_a_typed_error() {
    let m = KerasModel::load(&data("stacked_gru_dense.keras"), DType::F32, &Device::Cpu).unwrap();
    let nowhere = Path::new("/no/such/folder/m.keras");
    for r in [m.save(nowhere), m.save_weights_h5(nowhere)] {
        assert!(
            matches!(
                r,
                Err(Error::File {
                    problem: FileProblem::Unwritable(_),
                    ..
                })
            ),
            "{r:?}"
        );
    }
}

#[test]
fn an_adapted_normalization_keeps_its_statistics_through_training_and_writes_its_int_count() {
    let varmap = VarMap::new();
    let file = data("normalization_adapted_gru.keras");
    let m = KerasModel::load_trainable(&file, DType::F32, &Device::Cpu, &varmap).unwrap();
    let var = |m: &KerasModel, path: &str| {
        let found = m.variables().iter().find(|(p, _)| p == path);
        found.map(|(_, t)| t.clone()).unwrap()
    };
    let mean = flat(&var(&m, "layers/normalization/vars/0"));
    let kernel = flat(&var(&m, "layers/gru/cell/vars/0"));
    let mut sgd = SGD::new(varmap.all_vars(), 0.1).unwrap();
    let loss = m.call(&x(), None).unwrap()[0]
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    sgd.backward_step(&loss).unwrap();
    // The GRU trains; the adapted statistics (not trainable in Keras) do not.
    assert_ne!(flat(&var(&m, "layers/gru/cell/vars/0")), kernel);
    assert_eq!(flat(&var(&m, "layers/normalization/vars/0")), mean);
    let count = var(&m, "layers/normalization/vars/2");
    assert_eq!((count.dtype(), count.dims()), (DType::I64, &[][..]));
    // Written as int64 and read back.
    let path = scratch("normalization.weights.h5");
    m.save_weights_h5(&path).unwrap();
    let config = KerasModel::archive_config(&file).unwrap();
    let again = KerasModel::load_weights_h5(&config, &path, DType::F32, &Device::Cpu).unwrap();
    let read = var(&again, "layers/normalization/vars/2");
    assert_eq!(read.dtype(), DType::I64);
    assert_eq!(
        read.to_vec0::<i64>().unwrap(),
        count.to_vec0::<i64>().unwrap()
    );
    assert_eq!(out(&again, &x()), out(&m, &x()));
}

/// A Bidirectional GRU (concat) into a GRU with return_state, and a reset-before GRU
/// (named like the first, so renamed) into a Bidirectional with no merge, built in Rust.
fn built_layers(vm: &VarMap) -> (Bidirectional, Gru, Gru, Bidirectional) {
    let vb = candle_nn::VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    let c = GruConfig::from_keras_str(
        r#"{"units": 4, "return_sequences": true,
            "bias_initializer": {"class_name": "RandomNormal", "config": {"stddev": 0.5, "seed": 3}}}"#,
    )
    .unwrap();
    let bi = Bidirectional::new(c.clone(), 5, MergeMode::Concat, vb.pp("a")).unwrap();
    let mut s = c.clone();
    s.units = 6;
    s.return_state = true;
    s.go_backwards = true;
    let gru = Gru::new(s, 8, vb.pp("b")).unwrap();
    let mut r = c.clone();
    r.reset_after = false;
    r.units = 3;
    let before = Gru::new(r, 5, vb.pp("c")).unwrap();
    let mut d = c;
    d.return_state = true;
    let last = Bidirectional::new(d, 3, MergeMode::None, vb.pp("d")).unwrap();
    (bi, gru, before, last)
}

fn layer_names(model: &KerasModel) -> Vec<String> {
    let layers = model.config()["config"]["layers"].as_array().unwrap();
    layers
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn layers_built_in_rust_become_a_keras_model_that_writes_and_reads_back() {
    let vm = VarMap::new();
    let (bi, gru, before, last) = built_layers(&vm);
    let x = x();
    let none = CallOptions::default();

    let model =
        KerasModel::from_layers(&[KerasLayer::Bidirectional(&bi), KerasLayer::Gru(&gru)]).unwrap();
    let mid = bi.call(&x, None, None, false).unwrap().outputs.remove(0);
    let direct = gru.call(&mid, none).unwrap();
    let outputs = model.call(&x, None).unwrap();
    assert_eq!(outputs.len(), 2, "the sequence and the state");
    assert_eq!(flat(&outputs[0]), flat(&direct.output));
    assert_eq!(flat(&outputs[1]), flat(direct.state.as_ref().unwrap()));
    let paths: Vec<&str> = model.variables().iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths[0], "layers/bidirectional/forward_layer/cell/vars/0");
    assert_eq!(paths[3], "layers/bidirectional/backward_layer/cell/vars/0");
    assert_eq!(paths[6], "layers/gru/cell/vars/0");

    // Written as .keras and .weights.h5, read back to the same outputs.
    let keras = scratch("built.keras");
    model.save(&keras).unwrap();
    let again = KerasModel::load(&keras, DType::F32, &Device::Cpu).unwrap();
    let config = KerasModel::archive_config(&keras).unwrap();
    let weights = scratch("built.weights.h5");
    model.save_weights_h5(&weights).unwrap();
    let h5 = KerasModel::load_weights_h5(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    for m in [&again, &h5] {
        let o = m.call(&x, None).unwrap();
        assert_eq!(flat(&o[0]), flat(&outputs[0]));
        assert_eq!(flat(&o[1]), flat(&outputs[1]));
    }

    // No merge gives two outputs, then the two states.
    let chain = [KerasLayer::Gru(&before), KerasLayer::Bidirectional(&last)];
    let model = KerasModel::from_layers(&chain).unwrap();
    assert_eq!(layer_names(&model), ["input_layer", "gru", "bidirectional"]);
    let mid = before.call(&x, none).unwrap().output;
    let direct = last.call(&mid, None, None, false).unwrap();
    let o = model.call(&x, None).unwrap();
    assert_eq!(o.len(), 4);
    assert_eq!(flat(&o[0]), flat(&direct.outputs[0]));
    assert_eq!(flat(&o[1]), flat(&direct.outputs[1]));
    assert_eq!(flat(&o[3]), flat(&direct.states.as_ref().unwrap().1));

    // Two layers named alike: the second is renamed, its variables at `layers/gru_1`.
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let twin = Gru::new(GruConfig::new(2), 3, vb.pp("twin")).unwrap();
    assert_eq!(twin.config().name, before.config().name);
    let model =
        KerasModel::from_layers(&[KerasLayer::Gru(&before), KerasLayer::Gru(&twin)]).unwrap();
    assert_eq!(layer_names(&model), ["input_layer", "gru", "gru_1"]);
    assert_eq!(model.variables()[3].0, "layers/gru_1/cell/vars/0");
    let direct = twin.call(&mid, none).unwrap().output;
    assert_eq!(flat(&model.call(&x, None).unwrap()[0]), flat(&direct));
}

#[test]
fn a_chain_that_keras_could_not_build_is_a_typed_error() {
    let vm = VarMap::new();
    let (bi, _, before, _) = built_layers(&vm);
    let chain = [KerasLayer::Bidirectional(&bi), KerasLayer::Gru(&before)];
    let err = KerasModel::from_layers(&chain).unwrap_err();
    let Error::Gru(GruError::Shape { expected, got, .. }) = err else {
        panic!("{err}")
    };
    assert_eq!(
        (expected.as_str(), got.as_str()),
        ("(batch, steps, 5)", "(batch, steps, 8)")
    );
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let head = candle_nn::linear(3, 2, vb.pp("head")).unwrap();
    let dense = KerasLayer::Dense {
        linear: &head,
        activation: "linear",
    };
    let err = KerasModel::from_layers(&[KerasLayer::Bidirectional(&bi), dense]).unwrap_err();
    assert!(matches!(err, Error::Gru(GruError::Shape { .. })), "{err}");
    let table = candle_nn::embedding(10, 5, vb.pp("emb")).unwrap();
    let embedding = KerasLayer::Embedding {
        table: &table,
        mask_zero: true,
    };
    let err = KerasModel::from_layers(&[KerasLayer::Gru(&before), embedding]).unwrap_err();
    let Error::Gru(GruError::InvalidConfig { key, .. }) = err else {
        panic!("{err}")
    };
    assert_eq!(key, "layers[1]");
    let err = KerasModel::from_layers(&[]).unwrap_err();
    let Error::Gru(GruError::InvalidConfig { key, .. }) = err else {
        panic!("{err}")
    };
    assert_eq!(key, "layers");

    // A GRU that returns its last output only: no GRU can follow it.
    let last_only = Gru::new(GruConfig::new(5), 5, vb.pp("e")).unwrap();
    let chain = [KerasLayer::Gru(&last_only), KerasLayer::Gru(&before)];
    let err = KerasModel::from_layers(&chain).unwrap_err();
    let Error::Gru(GruError::InvalidConfig { key, .. }) = err else {
        panic!("{err}")
    };
    assert_eq!(key, "layers[0].return_sequences");
    let stateful = GruConfig::from_keras_str(r#"{"units": 2, "stateful": true}"#).unwrap();
    let stateful = Gru::new(stateful, 5, vb.pp("f")).unwrap();
    let err = KerasModel::from_layers(&[KerasLayer::Gru(&stateful)]).unwrap_err();
    let Error::Gru(GruError::InvalidConfig { key, .. }) = err else {
        panic!("{err}")
    };
    assert_eq!(key, "layers[0].stateful");

    // One model, one dtype: an f64 layer after f32 ones is not silently cast.
    let vb64 = candle_nn::VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let wide = Gru::new(GruConfig::new(2), 8, vb64.pp("g")).unwrap();
    let err = KerasModel::from_layers(&[KerasLayer::Bidirectional(&bi), KerasLayer::Gru(&wide)])
        .unwrap_err();
    let Error::Gru(GruError::DType { what, .. }) = err else {
        panic!("{err}")
    };
    assert!(what.starts_with("layers[1]"), "{what}");
}

#[test]
fn a_gru_stack_becomes_a_keras_model_of_its_layers() {
    let vm = VarMap::new();
    let (bi, gru, _, _) = built_layers(&vm);
    let stack = GruStack::new(vec![
        StackLayer::Bidirectional(Box::new(bi)),
        StackLayer::Gru(Box::new(gru)),
    ])
    .unwrap();
    let layers: Vec<KerasLayer> = stack.layers().iter().map(KerasLayer::from).collect();
    let model = KerasModel::from_layers(&layers).unwrap();
    let x = x();
    let direct = stack.call(&x, None, None, false).unwrap();
    let o = model.call(&x, None).unwrap();
    assert_eq!(flat(&o[0]), flat(&direct.output));
    assert_eq!(flat(&o[1]), flat(&direct.states[0]));
}

/// Token ids 1..10 with zero padding at the end of two rows.
fn ids() -> Tensor {
    let v: Vec<u32> = (0..3 * 7)
        .map(|k| match (k / 7, k % 7) {
            (1, t) if t >= 4 => 0,
            (2, t) if t >= 2 => 0,
            _ => 1 + (k * 7 % 9) as u32,
        })
        .collect();
    Tensor::from_vec(v, (3, 7), &Device::Cpu).unwrap()
}

#[test]
fn an_embedding_classifier_built_in_rust_masks_its_padding_as_keras_does() {
    let vm = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let table = candle_nn::embedding(10, 5, vb.pp("emb")).unwrap();
    let seq = GruConfig::from_keras_str(r#"{"units": 4, "return_sequences": true}"#).unwrap();
    let bi = Bidirectional::new(seq, 5, MergeMode::Sum, vb.pp("bi")).unwrap();
    let gru = Gru::new(GruConfig::new(6), 4, vb.pp("gru")).unwrap();
    let per_step = candle_nn::linear(4, 4, vb.pp("step")).unwrap();
    let head = candle_nn::linear(6, 3, vb.pp("head")).unwrap();
    let layers = [
        KerasLayer::Embedding {
            table: &table,
            mask_zero: true,
        },
        KerasLayer::Bidirectional(&bi),
        KerasLayer::Dense {
            linear: &per_step,
            activation: "relu",
        },
        KerasLayer::Gru(&gru),
        KerasLayer::Dense {
            linear: &head,
            activation: "softmax",
        },
    ];
    let model = KerasModel::from_layers(&layers).unwrap();
    assert_eq!(
        layer_names(&model),
        [
            "input_layer",
            "not_equal",
            "embedding",
            "bidirectional",
            "dense",
            "gru",
            "dense_1"
        ]
    );

    // The same computation by hand, with the mask ids != 0.
    use candle_core::Module;
    let ids = ids();
    let mask = ids.ne(0u32).unwrap();
    let x = table.forward(&ids).unwrap();
    let y = bi
        .call(&x, Some(&mask), None, false)
        .unwrap()
        .outputs
        .remove(0);
    let y = per_step.forward(&y).unwrap().relu().unwrap();
    let options = CallOptions {
        mask: Some(&mask),
        ..Default::default()
    };
    let h = gru.call(&y, options).unwrap().output;
    let want = candle_nn::ops::softmax_last_dim(&head.forward(&h).unwrap()).unwrap();
    let got = model.call(&ids, None).unwrap();
    assert_eq!(got.len(), 1);
    let diff = (&got[0] - &want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap();
    assert!(diff.max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-6);
    // Without the mask the padded rows would differ: the mask is what made them agree.
    let unmasked = gru.call(&y, CallOptions::default()).unwrap().output;
    let unmasked = candle_nn::ops::softmax_last_dim(&head.forward(&unmasked).unwrap()).unwrap();
    let moved = (&got[0] - &unmasked)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap();
    assert!(moved.max(0).unwrap().to_scalar::<f32>().unwrap() > 1e-4);

    let keras = scratch("classifier.keras");
    model.save(&keras).unwrap();
    let again = KerasModel::load(&keras, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(flat(&again.call(&ids, None).unwrap()[0]), flat(&got[0]));
}

#[test]
fn a_float64_chain_stays_float64() {
    use candle_core::Module;
    let vm = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let table = candle_nn::embedding(10, 5, vb.pp("emb")).unwrap();
    let gru = Gru::new(GruConfig::new(4), 5, vb.pp("gru")).unwrap();
    let head = candle_nn::linear(4, 2, vb.pp("head")).unwrap();
    let layers = [
        KerasLayer::Embedding {
            table: &table,
            mask_zero: false,
        },
        KerasLayer::Gru(&gru),
        KerasLayer::Dense {
            linear: &head,
            activation: "linear",
        },
    ];
    let model = KerasModel::from_layers(&layers).unwrap();
    let config = &model.config()["config"]["layers"];
    assert_eq!(config[1]["config"]["dtype"]["config"]["name"], "float64");
    assert_eq!(config[3]["config"]["dtype"]["config"]["name"], "float64");
    assert!(model
        .variables()
        .iter()
        .all(|(_, t)| t.dtype() == DType::F64));
    let ids = ids();
    let h = gru
        .call(&table.forward(&ids).unwrap(), CallOptions::default())
        .unwrap();
    let want = head.forward(&h.output).unwrap();
    let got = model.call(&ids, None).unwrap().remove(0);
    assert_eq!(got.dtype(), DType::F64);
    let diff = (&got - &want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap();
    assert!(diff.max(0).unwrap().to_scalar::<f64>().unwrap() < 1e-12);
}

#[test]
fn candle_nn_weights_of_other_ranks_are_a_typed_error() {
    let dev = Device::Cpu;
    let zeros = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
    let flat_table = candle_nn::Embedding::new(zeros(&[10]), 10);
    let cube = candle_nn::Linear::new(zeros(&[2, 3, 4]), None);
    let bad_bias = candle_nn::Linear::new(zeros(&[2, 3]), Some(zeros(&[3])));
    let layers = [
        KerasLayer::Embedding {
            table: &flat_table,
            mask_zero: false,
        },
        KerasLayer::Dense {
            linear: &cube,
            activation: "linear",
        },
        KerasLayer::Dense {
            linear: &bad_bias,
            activation: "linear",
        },
    ];
    for (layer, what) in layers
        .into_iter()
        .zip(["embedding table", "Linear weight", "Linear bias"])
    {
        let err = KerasModel::from_layers(&[layer]).unwrap_err();
        let Error::Gru(GruError::Shape { what: got, .. }) = err else {
            panic!("{err}")
        };
        assert_eq!(got, format!("layers[0] {what}"));
    }
}
