//! GPU benchmark (build with `--features cudnn`): the cuDNN path (f32 exact FMA math, f32
//! with TF32, bf16), the fused step kernels (f32 and bf16 beside cuDNN on the same layer;
//! f32 with reset_after=False, which cuDNN cannot run) and the op-by-op loop (both reset
//! forms) on the same GPU, forward (inference) and a training step (forward + backward of
//! sum(output)). After the rows, a table of ratios in this run: the step kernels' speed-up
//! over the loop, and their time over cuDNN's.
//!
//! `bench_gpu [--shape B,T,I,H]... [--json PATH] [--min-time SECONDS] [--max-time SECONDS]
//! [--no-loop]`
//!
//! Without `--shape`: 64,100,128,256; 1,100,128,256; 256,50,256,512 (the shapes of
//! `scripts/bench_gpu_anchor.py`, which times PyTorch on the same rows). Each row: 3
//! warm-up runs, then synchronized runs until `--min-time` (default 0.5 s) has passed and at
//! least 5 ran, never past `--max-time` (default 3 s) for the whole row; the median is
//! reported. A row that fails prints an error row and the others go on. The JSON (rows
//! `{"impl","mode","B","T","I","H","median_ms","runs","error"}`) is rewritten after every
//! row, so a run stopped early keeps what it measured. Without a GPU it says so and exits 0.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::GpuPath;
use candle_gru::core::UseCudnn;
use candle_gru::{CallOptions, Gru, GruConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[path = "common/shape.rs"]
mod shape;
use shape::{parse_shape, Shape};

/// How long a row may run.
#[derive(Clone, Copy)]
struct Timing {
    min: Duration,
    max: Duration,
}

/// The median of synchronized runs of `f`, and how many ran.
fn median_ms(
    dev: &Device,
    timing: Timing,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, usize)> {
    let row_start = Instant::now();
    for _ in 0..3 {
        f()?;
    }
    dev.synchronize()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.is_empty()
        || ((times.len() < 5 || start.elapsed() < timing.min)
            && times.len() < 1000
            && row_start.elapsed() < timing.max)
    {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times.len()))
}

/// A layer with random weights (trainable Vars) for shape `s`.
fn layer(s: Shape, im: Impl, dev: &Device) -> anyhow::Result<Gru> {
    let mut c = GruConfig::new(s.h);
    c.return_sequences = true;
    c.use_cudnn = im.use_cudnn;
    c.reset_after = im.reset_after;
    let var = |shape: &[usize]| -> anyhow::Result<Tensor> {
        let t = (Tensor::rand(-0.1f32, 0.1, shape, dev)?).to_dtype(im.dtype)?;
        Ok(Var::from_tensor(&t)?.as_tensor().clone())
    };
    let bias = match im.reset_after {
        true => var(&[2, 3 * s.h])?,
        false => var(&[3 * s.h])?,
    };
    Ok(
        Gru::from_weights(c, var(&[s.i, 3 * s.h])?, var(&[s.h, 3 * s.h])?, Some(bias))?
            .with_cudnn_tf32(im.tf32)
            .with_gpu_path(im.gpu_path),
    )
}

/// One implementation under test.
#[derive(Clone, Copy)]
struct Impl {
    name: &'static str,
    dtype: DType,
    use_cudnn: UseCudnn,
    tf32: bool,
    reset_after: bool,
    gpu_path: GpuPath,
}

impl Impl {
    /// cuDNN on a reset_after layer.
    fn cudnn(name: &'static str, dtype: DType, tf32: bool) -> Impl {
        Impl {
            name,
            dtype,
            use_cudnn: UseCudnn::Force,
            tf32,
            reset_after: true,
            gpu_path: GpuPath::StepKernels,
        }
    }

    /// What runs without cuDNN (`Never`): the step kernels or the loop.
    fn without_cudnn(
        name: &'static str,
        dtype: DType,
        reset_after: bool,
        gpu_path: GpuPath,
    ) -> Impl {
        Impl {
            name,
            dtype,
            use_cudnn: UseCudnn::Never,
            tf32: false,
            reset_after,
            gpu_path,
        }
    }
}

/// Times one row (impl, shape, mode).
fn row(
    im: Impl,
    s: Shape,
    train: bool,
    dev: &Device,
    timing: Timing,
) -> anyhow::Result<(f64, usize)> {
    let g = layer(s, im, dev)?;
    let x = Tensor::rand(-1f32, 1., (s.b, s.t, s.i), dev)?.to_dtype(im.dtype)?;
    median_ms(dev, timing, || {
        let opts = CallOptions {
            training: train,
            ..Default::default()
        };
        let out = g.call(&x, opts)?;
        if train {
            let grads = out.output.sum_all()?.backward()?;
            anyhow::ensure!(grads.get(g.kernel()).is_some(), "no kernel gradient");
        }
        Ok(())
    })
}

