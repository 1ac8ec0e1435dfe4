//! The Keras layers around the GRUs of a loaded model (tests/data/models/embedding_* and
//! gru_layernorm_max_pool, made by scripts/make_keras_model_cases.py): the token ids a model
//! takes and the typed errors for others, the mask an `Embedding(mask_zero=True)` gives the
//! GRUs and the pooling, the functional graphs' mask nodes that cannot be followed, the
//! layer configs that are refused; and (reshape_permute_padding, seq2seq_repeat_vector, made
//! by scripts/make_keras_reshaping_cases.py) the activity loss of ActivityRegularization,
//! the noise layers in training, and reshaping layers that cannot apply; functional mask
//! arguments, model inputs, and stateful models (stateful_grus).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasModel, LayerActivation, MaskOp, ModelLayer};
use candle_gru::candle::{Error, FileProblem};
use candle_gru::GruError;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

const MASKED: &str = "embedding_mask_zero_gru_softmax";

fn model(name: &str) -> KerasModel {
    KerasModel::load(&data(&format!("{name}.keras")), DType::F32, &Device::Cpu).unwrap()
}

fn ids(rows: &[&[i64]]) -> Tensor {
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn token_models_load_the_layers_keras_wrote() {
    let m = model(MASKED);
    let kinds: Vec<&str> = m
        .layers
        .iter()
        .map(|(_, l)| match l {
            ModelLayer::Input => "input",
            ModelLayer::Embedding(e) if e.mask_zero => "embedding(mask_zero)",
            ModelLayer::Embedding(_) => "embedding",
            ModelLayer::Dropout(_) => "dropout",
            ModelLayer::Gru(_) => "gru",
            ModelLayer::Dense(d) if d.activation == LayerActivation::Softmax => "dense(softmax)",
            ModelLayer::MaskOp(MaskOp::NotEqual(v)) if *v == 0.0 => "not_equal(0)",
            _ => "other",
        })
        .collect();
    // The NotEqual(ids, 0) node Keras records for the mask is an operation of the graph.
    let want = [
        "input",
        "embedding(mask_zero)",
        "dropout",
        "not_equal(0)",
        "gru",
        "dropout",
        "gru",
        "dense(softmax)",
    ];
    assert_eq!(kinds, want);
    let out = m.call(&ids(&[&[3, 4, 5, 0, 0, 0, 0]]), None).unwrap();
    let probs = values(&out[0]);
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{probs:?}");
}

#[test]
fn padding_ids_are_masked_and_any_id_dtype_gives_the_same_rows() {
    let m = model(MASKED);
    // With mask_zero, trailing 0 ids are skipped: the output is that of the shorter row.
    let short = values(&m.call(&ids(&[&[7, 2, 9, 0, 0, 0, 0]]), None).unwrap()[0]);
    let longer = values(&m.call(&ids(&[&[7, 2, 9, 0, 0, 0, 0, 0, 0]]), None).unwrap()[0]);
    assert_eq!(short, longer);
    let other = values(&m.call(&ids(&[&[7, 2, 9, 4, 0, 0, 0]]), None).unwrap()[0]);
    assert_ne!(short, other, "a real token changes the output");
    let as_i64 = ids(&[&[7, 2, 9, 1, 0, 0, 0]]);
    let want = values(&m.call(&as_i64, None).unwrap()[0]);
    for dtype in [DType::U8, DType::U32, DType::F32, DType::F64] {
        let got = values(&m.call(&as_i64.to_dtype(dtype).unwrap(), None).unwrap()[0]);
        assert_eq!(got, want, "{dtype:?} ids");
    }
}

#[test]
fn bad_token_ids_are_typed_errors() {
    let m = model(MASKED);
    // input_dim is 20.
    for (what, x) in [
        ("20", ids(&[&[1, 2, 20]])),
        ("-1", ids(&[&[1, -1, 3]])),
        (
            "2.5",
            Tensor::new(&[[1f32, 2.5, 3.0]], &Device::Cpu).unwrap(),
        ),
    ] {
        match m.call(&x, None) {
            Err(Error::Gru(GruError::OutOfRange { what: w, got, .. })) => {
                assert_eq!((w.as_str(), got.as_str()), ("token id", what));
            }
            other => panic!("expected an out-of-range error for {what}, got {other:?}"),
        }
    }
    let features = Tensor::zeros((2, 7, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        m.call(&features, None),
        Err(Error::Gru(GruError::Shape { what, .. })) if what == "token ids"
    ));
}

fn load_edited(name: &str, edit: impl Fn(&mut Value)) -> candle_gru::candle::Result<KerasModel> {
    let mut cfg = KerasModel::archive_config(&data(&format!("{name}.keras"))).unwrap();
    edit(&mut cfg);
    let h5 = data(&format!("{name}.weights.h5"));
    KerasModel::load_weights_h5(&cfg, &h5, DType::F32, &Device::Cpu)
}

fn layer_named<'a>(cfg: &'a mut Value, class: &str) -> &'a mut Value {
    cfg["config"]["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|l| l["class_name"] == class)
        .unwrap()
}

