//! Fine-tunes Keras models loaded from tests/data/models for a few steps and writes them back
//! in Keras 3's formats, for Keras itself to check (`scripts/check_keras_export.py`):
//! `cargo run --release --example keras_export -- OUT_DIR`.
//!
//! For each model: `NAME.keras` (`KerasModel::save`), `NAME.weights.h5`
//! (`KerasModel::save_weights_h5`) and `NAME.json` with the case's inputs and the outputs
//! this crate computes with the tuned weights (inference). Each written archive is loaded
//! back here first and must give the same outputs.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::keras::{KerasLayer, KerasModel, ModelCall};
use candle_gru::candle::{Bidirectional, MergeMode};
use candle_gru::{Gru, GruConfig};
use candle_nn::{Optimizer, VarBuilder, VarMap, SGD};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Models from Keras 3 (`.keras`), Keras 2 and Keras 3's legacy writer (`.h5`).
const MODELS: [&str; 32] = [
    "embedding_bigru_layernorm_average_pool.keras",
    "siamese_nested_encoder.keras",
    "shared_dense_and_gru.keras",
    "nested_functional_encoder.keras",
    "gru_multi_head_self_attention.keras",
    "gru_multi_head_decoder.keras",
    "normalization_adapted_gru.keras",
    "rnn_gru_cells.keras",
    "keras2_rnn_gru_cells.h5",
    "rnn_stacked_gru_cells.keras",
    "keras2_rnn_stacked_gru_cells.h5",
    "dot_attention_decoder.keras",
    "masked_merges.keras",
    "time_distributed_encoders.keras",
    "time_distributed_cnn_frames.keras",
    "keras2_time_distributed_encoders.h5",
    "keras2_dot_attention_decoder.h5",
    "residual_gru_concat.keras",
    "gru_self_attention.keras",
    "masking_batch_norm_gru.keras",
    "seq2seq_repeat_vector.keras",
    "conv1d_pooling_gru.keras",
    "deepspeech2_conv2d_bigru.keras",
    "crnn_ocr_conv2d_pooling.keras",
    "video_classifier_mask_input.keras",
    "training_regularized.keras",
    "keras2_embedding_bigru.h5",
    "keras2_conv_norm_gru.h5",
    "keras3_legacy_h5.h5",
    "keras2_siamese_nested.h5",
    "keras2_nested_functional.h5",
    "keras2_video_classifier_mask_input.h5",
];

fn call(m: &KerasModel, x: &[Tensor], training: bool) -> anyhow::Result<Tensor> {
    let out = m.call_inputs(
        x,
        ModelCall {
            mask: None,
            training,
        },
    )?;
    out.outputs.into_iter().next().context("an output")
}

fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn export(src: &Path, out: &Path) -> anyhow::Result<String> {
    let file = src
        .file_name()
        .context("name")?
        .to_string_lossy()
        .to_string();
    let name = file
        .trim_end_matches(".keras")
        .trim_end_matches(".h5")
        .to_string();
    let case: Value = serde_json::from_str(&std::fs::read_to_string(
        src.with_file_name(format!("{name}.json")),
    )?)?;
    let x = gru_support::golden::models::case_inputs(&case)?;
    let varmap = VarMap::new();
    let model = KerasModel::load_trainable(src, DType::F32, &Device::Cpu, &varmap)?;
    let before = call(&model, &x, false)?;
    // A few steps in training mode: the weights move, and so do BatchNormalization's moving
    // statistics.
    let mut sgd = SGD::new(varmap.all_vars(), 0.2)?;
    for _ in 0..3 {
        let loss = call(&model, &x, true)?.sqr()?.mean_all()?;
        sgd.backward_step(&loss)?;
    }
    let after = call(&model, &x, false)?;
    let moved = max_diff(&before, &after)?;
    if moved < 1e-4 {
        bail!("{name}: training moved the outputs by {moved:.1e} only");
    }
    let record = json!({
        "input_dtype": case["input_dtype"],
        "inputs": case["inputs"],
        "extra_inputs": case["extra_inputs"],
        "extra_input_dtypes": case["extra_input_dtypes"],
    });
    write_and_check(&name, &model, &x, after, record, out)?;
    Ok(format!(
        "{name}: tuned (outputs moved {moved:.1e}), written and read back"
    ))
}

/// Writes `NAME.keras`, `NAME.weights.h5` and `NAME.json` (`record` plus the name, the files
/// and the expected first output `after`), after reading both files back here to the same
/// output.
fn write_and_check(
    name: &str,
    model: &KerasModel,
    x: &[Tensor],
    after: Tensor,
    mut record: Value,
    out: &Path,
) -> anyhow::Result<()> {
    let x = x.to_vec();
    let keras = out.join(format!("{name}.keras"));
    let weights = out.join(format!("{name}.weights.h5"));
    model.save(&keras)?;
    model.save_weights_h5(&weights)?;
    // Read back here: the archive, and the weights file with the archive's config.
    let again = call(
        &KerasModel::load(&keras, DType::F32, &Device::Cpu)?,
        &x,
        false,
    )?;
    let config = KerasModel::model_config(&keras)?;
    let h5 = KerasModel::load_weights_h5(&config, &weights, DType::F32, &Device::Cpu)?;
    let again_h5 = call(&h5, &x, false)?;
    let (d1, d2) = (max_diff(&after, &again)?, max_diff(&after, &again_h5)?);
    if d1 != 0.0 || d2 != 0.0 {
        bail!("{name}: reloaded outputs differ by {d1:.1e} (.keras) and {d2:.1e} (.weights.h5)");
    }
    let expected: Vec<f64> = after.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    record["name"] = json!(name);
    record["files"] = json!([format!("{name}.keras"), format!("{name}.weights.h5")]);
    record["expected"] = json!({"shape": after.dims(), "data": expected});
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string(&record)?,
    )?;
    Ok(())
}

