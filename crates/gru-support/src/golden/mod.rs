//! The golden-case format (made with the real Keras 3.15.1 GRU, see `tests/data/README.md`)
//! and a runner that checks a [`Gru`] against it, in f32 and f64, outputs and gradients.

use candle_core::{DType, Device, Tensor, Var};
use gru_candle::Gru;
use gru_candle::{CallOptions, CpuPath, GpuPath};
use gru_core::{GruConfig, UseCudnn};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// f32 outputs: |got - want| <= F32_ABS + F32_REL * |want|.
pub const F32_ABS: f64 = 1e-5;
/// f32 outputs, relative part.
pub const F32_REL: f64 = 1e-5;
/// f64 outputs: absolute tolerance.
pub const F64_ABS: f64 = 1e-12;
/// f32 gradients: absolute tolerance.
pub const GRAD_F32_ABS: f64 = 5e-6;
/// f64 gradients: absolute tolerance.
pub const GRAD_F64_ABS: f64 = 1e-10;

/// One golden case file.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// Case name (the file stem).
    pub name: String,
    /// Feature tags.
    #[serde(default)]
    pub features: Vec<String>,
    /// Exactly Keras' `get_config()` of the layer.
    pub config: Value,
    /// Keras weights: `kernel`, `recurrent_kernel`, `bias` (nested lists, bias may be null).
    pub weights: Weights,
    /// Names of the returned tensors, in order.
    pub output_names: Vec<String>,
    /// Calls applied in order to one layer instance.
    pub calls: Vec<Call>,
    /// Gradient check of `sum(outputs[0] * R)` for the first call, if present.
    #[serde(default)]
    pub gradient: Option<Gradient>,
}

/// The case's weights as nested JSON lists.
#[derive(Debug, Clone, Deserialize)]
pub struct Weights {
    /// (input_dim, 3u).
    pub kernel: Value,
    /// (u, 3u).
    pub recurrent_kernel: Value,
    /// (2, 3u), (3u,) or null.
    #[serde(default)]
    pub bias: Value,
}

/// One call of a case.
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    /// Call `reset_states()` first.
    #[serde(default)]
    pub reset_states_before: bool,
    /// Training flag (false in every stored case).
    #[serde(default)]
    pub training: bool,
    /// (B, T, F).
    pub inputs: Value,
    /// (B, T) booleans or null.
    #[serde(default)]
    pub mask: Value,
    /// (B, u) or null.
    #[serde(default)]
    pub initial_state: Value,
    /// `{"float32": [outputs...], "float64": [outputs...]}`.
    pub expected: Expected,
}

/// Expected outputs per dtype.
#[derive(Debug, Clone, Deserialize)]
pub struct Expected {
    /// Outputs of the float32 layer.
    pub float32: Vec<Value>,
    /// Outputs of the float64 layer.
    pub float64: Vec<Value>,
}

/// A gradient check.
#[derive(Debug, Clone, Deserialize)]
pub struct Gradient {
    /// The weighting array R, shaped like `outputs[0]`.
    #[serde(rename = "R")]
    pub r: Value,
    /// `{"float32": {name: array}, "float64": {...}}`.
    pub expected: GradExpected,
}

/// Expected gradients per dtype.
#[derive(Debug, Clone, Deserialize)]
pub struct GradExpected {
    /// float32 gradients by name.
    pub float32: serde_json::Map<String, Value>,
    /// float64 gradients by name.
    pub float64: serde_json::Map<String, Value>,
}

/// A dense array read from nested JSON lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values (booleans as 0/1).
    pub data: Vec<f64>,
}

impl Array {
    /// Flattens nested lists of numbers or booleans.
    pub fn from_json(v: &Value) -> anyhow::Result<Array> {
        fn walk(
            v: &Value,
            depth: usize,
            shape: &mut Vec<usize>,
            out: &mut Vec<f64>,
        ) -> anyhow::Result<()> {
            match v {
                Value::Array(items) => {
                    if shape.len() == depth {
                        shape.push(items.len());
                    } else if shape[depth] != items.len() {
                        anyhow::bail!("ragged array at depth {depth}");
                    }
                    for it in items {
                        walk(it, depth + 1, shape, out)?;
                    }
                    Ok(())
                }
                Value::Number(n) => {
                    out.push(n.as_f64().ok_or_else(|| anyhow::anyhow!("bad number"))?);
                    Ok(())
                }
                Value::Bool(b) => {
                    out.push(if *b { 1.0 } else { 0.0 });
                    Ok(())
                }
                other => anyhow::bail!("expected a number or list, got {other}"),
            }
        }
        let (mut shape, mut data) = (Vec::new(), Vec::new());
        walk(v, 0, &mut shape, &mut data)?;
        Ok(Array { shape, data })
    }