struct Args {
    shapes: Vec<Shape>,
    json: Option<String>,
    timing: Timing,
    with_loop: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        shapes: Vec::new(),
        json: None,
        timing: Timing {
            min: Duration::from_secs_f64(0.5),
            max: Duration::from_secs_f64(3.0),
        },
        with_loop: true,
    };
    let mut it = std::env::args().skip(1);
    let secs = |v: Option<String>, what: &str| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs_f64(
            v.context(what.to_string())?.parse()?,
        ))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--shape" => a
                .shapes
                .push(parse_shape(&it.next().context("--shape B,T,I,H")?)?),
            "--json" => a.json = Some(it.next().context("--json PATH")?),
            "--min-time" => a.timing.min = secs(it.next(), "--min-time SECONDS")?,
            "--max-time" => a.timing.max = secs(it.next(), "--max-time SECONDS")?,
            "--no-loop" => a.with_loop = false,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.shapes.is_empty() {
        for s in ["64,100,128,256", "1,100,128,256", "256,50,256,512"] {
            a.shapes.push(parse_shape(s)?);
        }
    }
    Ok(a)
}

/// The median of row (impl, mode, shape), if it ran.
fn median_of(rows: &[Value], name: &str, mode: &str, shape: &Value) -> Option<f64> {
    rows.iter()
        .find(|r| {
            r["impl"] == name
                && r["mode"] == mode
                && ["B", "T", "I", "H"].iter().all(|k| r[k] == shape[k])
        })
        .and_then(|r| r["median_ms"].as_f64())
}

/// Prints, per shape and mode, the step kernels' speed-up over the loop (goal: >= 10x at
/// 64,100,128,256 for both reset forms) and their time over cuDNN's (goal: <= 2x).
fn ratios(rows: &[Value]) {
    println!();
    println!(
        "{:<22} {:<9} {:>14} {:>17} {:>16} {:>17}",
        "shape B,T,I,H",
        "mode",
        "loop/step",
        "loop-rb/step-rb",
        "step/cudnn",
        "step-bf16/cudnn-bf16"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    for r in rows.iter().filter(|r| r["impl"] == "step-f32") {
        let mode = r["mode"].as_str().unwrap_or("");
        let m = |name: &str| median_of(rows, name, mode, r);
        let shape = format!("{},{},{},{}", r["B"], r["T"], r["I"], r["H"]);
        println!(
            "{shape:<22} {mode:<9} {:>14} {:>17} {:>16} {:>17}",
            fmt(ratio(m("loop-gpu-f32"), m("step-f32"))),
            fmt(ratio(m("loop-gpu-f32-rb"), m("step-f32-rb"))),
            fmt(ratio(m("step-f32"), m("cudnn-f32"))),
            fmt(ratio(m("step-bf16"), m("cudnn-bf16"))),
        );
    }
}

fn write_json(path: &Option<String>, rows: &[Value]) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(rows)?)
            .with_context(|| format!("writing {p}"))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dev = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            let why = e.to_string();
            println!(
                "skipped: no CUDA device ({})",
                why.lines().next().unwrap_or("")
            );
            write_json(&a.json, &[])?;
            return Ok(());
        }
    };
    let mut impls = vec![
        Impl::cudnn("cudnn-f32", DType::F32, false),
        Impl::cudnn("cudnn-f32-tf32", DType::F32, true),
        Impl::cudnn("cudnn-bf16", DType::BF16, false),
        Impl::without_cudnn("step-f32", DType::F32, true, GpuPath::StepKernels),
        Impl::without_cudnn("step-bf16", DType::BF16, true, GpuPath::StepKernels),
        Impl::without_cudnn("step-f32-rb", DType::F32, false, GpuPath::StepKernels),
    ];
    if a.with_loop {
        impls.push(Impl::without_cudnn(
            "loop-gpu-f32",
            DType::F32,
            true,
            GpuPath::Loop,
        ));
        impls.push(Impl::without_cudnn(
            "loop-gpu-f32-rb",
            DType::F32,
            false,
            GpuPath::Loop,
        ));
    }
    println!(
        "{:<16} {:<9} {:>5} {:>5} {:>5} {:>5} {:>11} {:>6}",
        "impl", "mode", "B", "T", "I", "H", "median ms", "runs"
    );
    let (mut rows, mut failed) = (Vec::new(), 0);
    for &s in &a.shapes {
        for &im in &impls {
            for mode in ["forward", "train"] {
                let r = row(im, s, mode == "train", &dev, a.timing);
                let head = format!(
                    "{:<16} {mode:<9} {:>5} {:>5} {:>5} {:>5}",
                    im.name, s.b, s.t, s.i, s.h
                );
                let mut j =
                    json!({"impl": im.name, "mode": mode, "B": s.b, "T": s.t, "I": s.i, "H": s.h});
                match r {
                    Ok((ms, runs)) => {
                        println!("{head} {ms:>11.3} {runs:>6}");
                        j["median_ms"] = json!(ms);
                        j["runs"] = json!(runs);
                    }
                    Err(e) => {
                        failed += 1;
                        let msg = format!("{e:#}");
                        println!("{head} ERROR {}", msg.lines().next().unwrap_or(""));
                        j["error"] = json!(msg);
                    }
                }
                rows.push(j);
                write_json(&a.json, &rows)?;
            }
        }
    }
    ratios(&rows);
    if let Some(p) = &a.json {
        println!("wrote {p}");
    }
    anyhow::ensure!(failed == 0, "{failed} rows failed");
    Ok(())
}
