//! A deterministic mutation test of everything that reads outside data: 2,420 mutated
//! `.keras` archives (raw bytes, and members mutated then re-zipped), `.weights.h5` files,
//! legacy `.h5` models and weights files, functional graph configs,
//! safetensors state_dicts, `.onnx` models and GRU config dicts, from fixed seeds, and 400
//! mutated configs of the convolutional models and 200 random CTC inputs. Each must
//! load (and what loads must run) or return a typed error; none may panic (a panic fails the
//! test, naming the mutation).
//! A config that parses builds a layer and runs a call. The coverage-guided version of this
//! is the cargo-fuzz harness in `fuzz/`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasModel, ModelCall};
use candle_gru::candle::io::torch::TorchGru;
use candle_gru::{CallOptions, Gru, GruConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const MODELS: &str = "tests/data/models";
const KERAS: [&str; 4] = [
    "stacked_gru_dense",
    "bidirectional_concat_seq",
    "reset_before_go_backwards",
    "sequential_masking",
];
const TORCH: [&str; 2] = ["torch_gru_1layer", "torch_gru_2layer_bidir"];

/// One random change to `b`: bit flips, a run of special bytes, an extreme little-endian
/// word (sizes and dims in binary headers), a truncation, a duplicated or inserted chunk.
fn mutate(b: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut v = b.to_vec();
    if v.is_empty() {
        return vec![rng.random()];
    }
    let at = rng.random_range(0..v.len());
    match rng.random_range(0..6) {
        0 => {
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => {
            let byte = [0x00, 0xff, 0x7f, 0x80, rng.random()][rng.random_range(0..5)];
            let end = (at + rng.random_range(1..9)).min(v.len());
            v[at..end].fill(byte);
        }
        2 => {
            let words: [u64; 6] = [
                u64::MAX,
                i64::MAX as u64,
                u32::MAX as u64,
                1 << 40,
                0,
                1 << 31,
            ];
            let w = words[rng.random_range(0..words.len())].to_le_bytes();
            let n = if rng.random() { 8 } else { 4 };
            let at = at.min(v.len().saturating_sub(n)) & !(n - 1);
            let end = (at + n).min(v.len());
            v[at..end].copy_from_slice(&w[..end - at]);
        }
        3 => v.truncate(at),
        4 => {
            let end = (at + rng.random_range(1..64)).min(v.len());
            let chunk = v[at..end].to_vec();
            v.splice(at..at, chunk);
        }
        _ => {
            let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            v.splice(at..at, extra);
        }
    }
    v
}

/// Values that break parsers: extremes, wrong types, names of the wrong kind.
fn nasty(rng: &mut StdRng) -> Value {
    let pool = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1e308),
        json!(-1e308),
        json!(0.5),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(9223372036854775807u64),
        json!(""),
        json!("nan"),
        json!("relu"),
        json!("glorot_uniform"),
        json!([]),
        json!([1, 2]),
        json!({}),
        json!({"class_name": "X", "config": {}}),
        json!({"class_name": "MaxNorm", "config": {"max_value": -3}}),
        json!({"class_name": "L1", "config": {"l1": 1e300}}),
        json!({"class_name": "VarianceScaling", "config": {"scale": -1}}),
        json!("\u{1d518}"),
    ];
    pool[rng.random_range(0..pool.len())].clone()
}

/// Replaces one value somewhere inside `v` (or adds a key) with a nasty one.
fn mutate_json(v: &mut Value, rng: &mut StdRng) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.random_range(0..4) != 0 => {
            let k = m
                .keys()
                .nth(rng.random_range(0..m.len()))
                .cloned()
                .unwrap_or_default();
            let child = m.get_mut(&k).expect("key just listed");
            if child.is_object() || child.is_array() {
                mutate_json(child, rng)
            } else {
                *child = nasty(rng)
            }
        }
        Value::Object(m) => {
            let keys = [
                "units",
                "activation",
                "dropout",
                "seed",
                "dtype",
                "bogus",
                "use_cudnn",
            ];
            m.insert(keys[rng.random_range(0..keys.len())].into(), nasty(rng));
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            mutate_json(&mut a[i], rng)
        }
        other => *other = nasty(rng),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-gru-mutation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `f` and fails the test, naming `what`, if it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: panicked: {msg}");
        }
    }
}

fn members(keras: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(keras).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().unwrap().to_string(), b)
        })
        .collect()
}