    /// As a tensor of `dtype` (values are read as f64 and cast, which is exact for the
    /// f32-valued inputs of the cases).
    pub fn tensor(&self, dtype: DType, dev: &Device) -> anyhow::Result<Tensor> {
        Ok(Tensor::from_vec(self.data.clone(), self.shape.as_slice(), dev)?.to_dtype(dtype)?)
    }
}

/// Loads a case from a JSON file.
pub fn load_case(path: &Path) -> anyhow::Result<Case> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The result of running one case in one dtype.
#[derive(Debug, Clone, Default)]
pub struct DtypeReport {
    /// Largest |got - want| over every output of every call.
    pub max_output_err: f64,
    /// Largest |got - want| over every gradient (when the case has one).
    pub max_grad_err: Option<f64>,
    /// What failed, in words (empty when everything passed).
    pub failures: Vec<String>,
    /// The path each call took.
    pub paths: Vec<gru_core::ExecPath>,
}

/// The result of running one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// f32 results.
    pub f32: DtypeReport,
    /// f64 results.
    pub f64: DtypeReport,
}

impl CaseReport {
    /// Whether both dtypes passed.
    pub fn passed(&self) -> bool {
        self.f32.failures.is_empty() && self.f64.failures.is_empty()
    }

    /// One line: name, PASS/FAIL, max errors (and the failures).
    pub fn line(&self) -> String {
        let g = |r: &DtypeReport| {
            r.max_grad_err
                .map(|e| format!(" grad {e:.1e}"))
                .unwrap_or_default()
        };
        let mut s = format!(
            "{:<55} {}  f32 {:.1e}{}  f64 {:.1e}{}",
            self.name,
            if self.passed() { "PASS" } else { "FAIL" },
            self.f32.max_output_err,
            g(&self.f32),
            self.f64.max_output_err,
            g(&self.f64),
        );
        for f in self.f32.failures.iter().chain(&self.f64.failures) {
            s.push_str("\n    ");
            s.push_str(f);
        }
        s
    }
}

pub(crate) fn compare(
    what: &str,
    got: &Tensor,
    want: &Array,
    within: impl Fn(f64, f64) -> bool,
    failures: &mut Vec<String>,
) -> anyhow::Result<f64> {
    if got.dims() != want.shape.as_slice() {
        failures.push(format!(
            "{what}: shape {:?}, expected {:?}",
            got.dims(),
            want.shape
        ));
        return Ok(f64::INFINITY);
    }
    let g: Vec<f64> = got.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    let mut max = 0.0f64;
    let mut worst = None;
    for (i, (a, b)) in g.iter().zip(&want.data).enumerate() {
        let e = (a - b).abs();
        if !e.is_finite() || e > max {
            max = if e.is_finite() { e } else { f64::INFINITY };
        }
        if !within(*a, *b) && worst.is_none() {
            worst = Some((i, *a, *b));
        }
    }
    if let Some((i, a, b)) = worst {
        failures.push(format!(
            "{what}: element {i} = {a:e}, expected {b:e} (max abs err {max:.2e})"
        ));
    }
    Ok(max)
}

/// Runs a case in one dtype on the default CPU path (the fused kernels) and compares
/// against its expected values.
pub fn run_case_dtype(case: &Case, dtype: DType) -> anyhow::Result<DtypeReport> {
    run_case_on(case, dtype, CpuPath::Fused)
}

/// Where a golden case runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// On the CPU with this path; every call must take it.
    Cpu(CpuPath),
    /// On `device` (a GPU) with the layer's `use_cudnn` set to `use_cudnn`: `Auto` takes
    /// cuDNN wherever the conditions hold (the paths are recorded in the report), `Never`
    /// runs `gpu_path` on the device (checked), `Force` fails where a condition fails.
    Device {
        /// The device.
        device: Device,
        /// The use_cudnn setting for the case's layer.
        use_cudnn: UseCudnn,
        /// What runs where cuDNN does not.
        gpu_path: GpuPath,
    },
}

/// Runs a case in one dtype on the given CPU path; checks that every call took that path.
pub fn run_case_on(case: &Case, dtype: DType, cpu_path: CpuPath) -> anyhow::Result<DtypeReport> {
    run_case_target(case, dtype, &Target::Cpu(cpu_path))
}

/// A case's layer on a target, with its weights as Vars (for their gradients) and the path
/// every call must take (if the target fixes one).
struct CaseLayer {
    gru: Gru,
    kernel: Var,
    recurrent: Var,
    bias: Option<Var>,
    want_path: Option<gru_core::ExecPath>,
    dev: Device,
}