/// Layers built in Rust, trained a few steps, written with `KerasModel::from_layers`: a
/// Bidirectional GRU into a go_backwards GRU with its state; a reset-before GRU into a
/// Bidirectional with `merge_mode=None`; an Embedding(mask_zero) classifier over padded
/// token ids (a Bidirectional GRU, a Dense on every step, a GRU, a Dense softmax).
fn export_built(out: &Path) -> anyhow::Result<Vec<String>> {
    use candle_core::Module;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let base = GruConfig::from_keras_str(r#"{"units": 4, "return_sequences": true}"#)?;
    let bi = Bidirectional::new(base.clone(), 5, MergeMode::Concat, vb.pp("bi"))?;
    let state = r#"{"units": 6, "go_backwards": true, "return_state": true}"#;
    let gru = Gru::new(GruConfig::from_keras_str(state)?, 8, vb.pp("gru"))?;
    let mut before = base.clone();
    (before.units, before.reset_after, before.name) = (3, false, "before".into());
    let before = Gru::new(before, 5, vb.pp("before"))?;
    let none = Bidirectional::new(base, 3, MergeMode::None, vb.pp("none"))?;
    let table = candle_nn::embedding(10, 5, vb.pp("embedding"))?;
    let seq = GruConfig::from_keras_str(r#"{"units": 4, "return_sequences": true}"#)?;
    let words = Bidirectional::new(seq, 5, MergeMode::Sum, vb.pp("words"))?;
    let per_step = candle_nn::linear(4, 4, vb.pp("per_step"))?;
    let encoder = Gru::new(GruConfig::new(4), 4, vb.pp("encoder"))?;
    let head = candle_nn::linear(4, 3, vb.pp("head"))?;

    let x = Tensor::randn(0f32, 1.0, (3, 7, 5), &dev)?;
    let ids: Vec<u32> = (0..21u32)
        .map(|k| {
            if k % 7 >= 7 - k / 7 * 2 {
                0
            } else {
                1 + k * 5 % 9
            }
        })
        .collect();
    let ids = Tensor::from_vec(ids, (3, 7), &dev)?;
    let mask = ids.ne(0u32)?;
    let mut sgd = SGD::new(varmap.all_vars(), 0.2)?;
    let none_opts = Default::default();
    for _ in 0..3 {
        let y = gru.call(&bi.call(&x, None, None, true)?.outputs[0], none_opts)?;
        let z = none.call(&before.call(&x, none_opts)?.output, None, None, true)?;
        let opts = candle_gru::CallOptions {
            mask: Some(&mask),
            ..none_opts
        };
        let w = words.call(&table.forward(&ids)?, Some(&mask), None, true)?;
        let w = per_step.forward(&w.outputs[0])?.relu()?;
        let h = encoder.call(&w, opts)?.output;
        let p = candle_nn::ops::softmax_last_dim(&head.forward(&h)?)?;
        let loss = (y.output.sqr()?.mean_all()? + z.outputs[0].sqr()?.mean_all()?)?;
        sgd.backward_step(&(loss + p.sqr()?.mean_all()?)?)?;
    }
    let classifier = [
        KerasLayer::Embedding {
            table: &table,
            mask_zero: true,
        },
        KerasLayer::Bidirectional(&words),
        KerasLayer::Dense {
            linear: &per_step,
            activation: "relu",
        },
        KerasLayer::Gru(&encoder),
        KerasLayer::Dense {
            linear: &head,
            activation: "softmax",
        },
    ];
    let chains = [
        (
            "built_bidirectional_gru",
            vec![KerasLayer::Bidirectional(&bi), KerasLayer::Gru(&gru)],
            &x,
        ),
        (
            "built_reset_before_no_merge",
            vec![KerasLayer::Gru(&before), KerasLayer::Bidirectional(&none)],
            &x,
        ),
        ("built_embedding_classifier", classifier.to_vec(), &ids),
    ];
    let mut lines = Vec::new();
    for (name, chain, input) in chains {
        let model = KerasModel::from_layers(&chain)?;
        let input = input.to_dtype(match input.dtype() {
            DType::U32 => DType::I64,
            d => d,
        })?;
        let after = call(&model, std::slice::from_ref(&input), false)?;
        // Every output (states too), for the Keras check.
        let mut all = Vec::new();
        for y in KerasModel::call(&model, &input, None)? {
            let data: Vec<f64> = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
            all.push(json!({"shape": y.dims(), "data": data}));
        }
        let (dtype, values) = match input.dtype() {
            DType::I64 => ("int32", json!(input.to_vec2::<i64>()?)),
            _ => ("float32", json!(input.to_vec3::<f32>()?)),
        };
        let record = json!({"input_dtype": dtype, "inputs": values, "expected_outputs": all});
        write_and_check(
            name,
            &model,
            std::slice::from_ref(&input),
            after,
            record,
            out,
        )?;
        lines.push(format!(
            "{name}: built in Rust, trained, written and read back"
        ));
    }
    Ok(lines)
}

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/keras-export".into()),
    );
    std::fs::create_dir_all(&out)?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models");
    for m in MODELS {
        println!("{}", export(&data.join(m), &out)?);
    }
    for line in export_built(&out)? {
        println!("{line}");
    }
    Ok(())
}