fn unsupported(r: candle_gru::candle::Result<KerasModel>) -> String {
    match r {
        Err(Error::File {
            problem: FileProblem::Unsupported(w),
            ..
        }) => w,
        other => panic!("expected an unsupported model, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn functional_mask_arguments_are_the_recorded_mask_operations() {
    let x = ids(&[&[3, 4, 5, 0, 0, 0, 0], &[3, 3, 3, 3, 1, 2, 0]]);
    let want = values(&model(MASKED).call(&x, None).unwrap()[0]);
    // Without the mask argument Keras passes the mask the input carries: the same.
    let implicit = load_edited(MASKED, |c| {
        for gru in layers_named(c, "GRU") {
            let kwargs = gru["inbound_nodes"][0]["kwargs"].as_object_mut().unwrap();
            kwargs.remove("mask");
        }
    });
    assert_eq!(values(&implicit.unwrap().call(&x, None).unwrap()[0]), want);
    // The argument is what the GRUs use: NotEqual(ids, 3) masks other steps than the
    // Embedding's mask_zero, and the outputs change.
    let three = load_edited(MASKED, |c| {
        layer_named(c, "NotEqual")["inbound_nodes"][0]["args"][1] = 3.into();
    })
    .unwrap();
    let got = values(&three.call(&x, None).unwrap()[0]);
    assert_ne!(got, want);
    // ... as running the layers by hand with the mask ids != 3 given to both GRUs.
    let mask = x.ne(3i64).unwrap();
    let layer = |k: usize| &three.layers[k].1;
    let (ModelLayer::Embedding(e), ModelLayer::Gru(g1), ModelLayer::Gru(g2), ModelLayer::Dense(d)) =
        (layer(1), layer(4), layer(6), layer(7))
    else {
        panic!(
            "layers {:?}",
            three.layers.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    };
    let opts = |m| candle_gru::CallOptions {
        mask: Some(m),
        initial_state: None,
        training: false,
    };
    let h = g1
        .call(&e.forward(&x).unwrap(), opts(&mask))
        .unwrap()
        .output;
    let h = g2.call(&h, opts(&mask)).unwrap().output;
    assert_eq!(values(&d.forward(&h).unwrap()), got);
    // A mask argument from a layer that computes no mask.
    let w = unsupported(load_edited(MASKED, |c| {
        let gru = layer_named(c, "GRU");
        gru["inbound_nodes"][0]["kwargs"]["mask"]["config"]["keras_history"][0] = "dropout".into();
    }));
    assert!(
        w.contains("\"gru\"") && w.contains("computes no mask"),
        "{w}"
    );
}

fn layers_named<'a>(cfg: &'a mut Value, class: &str) -> Vec<&'a mut Value> {
    cfg["config"]["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .filter(|l| l["class_name"] == class)
        .collect()
}

#[test]
fn layer_activations_read_keras_names() {
    let read = |v: Value| LayerActivation::from_keras_value(&v).unwrap();
    assert_eq!(read("softmax".into()), LayerActivation::Softmax);
    assert_eq!(read("log_softmax".into()), LayerActivation::LogSoftmax);
    let f = serde_json::json!({"module": "keras.activations", "class_name": "function",
        "config": "softmax", "registered_name": "softmax"});
    assert_eq!(read(f), LayerActivation::Softmax);
    assert!(matches!(read(Value::Null), LayerActivation::Elementwise(_)));
    assert!(LayerActivation::from_keras_value(&"no_such".into()).is_err());
}

#[test]
fn pooling_and_layer_norm_follow_keras() {
    use candle_gru::candle::io::keras::{GlobalPooling1D, LayerNorm};
    let dev = &Device::Cpu;
    let x = Tensor::new(&[[[1f32, 10.0], [3.0, -2.0], [5.0, 4.0]]], dev).unwrap();
    let mask = Tensor::new(&[[1u8, 1, 0]], dev).unwrap();
    let avg = GlobalPooling1D {
        max: false,
        keepdims: false,
    };
    // The mean over the kept steps; all steps without a mask.
    let masked = values(&avg.forward(&x, Some(&mask)).unwrap());
    assert_eq!(masked, [2.0, 4.0]);
    assert_eq!(values(&avg.forward(&x, None).unwrap()), [3.0, 4.0]);
    // A row whose steps are all masked: 0/0, as in Keras.
    let none = Tensor::new(&[[0u8, 0, 0]], dev).unwrap();
    assert!(values(&avg.forward(&x, Some(&none)).unwrap())[0].is_nan());
    let max = GlobalPooling1D {
        max: true,
        keepdims: true,
    };
    let m = max.forward(&x, Some(&mask)).unwrap();
    assert_eq!(m.dims(), &[1, 1, 2]);
    assert_eq!(values(&m), [5.0, 10.0], "the max ignores the mask");
    // LayerNorm on one step [1, 3]: mean 2, var 1.
    let norm = LayerNorm {
        gamma: Some(Tensor::new(&[2f32, 1.0], dev).unwrap()),
        beta: Some(Tensor::new(&[0.5f32, 0.0], dev).unwrap()),
        epsilon: 0.0,
        rules: Vec::new(),
    };
    let y = values(
        &norm
            .forward(&Tensor::new(&[[1f32, 3.0]], dev).unwrap())
            .unwrap(),
    );
    assert_eq!(y, [-1.5, 1.0]);
}

#[test]
fn layer_norms_and_pooling_keras_cannot_mean_here_are_refused() {
    const NORM: &str = "gru_layernorm_max_pool";
    let w = unsupported(load_edited(NORM, |c| {
        layer_named(c, "LayerNormalization")["config"]["rms_scaling"] = true.into();
    }));
    assert!(w.contains("rms_scaling"), "{w}");
    let w = unsupported(load_edited(NORM, |c| {
        layer_named(c, "LayerNormalization")["config"]["axis"] = serde_json::json!([1]);
    }));
    assert!(w.contains("axis"), "{w}");
    let w = unsupported(load_edited(NORM, |c| {
        layer_named(c, "GlobalMaxPooling1D")["config"]["data_format"] = "channels_first".into();
    }));
    assert!(w.contains("channels_first"), "{w}");
}

#[test]
fn convolutions_and_wrappers_keras_cannot_mean_here_are_refused() {
    const CONV: &str = "conv1d_pooling_gru";
    let w = unsupported(load_edited(CONV, |c| {
        layer_named(c, "Conv1D")["config"]["data_format"] = "channels_first".into();
    }));
    assert!(w.contains("channels_first"), "{w}");
    let w = unsupported(load_edited(CONV, |c| {
        layer_named(c, "Conv1D")["config"]["groups"] = 2.into();
    }));
    assert!(w.contains("2 groups of 3 inputs"), "{w}");
    let w = unsupported(load_edited(CONV, |c| {
        layer_named(c, "MaxPooling1D")["config"]["padding"] = "causal".into();
    }));
    assert!(w.contains("padding"), "{w}");
    const TD: &str = "time_distributed_dense_gru";
    let w = unsupported(load_edited(TD, |c| {
        layer_named(c, "TimeDistributed")["config"]["layer"]["class_name"] = "Conv1D".into();
    }));
    assert!(w.contains("TimeDistributed"), "{w}");
}

#[test]
fn conv_padding_follows_tensorflow() {
    use candle_gru::candle::io::keras::Padding1D;
    // same: ceil(T / s) outputs; the odd padding step goes to the right.
    assert_eq!(Padding1D::Same.amounts(16, 3, 1), (1, 1));
    assert_eq!(Padding1D::Same.amounts(8, 2, 1), (0, 1));
    assert_eq!(Padding1D::Same.amounts(7, 3, 2), (1, 1));
    assert_eq!(Padding1D::Same.amounts(8, 3, 2), (0, 1));
    assert_eq!(Padding1D::Causal.amounts(8, 3, 1), (2, 0));
    assert_eq!(Padding1D::Valid.amounts(8, 3, 1), (0, 0));
}

#[test]
fn sequences_shorter_than_a_window_are_typed_errors() {
    let m = KerasModel::load(&data("conv1d_pooling_gru.keras"), DType::F32, &Device::Cpu).unwrap();
    // The first Conv1D pads (same); MaxPooling1D(2) then needs 2 steps.
    let one_step = Tensor::zeros((1, 1, 3), DType::F32, &Device::Cpu).unwrap();
    match m.call(&one_step, None) {
        Err(Error::Gru(GruError::Shape { what, .. })) => assert_eq!(what, "pooling input"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    // A valid Conv1D (the third, kernel 3, after the pools) on too few steps.
    let ModelLayer::Conv1D(valid) = &m.layers[5].1 else {
        panic!("layer 5 is the third Conv1D: {:?}", m.layers[5].0)
    };
    let two_steps = Tensor::zeros((1, 2, 6), DType::F32, &Device::Cpu).unwrap();
    match valid.forward(&two_steps) {
        Err(Error::Gru(GruError::Shape { what, .. })) => assert_eq!(what, "Conv1D input"),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn activity_regularization_and_noise_layers_act_as_keras() {
    let name = "reshape_permute_padding";
    let text = std::fs::read_to_string(data(&format!("{name}.json"))).unwrap();
    let keras_losses: Vec<f64> =
        serde_json::from_value(serde_json::from_str::<Value>(&text).unwrap()["losses"].clone())
            .unwrap();
    let m = model(name);
    let x = common::model_case_inputs(name);
    let call = |training| {
        m.call_with(
            &x,
            candle_gru::candle::io::keras::ModelCall {
                mask: None,
                training,
            },
        )
        .unwrap()
    };
    // Inference: the noise layers are the identity; ActivityRegularization's loss is Keras'.
    let out = call(false);
    let loss = out.activity_loss.unwrap().to_scalar::<f32>().unwrap() as f64;
    assert_eq!(keras_losses.len(), 1);
    assert!(
        (loss - keras_losses[0]).abs() <= 1e-6 * keras_losses[0],
        "{loss} vs {keras_losses:?}"
    );
    assert_eq!(values(&out.outputs[0]), values(&call(false).outputs[0]));
    // Training: GaussianNoise, GaussianDropout and AlphaDropout draw fresh noise per call.
    let (a, b) = (
        values(&call(true).outputs[0]),
        values(&call(true).outputs[0]),
    );
    assert_eq!(a.len(), values(&out.outputs[0]).len());
    assert!(a != b && a != values(&out.outputs[0]));
}

#[test]
fn reshaping_layers_that_cannot_apply_are_typed_errors() {
    // Flatten and Permute need the steps fixed in the config.
    let free_steps = |cfg: &mut Value| {
        layer_named(cfg, "InputLayer")["config"]["batch_shape"] = serde_json::json!([null, null, 5])
    };
    let e = unsupported_or_malformed(load_edited("seq2seq_repeat_vector", |c| {
        free_steps(c);
        layer_named(c, "RepeatVector")["config"]["n"] = 0.into();
    }));
    assert!(e.contains("RepeatVector n"), "{e}");
    let e = unsupported_or_malformed(load_edited("reshape_permute_padding", free_steps));
    assert!(e.contains("Permute needs the input's shape"), "{e}");
    let e = unsupported_or_malformed(load_edited("reshape_permute_padding", |c| {
        layer_named(c, "Reshape")["config"]["target_shape"] = serde_json::json!([-1, 8]);
    }));
    assert!(e.contains("target_shape"), "{e}");
    let e = unsupported_or_malformed(load_edited("reshape_permute_padding", |c| {
        layer_named(c, "Permute")["config"]["dims"] = serde_json::json!([2, 2]);
    }));
    assert!(e.contains("Permute dims"), "{e}");
    let e = unsupported_or_malformed(load_edited("reshape_permute_padding", |c| {
        layer_named(c, "Softmax")["config"]["axis"] = 1.into();
    }));
    assert!(e.contains("Softmax over axis 1"), "{e}");
    // A call whose steps do not fit the Reshape is a shape error, not a panic.
    let m = model("reshape_permute_padding");
    let x = Tensor::zeros((2, 6, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        m.call(&x, None),
        Err(Error::Gru(GruError::Shape { .. }))
    ));
}

fn unsupported_or_malformed(r: candle_gru::candle::Result<KerasModel>) -> String {
    match r {
        Err(Error::File {
            problem: FileProblem::Unsupported(w) | FileProblem::Unreadable(w),
            ..
        }) => w,
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn encoder_decoder_inputs_and_initial_states_are_checked() {
    let name = "encoder_decoder_initial_state";
    let m = model(name);
    let enc = Tensor::zeros((2, 7, 5), DType::F32, &Device::Cpu).unwrap();
    let dec = Tensor::zeros((2, 4, 3), DType::F32, &Device::Cpu).unwrap();
    let opts = || candle_gru::candle::io::keras::ModelCall {
        mask: None,
        training: false,
    };
    let out = m.call_inputs(&[enc.clone(), dec.clone()], opts()).unwrap();
    assert_eq!(out.outputs[0].dims(), &[2, 4, 2]);
    // One input for a model of two.
    assert!(matches!(
        m.call(&enc, None),
        Err(Error::Gru(GruError::Shape { .. }))
    ));
    // An initial_state given to a layer that takes none.
    let w = unsupported(load_edited(name, |c| {
        let encoder = layer_named(c, "GRU")["name"].clone();
        let dense = layer_named(c, "TimeDistributed");
        dense["inbound_nodes"][0]["kwargs"]["initial_state"] = serde_json::json!(
            {"class_name": "__keras_tensor__", "config": {"keras_history": [encoder, 0, 1]}}
        );
    }));
    assert!(w.contains("initial_state"), "{w}");
    // An input layer that input_layers does not list.
    let w = unsupported(load_edited(name, |c| {
        c["config"]["input_layers"] = serde_json::json!([["input_layer", 0, 0]]);
    }));
    assert!(w.contains("input_layers"), "{w}");
}

#[test]
fn stateful_models_carry_their_state_until_reset() {
    let name = "stateful_grus";
    let text = std::fs::read_to_string(data(&format!("{name}.json"))).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let floats = |key: &str| -> Vec<f32> {
        let v: Vec<Vec<f64>> = serde_json::from_value(json[key].clone()).unwrap();
        v.concat().iter().map(|&x| x as f32).collect()
    };
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 + 1e-5 * y.abs())
    };
    let m = model(name);
    let x = common::model_case_inputs(name);
    let rows: Vec<Vec<Vec<f32>>> = serde_json::from_value(json["next_inputs"].clone()).unwrap();
    let next = Tensor::from_vec(rows.concat().concat(), x.dims(), &Device::Cpu).unwrap();
    let first = values(&m.call(&x, None).unwrap()[0]);
    let expected: Vec<Vec<f64>> = serde_json::from_value(json["expected"][0].clone()).unwrap();
    let expected: Vec<f32> = expected.concat().iter().map(|&v| v as f32).collect();
    assert!(close(&first, &expected), "{first:?}");
    // The next call starts from the states the first left, as in Keras.
    let second = values(&m.call(&next, None).unwrap()[0]);
    assert!(close(&second, &floats("next_call")), "{second:?}");
    // From zero states it differs.
    m.reset_states();
    let fresh = values(&m.call(&next, None).unwrap()[0]);
    assert!(!close(&fresh, &floats("next_call")));
    // reset_states: the first call again.
    m.reset_states();
    assert_eq!(values(&m.call(&x, None).unwrap()[0]), first);
}