impl CaseLayer {
    fn new(case: &Case, dtype: DType, target: &Target) -> anyhow::Result<CaseLayer> {
        let (dev, cpu_path, use_cudnn, gpu_path) = match target {
            Target::Cpu(p) => (Device::Cpu, *p, None, GpuPath::default()),
            Target::Device {
                device,
                use_cudnn,
                gpu_path,
            } => {
                // On the CPU, the step kernels run on their host backend.
                let cpu = match gpu_path {
                    GpuPath::StepKernels => CpuPath::KernelsOnHost,
                    GpuPath::Loop => CpuPath::Loop,
                };
                (device.clone(), cpu, Some(*use_cudnn), *gpu_path)
            }
        };
        let mut config = GruConfig::from_keras_json(&case.config)?;
        if let Some(u) = use_cudnn {
            config.use_cudnn = u;
        }
        let var = |v: &Value| -> anyhow::Result<Var> {
            Ok(Var::from_tensor(
                &Array::from_json(v)?.tensor(dtype, &dev)?,
            )?)
        };
        let kernel = var(&case.weights.kernel)?;
        let recurrent = var(&case.weights.recurrent_kernel)?;
        let bias = match case.weights.bias.is_null() {
            true => None,
            false => Some(var(&case.weights.bias)?),
        };
        let gru = Gru::from_weights(
            config,
            kernel.as_tensor().clone(),
            recurrent.as_tensor().clone(),
            bias.as_ref().map(|b| b.as_tensor().clone()),
        )?
        .with_cpu_path(cpu_path)
        .with_gpu_path(gpu_path);
        let want_path = match (target, cpu_path) {
            (Target::Device { use_cudnn, .. }, _) => match (use_cudnn, gpu_path) {
                (UseCudnn::Never, GpuPath::StepKernels) => Some(gru_core::ExecPath::StepKernels),
                (UseCudnn::Never, GpuPath::Loop) => Some(gru_core::ExecPath::Loop),
                (UseCudnn::Force, _) => Some(gru_core::ExecPath::Cudnn),
                (UseCudnn::Auto, _) => None,
            },
            (_, CpuPath::Fused) => Some(gru_core::ExecPath::Fused),
            (_, CpuPath::Loop) => Some(gru_core::ExecPath::Loop),
            (_, CpuPath::KernelsOnHost) => Some(gru_core::ExecPath::StepKernels),
        };
        Ok(CaseLayer {
            gru,
            kernel,
            recurrent,
            bias,
            want_path,
            dev,
        })
    }

    /// The Var a gradient of the case is named after.
    fn var_named<'a>(&'a self, name: &str, inputs: &'a Var) -> Result<&'a Var, String> {
        match name {
            "kernel" => Ok(&self.kernel),
            "recurrent_kernel" => Ok(&self.recurrent),
            "bias" => self
                .bias
                .as_ref()
                .ok_or_else(|| "gradient of bias expected but the layer has none".into()),
            "inputs" => Ok(inputs),
            other => Err(format!("unknown gradient name {other}")),
        }
    }
}

/// One call of a case: runs it, checks the path and every output; returns the outputs (for
/// the gradient check) and the inputs' Var.
fn run_call(
    layer: &CaseLayer,
    case: &Case,
    ci: usize,
    dtype: DType,
    report: &mut DtypeReport,
) -> anyhow::Result<Option<(Vec<Tensor>, Var)>> {
    let call = &case.calls[ci];
    if call.reset_states_before {
        layer.gru.reset_states();
    }
    let dev = &layer.dev;
    let inputs = Var::from_tensor(&Array::from_json(&call.inputs)?.tensor(dtype, dev)?)?;
    let optional = |v: &Value, dt: DType| -> anyhow::Result<Option<Tensor>> {
        match v.is_null() {
            true => Ok(None),
            false => Ok(Some(Array::from_json(v)?.tensor(dt, dev)?)),
        }
    };
    let mask = optional(&call.mask, DType::U8)?;
    let h0 = optional(&call.initial_state, dtype)?;
    let opts = CallOptions {
        mask: mask.as_ref(),
        initial_state: h0.as_ref(),
        training: call.training,
    };
    let out = layer.gru.call(inputs.as_tensor(), opts)?;
    report.paths.push(out.dispatch.path);
    if let Some(want) = layer.want_path.filter(|w| *w != out.dispatch.path) {
        let explain = out.dispatch.explain();
        report.failures.push(format!(
            "call {ci} ran on {:?}, not {want:?}: {explain}",
            out.dispatch.path
        ));
    }
    let outs = out.to_vec();
    let expected = if dtype == DType::F64 {
        &call.expected.float64
    } else {
        &call.expected.float32
    };
    if outs.len() != expected.len() {
        report.failures.push(format!(
            "call {ci}: {} outputs, expected {}",
            outs.len(),
            expected.len()
        ));
        return Ok(None);
    }
    let f64_mode = dtype == DType::F64;
    let out_ok = |a: f64, b: f64| match f64_mode {
        true => (a - b).abs() <= F64_ABS,
        false => (a - b).abs() <= F32_ABS + F32_REL * b.abs(),
    };
    for (oi, (got, want)) in outs.iter().zip(expected).enumerate() {
        let name = case
            .output_names
            .get(oi)
            .map(String::as_str)
            .unwrap_or("output");
        let what = format!("call {ci} {name}");
        let e = compare(
            &what,
            got,
            &Array::from_json(want)?,
            out_ok,
            &mut report.failures,
        )?;
        report.max_output_err = report.max_output_err.max(e);
    }
    Ok(Some((outs, inputs)))
}

