//! Model-file cases (`tests/data/models`, from the real Keras 3.15.1, Keras 2 (tf_keras
//! 2.21.0) and PyTorch): load the
//! file, run the stored inputs, compare with the framework's outputs (f32, abs 1e-5 +
//! rel 1e-5).

use super::{compare, Array, F32_ABS, F32_REL};
use candle_core::{DType, Device, Tensor};
use gru_candle::io::keras::{KerasModel, ModelCall};
use gru_candle::io::torch::TorchGru;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One model case file (`NAME.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCase {
    /// Case name.
    pub name: String,
    /// `"keras"` or `"torch"`.
    pub kind: String,
    /// Files of the case (next to the JSON).
    pub files: Vec<String>,
    /// (batch, T, features), or token ids (batch, T) when `input_dtype` is "int32".
    pub inputs: Value,
    /// "int32" for token ids; float32 when absent.
    #[serde(default)]
    pub input_dtype: Option<String>,
    /// The model's inputs after the first, for models of several inputs.
    #[serde(default)]
    pub extra_inputs: Vec<Value>,
    /// The dtype of each extra input (`"int32"` or `"float32"`); `input_dtype` when absent.
    #[serde(default)]
    pub extra_input_dtypes: Vec<String>,
    /// (batch, T) booleans or null.
    #[serde(default)]
    pub mask: Value,
    /// torch: (num_layers * directions, batch, hidden).
    #[serde(default)]
    pub h0: Value,
    /// The outputs the framework computed.
    pub expected: Vec<Value>,
}

/// The result of one model case: one line per file it was run from.
#[derive(Debug, Clone)]
pub struct ModelReport {
    /// Case name.
    pub name: String,
    /// `(file, max abs err, failures)`.
    pub files: Vec<(String, f64, Vec<String>)>,
}

impl ModelReport {
    /// Whether every file of the case reproduced the expected outputs.
    pub fn passed(&self) -> bool {
        !self.files.is_empty() && self.files.iter().all(|(_, _, f)| f.is_empty())
    }

    /// One line per case: name, PASS/FAIL, the max error per file, then the failures.
    pub fn line(&self) -> String {
        let per: Vec<String> = self
            .files
            .iter()
            .map(|(f, e, _)| format!("{f} {e:.1e}"))
            .collect();
        let mut s = format!(
            "{:<30} {}  {}",
            self.name,
            if self.passed() { "PASS" } else { "FAIL" },
            per.join("  ")
        );
        for (f, _, fails) in &self.files {
            for x in fails {
                s.push_str(&format!("\n    {f}: {x}"));
            }
        }
        s
    }
}

/// The model inputs of a case JSON: `inputs`, then `extra_inputs`, each of its dtype
/// (`input_dtype`; an extra input's `extra_input_dtypes` entry when given): token ids
/// (`int32`) as i64, features as f32, of any rank.
pub fn case_inputs(case: &Value) -> anyhow::Result<Vec<Tensor>> {
    let dtype = |name: Option<&str>| match name {
        None | Some("float32") => Ok(DType::F32),
        Some("int32") => Ok(DType::I64),
        // A boolean mask input, written as 0/1.
        Some("bool") => Ok(DType::U8),
        Some(other) => anyhow::bail!("unknown input dtype {other:?}"),
    };
    let first = dtype(case["input_dtype"].as_str())?;
    let mut all = vec![Array::from_json(&case["inputs"])?.tensor(first, &Device::Cpu)?];
    let extra = case["extra_inputs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (k, e) in extra.iter().enumerate() {
        let d = match case["extra_input_dtypes"][k].as_str() {
            Some(name) => dtype(Some(name))?,
            None => first,
        };
        all.push(Array::from_json(e)?.tensor(d, &Device::Cpu)?);
    }
    Ok(all)
}

/// Runs a model case (JSON path); the model files are looked up next to it.
pub fn run_model_case(json: &Path) -> anyhow::Result<ModelReport> {
    let case: ModelCase = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    let dir = json.parent().unwrap_or(Path::new("."));
    let dev = Device::Cpu;
    let all = case_inputs(&serde_json::from_str(&std::fs::read_to_string(json)?)?)?;
    let x = all[0].clone();
    let mask = if case.mask.is_null() {
        None
    } else {
        Some(Array::from_json(&case.mask)?.tensor(DType::U8, &dev)?)
    };
    let run = |m: KerasModel| -> gru_candle::Result<Vec<candle_core::Tensor>> {
        let opts = ModelCall {
            mask: mask.as_ref(),
            training: false,
        };
        Ok(m.call_inputs(&all, opts)?.outputs)
    };
    let ok = |a: f64, b: f64| (a - b).abs() <= F32_ABS + F32_REL * b.abs();
    let mut report = ModelReport {
        name: case.name.clone(),
        files: Vec::new(),
    };
    let mut check =
        |file: &str, got: anyhow::Result<Vec<candle_core::Tensor>>| -> anyhow::Result<()> {
            let mut fails = Vec::new();
            let mut max = 0.0f64;
            match got {
                Err(e) => fails.push(format!("could not run: {e}")),
                Ok(outs) if outs.len() != case.expected.len() => fails.push(format!(
                    "{} outputs, expected {}",
                    outs.len(),
                    case.expected.len()
                )),
                Ok(outs) => {
                    for (i, (o, want)) in outs.iter().zip(&case.expected).enumerate() {
                        max = max.max(compare(
                            &format!("output {i}"),
                            o,
                            &Array::from_json(want)?,
                            ok,
                            &mut fails,
                        )?);
                    }
                }
            }
            report.files.push((file.to_string(), max, fails));
            Ok(())
        };
    for file in &case.files {
        let path: PathBuf = dir.join(file);
        let got: anyhow::Result<Vec<candle_core::Tensor>> = if file.ends_with(".keras") {
            KerasModel::load(&path, DType::F32, &dev)
                .and_then(run)
                .map_err(Into::into)
        } else if file.ends_with(".weights.h5") {
            // The architecture comes from the case's .keras archive.
            let archive = dir.join(file.replace(".weights.h5", ".keras"));
            KerasModel::archive_config(&archive)
                .and_then(|c| KerasModel::load_weights_h5(&c, &path, DType::F32, &dev))
                .and_then(run)
                .map_err(Into::into)
        } else if file.ends_with(".legacy_weights.h5") {
            // Keras 2's weights-only file; the architecture from the case's .h5 model.
            let model = dir.join(file.replace(".legacy_weights.h5", ".h5"));
            KerasModel::model_config(&model)
                .and_then(|c| KerasModel::load_weights_h5(&c, &path, DType::F32, &dev))
                .and_then(run)
                .map_err(Into::into)
        } else if file.ends_with(".h5") {
            // A legacy whole-model file (Keras 2, or Keras 3's legacy writer).
            KerasModel::load(&path, DType::F32, &dev)
                .and_then(run)
                .map_err(Into::into)
        } else if file.ends_with(".safetensors") {
            let h0 = if case.h0.is_null() {
                None
            } else {
                Some(Array::from_json(&case.h0)?.tensor(DType::F32, &dev)?)
            };
            TorchGru::load(&path, DType::F32, &dev)
                .and_then(|m| m.forward(&x, h0.as_ref()))
                .map(|(o, h)| vec![o, h])
                .map_err(Into::into)
        } else {
            Err(anyhow::anyhow!("unknown file kind {file}"))
        };
        check(file, got)?;
    }
    Ok(report)
}

/// The model case files (`*.json` except `index.json`) under a folder, or the file itself.
pub fn model_case_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(super::case_files(path)?
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "index.json"))
        .collect())
}
