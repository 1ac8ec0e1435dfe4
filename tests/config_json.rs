//! `GruConfig` <-> Keras JSON against what Keras 3.15.1 wrote (tests/data/configs).

use candle_gru::core::{
    Activation, Axis, Constraint, Implementation, Initializer, Num, Regularizer, ScalingPreset,
};
use candle_gru::{GruConfig, GruError, UseCudnn};
use serde_json::{json, Value};
use std::path::Path;

fn data(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn default_config_equals_keras_get_config_key_by_key() {
    let keras = &data("configs/default_gru4.json")["get_config"];
    let ours = GruConfig::new(4).to_keras_json();
    let (k, o) = (keras.as_object().unwrap(), ours.as_object().unwrap());
    assert_eq!(k.len(), o.len(), "same number of keys");
    for (key, want) in k {
        assert_eq!(o.get(key), Some(want), "key {key}");
    }
}

#[test]
fn custom_config_built_in_rust_equals_keras_get_config() {
    let file = data("configs/custom.json");
    let mut c = GruConfig::new(7);
    c.activation = Activation::Relu;
    c.recurrent_activation = Activation::HardSigmoid;
    c.kernel_initializer = Initializer::RandomNormal {
        mean: Num::Float(0.1),
        stddev: Num::Float(0.2),
        seed: Some(3),
    };
    c.recurrent_initializer = Initializer::Orthogonal {
        gain: Num::Float(0.9),
        seed: Some(4),
    };
    c.bias_initializer = Initializer::Constant {
        value: Num::Float(0.5),
    };
    c.kernel_regularizer = Some(Regularizer::L1L2 { l1: 0.01, l2: 0.02 });
    c.recurrent_regularizer = Some(Regularizer::L2 { l2: 0.003 });
    c.bias_regularizer = Some(Regularizer::l1(0.004));
    c.activity_regularizer = Some(Regularizer::L2 { l2: 0.005 });
    c.kernel_constraint = Some(Constraint::MaxNorm {
        max_value: Num::Float(2.0),
        axis: Axis::One(0),
    });
    c.recurrent_constraint = Some(Constraint::UnitNorm { axis: Axis::One(1) });
    c.bias_constraint = Some(Constraint::NonNeg);
    c.dropout = 0.1;
    c.recurrent_dropout = 0.2;
    c.seed = Some(42);
    c.return_sequences = true;
    c.return_state = true;
    c.go_backwards = true;
    c.stateful = true;
    c.unroll = true;
    c.reset_after = false;
    c.zero_output_for_mask = true;
    c.use_cudnn = UseCudnn::Never;
    c.implementation = Implementation::One;
    c.name = "gru_custom".into();
    c.trainable = false;
    c.dtype.name = "float64".into();
    assert_eq!(c.to_keras_json(), file["get_config"]);
    // Keys passed to the constructor but absent from get_config.
    for key in file["keys_passed_but_absent_from_config"]
        .as_array()
        .unwrap()
    {
        assert!(c.to_keras_json().get(key.as_str().unwrap()).is_none());
    }
    // And from_config of it gives back the same config (use_cudnn/implementation aside).
    let back = GruConfig::from_keras_json(&file["get_config"]).unwrap();
    assert_eq!(back.to_keras_json(), file["get_config"]);
    assert_eq!(back.use_cudnn, UseCudnn::Auto);
}

#[test]
fn string_identifiers_round_trip() {
    let cfg = &data("configs/string_identifiers.json")["get_config"];
    let c = GruConfig::from_keras_json(cfg).unwrap();
    assert_eq!(&c.to_keras_json(), cfg);
    assert_eq!(
        c.kernel_initializer,
        Initializer::preset(ScalingPreset::HeNormal, None)
    );
    assert_eq!(c.recurrent_activation, Activation::Linear);
}

/// Puts a probe's `check` entry into a config as Keras would have serialized it.
fn serialized(key: &str, check: &Value) -> Value {
    let module = if key.ends_with("initializer") {
        "keras.initializers"
    } else if key.ends_with("regularizer") {
        "keras.regularizers"
    } else {
        "keras.constraints"
    };
    json!({"module": module, "class_name": check[0], "config": check[1], "registered_name": null})
}

#[test]
fn from_config_probes_accept_and_reject_what_keras_does() {
    let probes = data("configs/from_config_probes.json");
    let base = data("configs/default_gru4.json")["get_config"].clone();
    let mut checked = 0;
    for (name, probe) in probes.as_object().unwrap() {
        let mut input = base.clone();
        if !probe["ok"].as_bool().unwrap() {
            // The rejected inputs, as Keras' error messages name them.
            let (key, value) = match name.as_str() {
                "unknown_initializer_name" => ("kernel_initializer", json!("no_such_init")),
                "unknown_regularizer_class" => (
                    "kernel_regularizer",
                    json!({"class_name": "NoSuchReg", "config": {}}),
                ),
                "extra_unknown_key" => ("foo", json!(1)),
                "time_major_key_passed" => ("time_major", json!(true)),
                other => panic!("unhandled rejected probe {other}"),
            };
            input[key] = value;
            let err = GruConfig::from_keras_json(&input).unwrap_err();
            assert!(
                err.to_string().contains(key),
                "{name}: error must name {key}: {err}"
            );
            checked += 1;
            continue;
        }
        let check = &probe["check"];
        if let Some(full) = [
            "custom_get_config_json_roundtrip",
            "default_get_config_json_roundtrip",
            "string_identifiers_roundtrip",
        ]
        .iter()
        .position(|n| n == name)
        {
            input = match full {
                0 => data("configs/custom.json")["get_config"].clone(),
                1 => base.clone(),
                _ => data("configs/string_identifiers.json")["get_config"].clone(),
            };
        } else if let Some(diff) = probe.get("diff_keys") {
            for (k, d) in diff.as_object().unwrap() {
                input[k] = d["in"].clone();
            }
        } else {
            for (k, v) in check.as_object().unwrap() {
                if k.ends_with("initializer")
                    || k.ends_with("regularizer")
                    || k.ends_with("constraint")
                {
                    input[k] = if v.is_null() {
                        Value::Null
                    } else {
                        serialized(k, v)
                    };
                }
            }
            if let Some(p) = check["dtype_policy"].as_str() {
                input["dtype"] = json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": p}, "registered_name": null});
            }
        }
        let c = GruConfig::from_keras_json(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = c.to_keras_json();
        // What Keras built, key by key.
        for (k, want) in check.as_object().unwrap() {
            match k.as_str() {
                "activation" | "recurrent_activation" => assert_eq!(&out[k], want, "{name}.{k}"),
                "implementation" => {
                    let got = match c.effective_implementation() {
                        Implementation::One => 1,
                        Implementation::Two => 2,
                    };
                    assert_eq!(json!(got), *want, "{name}.{k}");
                }
                "use_cudnn" => {
                    let got = match c.use_cudnn {
                        UseCudnn::Auto => json!("auto"),
                        UseCudnn::Force => json!(true),
                        UseCudnn::Never => json!(false),
                    };
                    assert_eq!(got, *want, "{name}.{k}");
                }
                "dtype_policy" => assert_eq!(json!(c.dtype.name), *want, "{name}.{k}"),
                _ if want.is_null() => assert!(out[k].is_null(), "{name}.{k}"),
                _ => {
                    assert_eq!(out[k]["class_name"], want[0], "{name}.{k}");
                    assert_eq!(out[k]["config"], want[1], "{name}.{k}");
                }
            }
        }
        // What get_config gives back afterwards.
        if probe["roundtrip_get_config_equal_input"].as_bool() == Some(true) {
            assert_eq!(out, input, "{name}: round trip");
        }
        if let Some(diff) = probe.get("diff_keys") {
            for (k, d) in diff.as_object().unwrap() {
                if d["out"].is_null() {
                    assert!(
                        out.get(k).is_none() || out[k].is_null(),
                        "{name}.{k} absent"
                    );
                } else {
                    assert_eq!(out[k], d["out"], "{name}.{k}");
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, probes.as_object().unwrap().len());
    assert!(checked >= 20);
}

#[test]
fn every_golden_case_config_parses_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let case: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        let c = GruConfig::from_keras_json(&case["config"]).unwrap();
        assert_eq!(c.to_keras_json(), case["config"], "{}", case["name"]);
        n += 1;
    }
    assert_eq!(n, 57);
}

#[test]
fn unknown_key_and_unknown_activation_are_typed_errors() {
    let err = GruConfig::from_keras_json(&json!({"units": 3, "frobnicate": 1})).unwrap_err();
    assert_eq!(
        err,
        GruError::UnknownConfigKey {
            key: "frobnicate".into()
        }
    );
    let err =
        GruConfig::from_keras_json(&json!({"units": 3, "activation": "softmaxx"})).unwrap_err();
    match err {
        GruError::UnknownIdentifier { kind, key, got } => {
            assert_eq!((kind, key.as_str()), ("activation", "activation"));
            assert!(got.contains("softmaxx"));
        }
        other => panic!("{other:?}"),
    }
    // Softmax is a Keras activation but not elementwise: not usable as a gate activation.
    assert!(GruConfig::from_keras_json(&json!({"units": 3, "activation": "softmax"})).is_err());
}