fn rezip(path: &Path, members: &[(String, Vec<u8>)], deflate: bool) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, b) in members {
        z.start_file(name.as_str(), opts).unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn mutated_keras_archives_load_or_fail_typed() {
    let mut rng = StdRng::seed_from_u64(0x6b657261);
    let (mut loaded, mut failed) = (0, 0);
    for name in KERAS {
        let original = PathBuf::from(MODELS).join(format!("{name}.keras"));
        let bytes = std::fs::read(&original).unwrap();
        let parts = members(&original);
        for k in 0..100 {
            let path = scratch(&format!("{name}-{k}.keras"));
            if k % 2 == 0 {
                std::fs::write(&path, mutate(&bytes, &mut rng)).unwrap();
            } else {
                let mut parts = parts.clone();
                let i = rng.random_range(0..parts.len());
                parts[i].1 = match (parts[i].0.ends_with(".json"), rng.random::<bool>()) {
                    (true, true) => {
                        let mut v: Value = serde_json::from_slice(&parts[i].1).unwrap();
                        mutate_json(&mut v, &mut rng);
                        serde_json::to_vec(&v).unwrap()
                    }
                    _ => mutate(&parts[i].1, &mut rng),
                };
                rezip(&path, &parts, rng.random());
            }
            let what = format!("{name} mutation {k}");
            match no_panic(&what, || KerasModel::load(&path, DType::F32, &Device::Cpu)) {
                Ok(_) => loaded += 1,
                Err(_) => failed += 1,
            }
        }
    }
    println!("mutated .keras: {loaded} loaded, {failed} typed errors");
    assert!(failed > 0 && loaded > 0 && loaded + failed == 400);
}

#[test]
fn mutated_weights_h5_and_safetensors_load_or_fail_typed() {
    let mut rng = StdRng::seed_from_u64(0x68356835);
    let mut counts = [0usize; 2];
    for name in KERAS {
        let config =
            KerasModel::archive_config(&PathBuf::from(MODELS).join(format!("{name}.keras")))
                .unwrap();
        let bytes =
            std::fs::read(PathBuf::from(MODELS).join(format!("{name}.weights.h5"))).unwrap();
        for k in 0..60 {
            let path = scratch(&format!("{name}-{k}.weights.h5"));
            std::fs::write(&path, mutate(&bytes, &mut rng)).unwrap();
            let r = no_panic(&format!("{name}.weights.h5 mutation {k}"), || {
                KerasModel::load_weights_h5(&config, &path, DType::F32, &Device::Cpu)
            });
            counts[r.is_err() as usize] += 1;
        }
    }
    for name in TORCH {
        let bytes =
            std::fs::read(PathBuf::from(MODELS).join(format!("{name}.safetensors"))).unwrap();
        for k in 0..60 {
            let path = scratch(&format!("{name}-{k}.safetensors"));
            std::fs::write(&path, mutate(&bytes, &mut rng)).unwrap();
            let r = no_panic(&format!("{name}.safetensors mutation {k}"), || {
                TorchGru::load(&path, DType::F32, &Device::Cpu)
            });
            counts[r.is_err() as usize] += 1;
        }
    }
    println!(
        "mutated weights: {} loaded, {} typed errors",
        counts[0], counts[1]
    );
    assert!(counts[1] > 0 && counts[0] > 0 && counts[0] + counts[1] == 360);
}

/// Legacy `.h5` models (Keras 2 and Keras 3's legacy writer) and Keras 2 weights-only files.
const LEGACY: [&str; 6] = [
    "keras2_sequential_masking",
    "keras2_embedding_bigru",
    "keras2_conv_norm_gru",
    "keras2_first_layer_input_shape",
    "keras3_legacy_h5",
    "keras2_siamese_nested",
];

#[test]
fn mutated_legacy_h5_models_load_and_run_or_fail_typed() {
    let mut rng = StdRng::seed_from_u64(0x6c656761);
    let mut counts = [0usize; 2];
    let floats = Tensor::zeros((2, 7, 5), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::ones((2, 7), DType::I64, &Device::Cpu).unwrap();
    for name in LEGACY {
        let model = PathBuf::from(MODELS).join(format!("{name}.h5"));
        let config = KerasModel::model_config(&model).unwrap();
        let x = match name {
            "keras2_embedding_bigru" => vec![ids.clone()],
            "keras2_siamese_nested" => vec![ids.clone(), ids.clone()],
            _ => vec![floats.clone()],
        };
        let weights = PathBuf::from(MODELS).join(format!("{name}.legacy_weights.h5"));
        let files = [Some(model), weights.exists().then_some(weights)];
        for (kind, original) in files.iter().enumerate() {
            let Some(original) = original else { continue };
            let bytes = std::fs::read(original).unwrap();
            for k in 0..40 {
                let path = scratch(&format!("{name}-{kind}-{k}.h5"));
                std::fs::write(&path, mutate(&bytes, &mut rng)).unwrap();
                let what = format!("{} mutation {k}", original.display());
                let r = no_panic(&what, || {
                    let m = match kind {
                        0 => KerasModel::load(&path, DType::F32, &Device::Cpu),
                        _ => KerasModel::load_weights_h5(&config, &path, DType::F32, &Device::Cpu),
                    }?;
                    m.call_inputs(&x, ModelCall::default())
                });
                counts[r.is_err() as usize] += 1;
            }
        }
    }
    println!(
        "mutated legacy files: {} ran, {} typed errors",
        counts[0], counts[1]
    );
    assert!(counts[1] > 0 && counts[0] > 0 && counts[0] + counts[1] == 440);
}

/// Functional graphs with merges and recorded mask operations.
const GRAPHS: [&str; 10] = [
    "residual_gru_concat",
    "gru_state_merges_two_outputs",
    "embedding_two_grus_add",
    "gru_self_attention",
    "shared_dense_and_gru",
    "siamese_nested_encoder",
    "gru_multi_head_self_attention",
    "dot_attention_decoder",
    "rnn_stacked_gru_cells",
    "masked_merges",
];

#[test]
fn mutated_graph_configs_build_and_run_or_fail_typed() {
    let mut rng = StdRng::seed_from_u64(0x67726170);
    let mut counts = [0usize; 2];
    let floats = Tensor::zeros((2, 7, 5), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::ones((2, 7), DType::I64, &Device::Cpu).unwrap();
    for name in GRAPHS {
        let original = PathBuf::from(MODELS).join(format!("{name}.keras"));
        let config = KerasModel::archive_config(&original).unwrap();
        let weights = PathBuf::from(MODELS).join(format!("{name}.weights.h5"));
        let x = match name {
            "embedding_two_grus_add" | "gru_self_attention" | "gru_multi_head_self_attention" => {
                vec![ids.clone()]
            }
            "siamese_nested_encoder" => vec![ids.clone(), ids.clone()],
            "dot_attention_decoder" => vec![
                floats.clone(),
                Tensor::ones((2, 4, 3), DType::F32, &Device::Cpu).unwrap(),
            ],
            "masked_merges" => vec![floats.narrow(2, 0, 4).unwrap(); 2],
            _ => vec![floats.clone()],
        };
        for k in 0..100 {
            let mut c = config.clone();
            for _ in 0..rng.random_range(1..4) {
                mutate_json(&mut c, &mut rng);
            }
            let r = no_panic(&format!("{name} config mutation {k}"), || {
                let m = KerasModel::load_weights_h5(&c, &weights, DType::F32, &Device::Cpu)?;
                m.call_inputs(&x, ModelCall::default())
            });
            counts[r.is_err() as usize] += 1;
        }
    }
    println!(
        "mutated graph configs: {} ran, {} typed errors",
        counts[0], counts[1]
    );
    assert!(counts[1] > 0 && counts[0] > 0 && counts[0] + counts[1] == 1000);
}

#[test]
fn mutated_onnx_models_load_and_run_or_fail_typed() {
    use candle_gru::candle::io::onnx::OnnxModel;
    use candle_gru::candle::Limits;
    let mut rng = StdRng::seed_from_u64(0x6f6e6e78);
    let mut counts = [0usize; 2];
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/data/onnx")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for k in 0..30 {
            let m = mutate(&bytes, &mut rng);
            let what = format!("{} mutation {k}", file.display());
            let r = no_panic(&what, || {
                let model = OnnxModel::from_bytes(
                    &m,
                    "mutated.onnx",
                    DType::F32,
                    &Device::Cpu,
                    &Limits::default(),
                )?;
                // What loads must run.
                for g in &model.grus {
                    let x = Tensor::ones((3, 2, g.input_size), DType::F32, &Device::Cpu)?;
                    let x = match g.layout {
                        candle_gru::candle::io::onnx::Layout::SeqMajor => x,
                        candle_gru::candle::io::onnx::Layout::BatchMajor => {
                            x.transpose(0, 1)?.contiguous()?
                        }
                    };
                    g.forward(&x, None, None)?;
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            });
            counts[r.is_err() as usize] += 1;
        }
    }
    println!(
        "mutated .onnx: {} loaded and ran, {} typed errors",
        counts[0], counts[1]
    );
    assert!(counts[0] > 0 && counts[1] > 0 && counts[0] + counts[1] == 30 * files.len());
}

#[test]
fn mutated_configs_parse_build_and_call_or_fail_typed() {
    let mut rng = StdRng::seed_from_u64(0x636f6e66);
    let base: Vec<Value> = [
        "default_gru4.json",
        "custom.json",
        "string_identifiers.json",
    ]
    .iter()
    .map(|f| {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("tests/data/configs/{f}")).unwrap(),
        )
        .unwrap();
        v["get_config"].clone()
    })
    .collect();
    let (mut built, mut refused) = (0, 0);
    for k in 0..600 {
        let mut v = base[k % base.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            mutate_json(&mut v, &mut rng);
        }
        let what = format!("config mutation {k}: {v}");
        let ran = no_panic(&what, || -> Result<(), Box<dyn std::error::Error>> {
            let cfg = GruConfig::from_keras_json(&v)?;
            let back = GruConfig::from_keras_json(&cfg.to_keras_json())?;
            assert_eq!(
                back.to_keras_json(),
                cfg.to_keras_json(),
                "round trip changed the config"
            );
            if cfg.units > 64 {
                return Ok(());
            }
            let g: Gru = common::initialized(cfg, 3, DType::F32);
            let x = Tensor::ones((2, 4, 3), DType::F32, &Device::Cpu)?;
            let mask = Tensor::new(&[[1u8, 1, 0, 0], [0, 1, 1, 1]], &Device::Cpu)?;
            let opts = CallOptions {
                mask: Some(&mask),
                training: k % 2 == 0,
                ..Default::default()
            };
            g.call(&x, opts)?;
            Ok(())
        });
        match ran {
            Ok(()) => built += 1,
            Err(_) => refused += 1,
        }
    }
    println!("mutated configs: {built} built and called, {refused} typed errors");
    assert!(built > 0 && refused > 0);
}

