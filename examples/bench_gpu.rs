//! GPU benchmark (build with `--features cudnn`): the cuDNN path (f32 exact FMA math, f32
//! with TF32, bf16) and the op-by-op loop on the same GPU, forward (inference) and a training
//! step (forward + backward of sum(output)), with a right-padded mask of random lengths as
//! an option.
//!
//! `bench_gpu [--shape B,T,I,H]... [--json PATH] [--min-time SECONDS] [--no-loop]`
//!
//! Without `--shape`: 64,100,128,256; 1,100,128,256; 256,50,256,512. Medians over repeated
//! runs after a warm-up, each run synchronized. Prints a table; writes JSON rows
//! `{"impl","mode","B","T","I","H","median_ms"}`. Without a GPU it says so and exits 0.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_gru::core::UseCudnn;
use candle_gru::{CallOptions, Gru, GruConfig};
use std::time::{Duration, Instant};

#[path = "common/shape.rs"]
mod shape;
use shape::{parse_shape, Shape};

fn median_ms(
    dev: &Device,
    min_time: Duration,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    dev.synchronize()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < min_time && times.len() < 500) {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn layer(
    s: Shape,
    dtype: DType,
    use_cudnn: UseCudnn,
    tf32: bool,
    dev: &Device,
) -> anyhow::Result<Gru> {
    let mut c = GruConfig::new(s.h);
    c.return_sequences = true;
    c.use_cudnn = use_cudnn;
    let var = |shape: (usize, usize)| -> anyhow::Result<Tensor> {
        let t = (Tensor::rand(-0.1f32, 0.1, shape, dev)?).to_dtype(dtype)?;
        Ok(Var::from_tensor(&t)?.as_tensor().clone())
    };
    Ok(Gru::from_weights(
        c,
        var((s.i, 3 * s.h))?,
        var((s.h, 3 * s.h))?,
        Some(var((2, 3 * s.h))?),
    )?
    .with_cudnn_tf32(tf32))
}

fn main() -> anyhow::Result<()> {
    let mut shapes = Vec::new();
    let mut json = None;
    let mut min_time = 1.0f64;
    let mut with_loop = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--shape" => shapes.push(parse_shape(&args.next().context("--shape B,T,I,H")?)?),
            "--json" => json = Some(args.next().context("--json PATH")?),
            "--min-time" => min_time = args.next().context("--min-time SECONDS")?.parse()?,
            "--no-loop" => with_loop = false,
            other => bail!("unknown argument {other}"),
        }
    }
    if shapes.is_empty() {
        shapes = ["64,100,128,256", "1,100,128,256", "256,50,256,512"]
            .iter()
            .map(|s| parse_shape(s))
            .collect::<anyhow::Result<_>>()?;
    }
    let dev = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            println!(
                "skipped: no CUDA device ({})",
                e.to_string().lines().next().unwrap_or("")
            );
            return Ok(());
        }
    };
    let min_time = Duration::from_secs_f64(min_time);
    let mut rows = Vec::new();
    println!(
        "{:<16} {:<9} {:>5} {:>5} {:>5} {:>5} {:>11}",
        "impl", "mode", "B", "T", "I", "H", "median ms"
    );
    let mut impls = vec![
        ("cudnn-f32", DType::F32, UseCudnn::Force, false),
        ("cudnn-f32-tf32", DType::F32, UseCudnn::Force, true),
        ("cudnn-bf16", DType::BF16, UseCudnn::Force, false),
    ];
    if with_loop {
        impls.push(("loop-gpu-f32", DType::F32, UseCudnn::Never, false));
    }
    for s in &shapes {
        for &(name, dtype, use_cudnn, tf32) in &impls {
            let g = layer(*s, dtype, use_cudnn, tf32, &dev)?;
            let x = Tensor::rand(-1f32, 1., (s.b, s.t, s.i), &dev)?.to_dtype(dtype)?;
            for mode in ["forward", "train"] {
                let ms = median_ms(&dev, min_time, || {
                    let out = g.call(
                        &x,
                        CallOptions {
                            training: mode == "train",
                            ..Default::default()
                        },
                    )?;
                    if mode == "train" {
                        let grads = out.output.sum_all()?.backward()?;
                        anyhow::ensure!(grads.get(g.kernel()).is_some(), "no kernel gradient");
                    }
                    Ok(())
                })?;
                println!(
                    "{name:<16} {mode:<9} {:>5} {:>5} {:>5} {:>5} {ms:>11.3}",
                    s.b, s.t, s.i, s.h
                );
                rows.push(serde_json::json!({
                    "impl": name, "mode": mode, "B": s.b, "T": s.t, "I": s.i, "H": s.h,
                    "median_ms": ms,
                }));
            }
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
