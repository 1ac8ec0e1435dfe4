//! Bad sizes and values that once panicked, aborted or changed silently: each is now a
//! typed error (or a faithful round trip), and a stateful layer's concurrent calls lose no
//! update.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::KerasModel;
use candle_gru::candle::{Error, Limits};
use candle_gru::core::{Axis, Constraint, Initializer, Num, Regularizer};
use candle_gru::{CallOptions, Gru, GruConfig, GruError};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

fn gru_err<T: std::fmt::Debug>(r: Result<T, Error>) -> GruError {
    match r {
        Err(Error::Gru(g)) => g,
        other => panic!("expected a typed GruError, got {other:?}"),
    }
}

fn too_large<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match gru_err(r) {
        e @ GruError::TooLarge { .. } => e.to_string(),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn bad_constraint_bounds_are_rejected_when_read_and_when_applied() {
    let cfg = |c: serde_json::Value| {
        GruConfig::from_keras_json(&json!({"units": 2, "kernel_constraint": c}))
    };
    let e = cfg(json!({"class_name": "MaxNorm", "config": {"max_value": -1.0, "axis": 0}}))
        .unwrap_err();
    assert!(e.to_string().contains("max_value >= 0"), "{e}");
    let e =
        cfg(json!({"class_name": "MinMaxNorm", "config": {"min_value": 2.0, "max_value": 1.0}}))
            .unwrap_err();
    assert!(e.to_string().contains("min_value <= max_value"), "{e}");
    assert!(cfg(
        json!({"class_name": "MinMaxNorm", "config": {"min_value": 0.5, "max_value": 1.0}})
    )
    .is_ok());
    // Built in code, the same bounds fail when applied, instead of panicking in clamp.
    let mut w = vec![1.0, 2.0, 3.0, 4.0];
    let bad = Constraint::MaxNorm {
        max_value: Num::Float(-2.0),
        axis: Axis::One(0),
    };
    assert!(bad.apply("kernel", &[2, 2], &mut w).is_err());
    let nan = Constraint::MinMaxNorm {
        min_value: Num::Float(f64::NAN),
        max_value: Num::Float(1.0),
        rate: Num::Float(1.0),
        axis: Axis::One(0),
    };
    assert!(nan.apply("kernel", &[2, 2], &mut w).is_err());
    assert_eq!(
        w,
        vec![1.0, 2.0, 3.0, 4.0],
        "a rejected constraint changed the weights"
    );
}

#[test]
fn huge_units_are_a_typed_error_not_an_overflow() {
    for units in [u64::MAX, i64::MAX as u64, 1 << 62, 1 << 31] {
        let e = GruConfig::from_keras_json(&json!({ "units": units })).unwrap_err();
        assert!(
            matches!(e, GruError::InvalidConfig { ref key, .. } if key == "units"),
            "{units}: {e}"
        );
    }
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let e = gru_err(Gru::new(GruConfig::new(usize::MAX / 2), 3, vb));
    assert!(matches!(e, GruError::InvalidConfig { .. }), "{e}");
}

#[test]
fn layers_too_large_to_allocate_are_refused_before_allocating() {
    let vb = |vm: &VarMap| VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    let vm = VarMap::new();
    let e = too_large(Gru::new(GruConfig::new(4), 1 << 40, vb(&vm)));
    assert!(e.contains("Limits::max_weight_bytes"), "{e}");
    too_large(Gru::new(GruConfig::new(100_000_000), 8, vb(&vm)));
    too_large(Gru::new(GruConfig::new(1 << 20), 8, vb(&vm)));
    assert!(
        vm.all_vars().is_empty(),
        "a refused layer allocated variables"
    );
    // The limit is the caller's: lowered, a small layer is refused; raised, it passes.
    let tight = Limits {
        max_weight_bytes: 1000,
        ..Limits::default()
    };
    too_large(Gru::new_with_limits(
        GruConfig::new(16),
        16,
        vb(&vm),
        &tight,
    ));
    assert!(Gru::new_with_limits(GruConfig::new(16), 16, vb(&vm), &Limits::default()).is_ok());
    // An initializer asked for an absurd shape directly: a typed error, not an abort.
    let e = Initializer::glorot_uniform()
        .generate("kernel", &[1 << 40, 1 << 30])
        .unwrap_err();
    assert!(matches!(e, GruError::TooLarge { .. }), "{e}");
    let e = Initializer::glorot_uniform()
        .generate("kernel", &[usize::MAX, 3])
        .unwrap_err();
    assert!(matches!(e, GruError::TooLarge { .. }), "{e}");
}

#[test]
fn round_trips_keep_what_they_read_and_refuse_what_they_cannot_write() {
    let c = GruConfig::from_keras_json(&json!({
        "units": 2,
        "recurrent_initializer": {"class_name": "Identity", "config": {"gain": 2.5}},
    }))
    .unwrap();
    let back = GruConfig::from_keras_json(&c.to_keras_json()).unwrap();
    assert_eq!(
        back.recurrent_initializer,
        Initializer::Identity {
            gain: Num::Float(2.5)
        }
    );
    // The default gain is written as Keras writes it: no config at all.
    let d = GruConfig::from_keras_json(&json!({"units": 2, "recurrent_initializer": "identity"}))
        .unwrap();
    assert_eq!(
        d.to_keras_json()["recurrent_initializer"]["config"],
        json!({})
    );
    // Factors Keras keeps in float32: past its range they are refused, not written as null.
    for (class, arg) in [("L1", "l1"), ("OrthogonalRegularizer", "factor")] {
        let v =
            json!({"units": 2, "kernel_regularizer": {"class_name": class, "config": {arg: 1e39}}});
        let e = GruConfig::from_keras_json(&v).unwrap_err();
        assert!(e.to_string().contains("float32"), "{class}: {e}");
    }
    // L2 keeps a Python float: 1e39 is stored and written back as is.
    let v = json!({"units": 2, "kernel_regularizer": {"class_name": "L2", "config": {"l2": 1e39}}});
    let l2 = GruConfig::from_keras_json(&v).unwrap();
    assert_eq!(
        l2.to_keras_json()["kernel_regularizer"]["config"]["l2"],
        json!(1e39)
    );
    // A config built in code with an unstorable factor fails validation.
    let mut code = GruConfig::new(2);
    code.kernel_regularizer = Some(Regularizer::l1(1e300));
    assert!(code.validate().is_err());
}

/// A .keras archive with these members (deflated).
fn archive(name: &str, members: &[(&str, &[u8])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-gru-reliability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (m, bytes) in members {
        z.start_file(*m, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    path
}

/// Rewrites every recorded uncompressed size of `member` (local and central headers) to
/// `size`, as a deflate bomb would lie about it.
fn lie_about_size(path: &PathBuf, member: &str, size: u32) {
    let mut b = std::fs::read(path).unwrap();
    let name = member.as_bytes();
    for (sig, size_at, name_at) in [
        ([0x50, 0x4b, 0x03, 0x04], 22, 30),
        ([0x50, 0x4b, 0x01, 0x02], 24, 46),
    ] {
        let mut i = 0;
        while i + name_at + name.len() <= b.len() {
            if b[i..i + 4] == sig && &b[i + name_at..i + name_at + name.len()] == name {
                b[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
            }
            i += 1;
        }
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn archive_members_are_bounded_by_their_declared_size_and_the_limit() {
    let config = std::fs::read("tests/data/models/sequential_masking.json").unwrap();
    let model_config = serde_json::from_slice::<serde_json::Value>(&config).unwrap();
    let config_json = serde_json::to_vec(&model_config["config"]).unwrap();
    let zeros = vec![0u8; 64 << 20];
    // Honest sizes past a (lowered) limit: refused before inflating.
    let bomb = archive(
        "bomb.keras",
        &[("config.json", &config_json), ("model.weights.h5", &zeros)],
    );
    let small = Limits {
        max_member_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = too_large(KerasModel::load_with_limits(
        &bomb,
        DType::F32,
        &Device::Cpu,
        &small,
    ));
    assert!(e.contains("model.weights.h5"), "{e}");
    // A member that claims 1000 bytes and inflates to 64 MiB: stopped right past 1000.
    lie_about_size(&bomb, "model.weights.h5", 1000);
    let e = KerasModel::load(&bomb, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("inflates") || e.contains("cannot be read"),
        "{e}"
    );
}

#[test]
fn concurrent_calls_on_a_stateful_layer_lose_no_update() {
    // kernel and recurrent kernel zero, so each call maps the state h to c h + (1 - c) k
    // with c = sigmoid(b_z) and k = tanh(b_h): after n calls h = k (1 - c^n), which tells
    // n calls from n - 1 whatever their order.
    let (u, threads, per_thread) = (3usize, 8usize, 6usize);
    let mut cfg = GruConfig::new(u);
    cfg.stateful = true;
    let dev = Device::Cpu;
    let zeros = |r, c| Tensor::zeros((r, c), DType::F64, &dev).unwrap();
    let mut b = vec![0.0f64; 6 * u];
    b[..u].fill(2.2); // b_z: c = sigmoid(2.2) ~ 0.9
    b[2 * u..3 * u].fill(1.5); // b_h
    let bias = Tensor::from_vec(b, (2, 3 * u), &dev).unwrap();
    let g = Gru::from_weights(cfg, zeros(2, 3 * u), zeros(u, 3 * u), Some(bias)).unwrap();
    let x = Tensor::ones((1, 1, 2), DType::F64, &dev).unwrap();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    g.call(&x, CallOptions::default()).unwrap();
                }
            });
        }
    });
    let n = (threads * per_thread) as i32;
    let (c, k) = (1.0 / (1.0 + (-2.2f64).exp()), 1.5f64.tanh());
    let want = k * (1.0 - c.powi(n));
    let got = common::flat(&g.states().unwrap());
    for v in got {
        assert!(
            (v - want).abs() < 1e-12,
            "after {n} calls: {v}, expected {want} (one call: {})",
            k * (1.0 - c.powi(n - 1))
        );
    }
}