#[test]
fn mutated_cell_configs_and_torch_cells_load_and_step_or_fail_typed() {
    use candle_gru::candle::io::torch::TorchLoad;
    use candle_gru::{GruCell, GruCellConfig};
    let mut rng = StdRng::seed_from_u64(0x63656c6c);
    let configs: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/cell/configs.json").unwrap())
            .unwrap();
    let base: Vec<Value> = configs["configs"]
        .as_object()
        .unwrap()
        .values()
        .cloned()
        .collect();
    let (mut stepped, mut refused) = (0, 0);
    for k in 0..400 {
        let mut v = base[k % base.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            mutate_json(&mut v, &mut rng);
        }
        let ran = no_panic(&format!("cell config mutation {k}: {v}"), || {
            let cfg = GruCellConfig::from_keras_json(&v)?;
            let back = GruCellConfig::from_keras_json(&cfg.to_keras_json())?;
            assert_eq!(back.to_keras_json(), cfg.to_keras_json(), "round trip");
            if cfg.units > 64 {
                return Ok::<(), Box<dyn std::error::Error>>(());
            }
            let vm = candle_nn::VarMap::new();
            let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let cell = GruCell::new(cfg, 3, vb)?;
            let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
            let h = cell.call(&x, &cell.initial_state(2)?, k % 2 == 0)?;
            cell.call(&x, &h, k % 2 == 0)?;
            Ok(())
        });
        match ran {
            Ok(()) => stepped += 1,
            Err(_) => refused += 1,
        }
    }
    println!("mutated cell configs: {stepped} stepped, {refused} typed errors");
    assert!(stepped > 0 && refused > 0);
    let bytes = std::fs::read("tests/data/torch/cell_decoder.safetensors").unwrap();
    let mut counts = [0usize; 2];
    for k in 0..60 {
        let path = scratch(&format!("cell_decoder-{k}.safetensors"));
        std::fs::write(&path, mutate(&bytes, &mut rng)).unwrap();
        let r = no_panic(&format!("cell_decoder.safetensors mutation {k}"), || {
            GruCell::load_torch(
                &path,
                DType::F32,
                &Device::Cpu,
                TorchLoad::prefixed("cell."),
            )
        });
        counts[r.is_err() as usize] += 1;
    }
    println!(
        "mutated torch cells: {} loaded, {} typed errors",
        counts[0], counts[1]
    );
    assert!(counts[1] > 0);
}