/// The case's gradient check: d(sum(output * r)) against the expected gradients.
fn check_gradients(
    layer: &CaseLayer,
    grad: &Gradient,
    output: &Tensor,
    inputs: &Var,
    dtype: DType,
    report: &mut DtypeReport,
) -> anyhow::Result<()> {
    let r = Array::from_json(&grad.r)?.tensor(dtype, &layer.dev)?;
    let grads = output.mul(&r)?.sum_all()?.backward()?;
    let (tol, wanted) = match dtype == DType::F64 {
        true => (GRAD_F64_ABS, &grad.expected.float64),
        false => (GRAD_F32_ABS, &grad.expected.float32),
    };
    let mut gmax = 0.0f64;
    for (name, want) in wanted {
        let var = match layer.var_named(name, inputs) {
            Ok(v) => v,
            Err(problem) => {
                report.failures.push(problem);
                continue;
            }
        };
        let Some(g) = grads.get(var.as_tensor()) else {
            report.failures.push(format!("no gradient reached {name}"));
            continue;
        };
        let within = |a: f64, b: f64| (a - b).abs() <= tol;
        let e = compare(
            &format!("grad {name}"),
            g,
            &Array::from_json(want)?,
            within,
            &mut report.failures,
        )?;
        gmax = gmax.max(e);
    }
    report.max_grad_err = Some(gmax);
    Ok(())
}

/// Runs a case in one dtype on a target and compares against its expected values.
pub fn run_case_target(case: &Case, dtype: DType, target: &Target) -> anyhow::Result<DtypeReport> {
    let layer = CaseLayer::new(case, dtype, target)?;
    let mut report = DtypeReport::default();
    for ci in 0..case.calls.len() {
        let Some((outs, inputs)) = run_call(&layer, case, ci, dtype, &mut report)? else {
            continue;
        };
        if let (0, Some(grad)) = (ci, &case.gradient) {
            check_gradients(&layer, grad, &outs[0], &inputs, dtype, &mut report)?;
        }
    }
    Ok(report)
}

/// Runs a case in f32 and f64 on the default CPU path. A case that cannot run is reported as
/// a failure with the reason, never skipped.
pub fn run_case(case: &Case) -> CaseReport {
    run_case_path(case, CpuPath::Fused)
}

/// Runs a case in f32 and f64 on the given CPU path.
pub fn run_case_path(case: &Case, cpu_path: CpuPath) -> CaseReport {
    let run = |dt| {
        run_case_on(case, dt, cpu_path).unwrap_or_else(|e| DtypeReport {
            max_output_err: f64::NAN,
            max_grad_err: None,
            failures: vec![format!("could not run: {e}")],
            paths: Vec::new(),
        })
    };
    CaseReport {
        name: case.name.clone(),
        f32: run(DType::F32),
        f64: run(DType::F64),
    }
}

/// The case files under `path` (a file, or a folder searched for `*.json`, sorted).
pub fn case_files(path: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        v.sort();
        Ok(v)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        anyhow::bail!("{}: no such file or folder", path.display())
    }
}

pub mod models;
pub mod onnx;

/// The runners' command line: for every path argument (a case file or a folder of them,
/// listed by `files`), runs `run` and prints its line, then `N passed, M failed`. Returns
/// the process exit status: 0 only when at least one case ran and all passed. A path or case
/// that cannot be read counts as a failure, never a skip.
pub fn run_paths(
    args: &[std::path::PathBuf],
    files: impl Fn(&Path) -> anyhow::Result<Vec<std::path::PathBuf>>,
    run: impl Fn(&Path) -> anyhow::Result<(String, bool)>,
) -> i32 {
    let (mut passed, mut failed) = (0usize, 0usize);
    for arg in args {
        let list = match files(arg) {
            Ok(f) => f,
            Err(e) => {
                println!("{:<55} FAIL  {e}", arg.display());
                failed += 1;
                continue;
            }
        };
        for file in list {
            match run(&file) {
                Ok((line, ok)) => {
                    println!("{line}");
                    if ok {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                }
                Err(e) => {
                    println!("{:<55} FAIL  {e}", file.display());
                    failed += 1;
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        0
    } else {
        1
    }
}
