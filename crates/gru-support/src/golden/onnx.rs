//! ONNX cases (`tests/data/onnx`, outputs from onnxruntime 1.31.1): load the `.onnx`, run
//! each GRU node on the case's inputs, compare `Y` and `Y_h` (abs 1e-5 + rel 1e-5).

use super::{compare, Array, F32_ABS, F32_REL};
use candle_core::{DType, Device, Tensor};
use gru_candle::io::onnx::OnnxModel;
use gru_candle::CpuPath;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A tensor of a case: `{dtype, shape, data}`.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseTensor {
    /// `float32` or `int32`.
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
}

impl CaseTensor {
    /// As a Candle tensor: floats in `dtype`, ints as I64.
    pub fn tensor(&self, dtype: DType, dev: &Device) -> anyhow::Result<Tensor> {
        let t = Tensor::from_vec(self.data.clone(), self.shape.as_slice(), dev)?;
        Ok(match self.dtype.as_str() {
            "int32" | "int64" => t.to_dtype(DType::I64)?,
            _ => t.to_dtype(dtype)?,
        })
    }

    fn array(&self) -> Array {
        Array {
            shape: self.shape.clone(),
            data: self.data.clone(),
        }
    }
}

/// One GRU node of a case: its inputs and onnxruntime's outputs.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeCase {
    /// The node's name.
    pub node: String,
    /// `X`, and `sequence_lens` / `initial_h` when given.
    pub inputs: Map<String, Value>,
    /// `Y` and `Y_h`.
    pub expected: Map<String, Value>,
}

/// One ONNX case file.
#[derive(Debug, Clone, Deserialize)]
pub struct OnnxCase {
    /// Case name.
    pub name: String,
    /// The `.onnx` file (next to the JSON).
    pub files: Vec<String>,
    /// Each GRU node's values.
    pub gru_nodes: Vec<NodeCase>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct OnnxReport {
    /// Case name.
    pub name: String,
    /// Largest error over every output.
    pub max_err: f64,
    /// What failed.
    pub failures: Vec<String>,
}

impl OnnxReport {
    /// Whether every node reproduced onnxruntime's outputs.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line: name, PASS/FAIL, max error, then the failures.
    pub fn line(&self) -> String {
        let status = if self.passed() { "PASS" } else { "FAIL" };
        let mut s = format!("{:<35} {status}  max err {:.1e}", self.name, self.max_err);
        for f in &self.failures {
            s.push_str("\n    ");
            s.push_str(f);
        }
        s
    }
}

fn tensor_of(m: &Map<String, Value>, key: &str) -> anyhow::Result<Option<CaseTensor>> {
    m.get(key)
        .map(|v| Ok(serde_json::from_value(v.clone())?))
        .transpose()
}

/// The path every call on `path` takes.
fn expected_path(path: CpuPath) -> gru_core::ExecPath {
    match path {
        CpuPath::Fused => gru_core::ExecPath::Fused,
        CpuPath::Loop => gru_core::ExecPath::Loop,
        CpuPath::KernelsOnHost => gru_core::ExecPath::StepKernels,
    }
}

/// Runs a case in `dtype` on the CPU with `path` (the fused kernels, the loop, or the step
/// kernels on the host); every call must take that path.
pub fn run_onnx_case(json: &Path, dtype: DType, path: CpuPath) -> anyhow::Result<OnnxReport> {
    let case: OnnxCase = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    let dir = json.parent().unwrap_or(Path::new("."));
    let file = case
        .files
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: no .onnx file", case.name))?;
    let dev = Device::Cpu;
    let mut model = OnnxModel::load(&dir.join(file), dtype, &dev)?;
    model.grus = model
        .grus
        .into_iter()
        .map(|g| g.with_cpu_path(path))
        .collect();
    let mut report = OnnxReport {
        name: case.name.clone(),
        max_err: 0.0,
        failures: Vec::new(),
    };
    for n in &case.gru_nodes {
        let gru = model
            .gru(&n.node)
            .ok_or_else(|| anyhow::anyhow!("no GRU node {:?}", n.node))?;
        let x = tensor_of(&n.inputs, "X")?.ok_or_else(|| anyhow::anyhow!("no X"))?;
        let lens = tensor_of(&n.inputs, "sequence_lens")?
            .map(|t| t.tensor(dtype, &dev))
            .transpose()?;
        let h0 = tensor_of(&n.inputs, "initial_h")?
            .map(|t| t.tensor(dtype, &dev))
            .transpose()?;
        let (y, y_h) = gru.forward(&x.tensor(dtype, &dev)?, lens.as_ref(), h0.as_ref())?;
        let (fw, bw) = gru.layers();
        for layer in std::iter::once(fw).chain(bw) {
            let took = layer.last_dispatch().map(|d| d.path);
            if took != Some(expected_path(path)) {
                report.failures.push(format!(
                    "node {}: a direction ran on {took:?}, not on {path:?}'s path",
                    n.node
                ));
            }
        }
        let within = |a: f64, b: f64| (a - b).abs() <= F32_ABS + F32_REL * b.abs();
        for (name, got) in [("Y", y), ("Y_h", y_h)] {
            let want = tensor_of(&n.expected, name)?
                .ok_or_else(|| anyhow::anyhow!("no expected {name}"))?;
            let what = format!("node {} {name}", n.node);
            let e = compare(&what, &got, &want.array(), within, &mut report.failures)?;
            report.max_err = report.max_err.max(e);
        }
    }
    Ok(report)
}

/// The case JSON files under `path` (a file or a folder; the folder's `index.json` is not a
/// case).
pub fn onnx_case_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    super::case_files(path).map(|v| {
        v.into_iter()
            .filter(|p| !p.ends_with("index.json"))
            .collect()
    })
}