/// The convolutional models (Conv1D/2D, 1-D and 2-D pooling, Reshape with -1,
/// TimeDistributed over a CNN): mutated configs build and run on their case inputs (and
/// on inputs of another size) or fail typed; training calls too. CTC on random lengths and
/// labels runs or fails typed.
#[test]
fn mutated_conv_model_configs_and_ctc_inputs_run_or_fail_typed() {
    let mut rng = StdRng::seed_from_u64(0x636f6e76);
    let mut counts = [0usize; 2];
    for name in [
        "deepspeech2_conv2d_bigru",
        "crnn_ocr_conv2d_pooling",
        "conv2d_variants_gru",
        "pooling1d_training",
        "time_distributed_conv2d_frames",
    ] {
        let original = PathBuf::from(MODELS).join(format!("{name}.keras"));
        let config = KerasModel::archive_config(&original).unwrap();
        let weights = PathBuf::from(MODELS).join(format!("{name}.weights.h5"));
        let case: Value = serde_json::from_str(
            &std::fs::read_to_string(PathBuf::from(MODELS).join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let x = gru_support::golden::models::case_inputs(&case).unwrap();
        let shorter = x[0].narrow(1, 0, x[0].dim(1).unwrap() - 1).unwrap();
        for k in 0..80 {
            let mut c = config.clone();
            for _ in 0..rng.random_range(1..4) {
                mutate_json(&mut c, &mut rng);
            }
            let training = k % 2 == 1;
            let r = no_panic(&format!("{name} config mutation {k}"), || {
                let m = KerasModel::load_weights_h5(&c, &weights, DType::F32, &Device::Cpu)?;
                let call = ModelCall {
                    mask: None,
                    training,
                };
                m.call_inputs(&x, call)?;
                m.call_inputs(std::slice::from_ref(&shorter), call)
            });
            counts[r.is_err() as usize] += 1;
        }
    }
    println!(
        "mutated conv model configs: {} ran, {} typed errors",
        counts[0], counts[1]
    );
    assert!(counts[1] > 0 && counts[0] > 0 && counts[0] + counts[1] == 400);
    let mut ctc = [0usize; 2];
    for k in 0..200 {
        // Mostly well-formed, with one thing off now and then.
        let off = |rng: &mut StdRng| rng.random_range(0..8) == 0;
        let (b, t, c) = (
            rng.random_range(0..4),
            rng.random_range(0..7),
            rng.random_range(0..6),
        );
        let logits = Tensor::randn(0f32, 1.0, (b, t, c), &Device::Cpu).unwrap();
        let width = rng.random_range(0..4);
        let top = if off(&mut rng) {
            c as i64 + 2
        } else {
            c as i64
        };
        let labels: Vec<i64> = (0..b * width)
            .map(|_| rng.random_range(-1..top.max(1)))
            .collect();
        let target = Tensor::from_vec(labels, (b, width), &Device::Cpu).unwrap();
        let lens = |n: usize, low: usize, rng: &mut StdRng| -> Vec<usize> {
            let count = if off(rng) { rng.random_range(0..5) } else { b };
            (0..count)
                .map(|_| rng.random_range(low.min(n)..=n))
                .collect()
        };
        let (tl, ol) = (lens(width, 0, &mut rng), lens(t, 1, &mut rng));
        let blank = if off(&mut rng) { c + 1 } else { 0 };
        let r = no_panic(&format!("ctc inputs {k}"), || {
            let loss = candle_gru::candle::ctc::ctc_loss(&target, &logits, &tl, &ol, blank)?;
            candle_gru::candle::ctc::ctc_greedy_decode(&logits, &ol, true, blank)?;
            Ok::<_, candle_gru::candle::Error>(loss)
        });
        ctc[r.is_err() as usize] += 1;
    }
    println!("random ctc inputs: {} ran, {} typed errors", ctc[0], ctc[1]);
    assert!(ctc[0] > 0 && ctc[1] > 0);
}
