//! CPU benchmark: the fused kernels, the op-by-op loop and candle-nn's `rnn::gru`, forward
//! (inference) and a training step (forward + backward of sum(output)).
//!
//! `cargo run --release --example bench_cpu -- [--threads N] [--shape B,T,I,H]... [--json PATH]
//! [--impl fused,loop,candle-nn] [--min-time SECONDS]`
//!
//! Without `--shape`: 64,100,128,256; 1,100,128,256; 32,500,64,128; 256,50,256,512.
//! Prints a table and writes JSON rows `{"impl","mode","B","T","I","H","threads","median_ms"}`.
//! Medians over repeated runs after a warm-up; f32; return_sequences=True.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Module, Tensor};
use candle_gru::candle::CpuPath;
use candle_gru::{CallOptions, Gru, GruConfig};
use candle_nn::rnn::RNN;
use candle_nn::{VarBuilder, VarMap};
use std::time::{Duration, Instant};

#[path = "common/shape.rs"]
mod shape;
use shape::{parse_shape, Shape};

/// Median of runs of `f` after one warm-up, until `min_time` passed and at least 5 runs.
fn median_ms(min_time: Duration, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < min_time && times.len() < 200) {
        let t0 = Instant::now();
        f()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn ours(s: Shape, path: CpuPath, threads: usize, vm: &VarMap) -> anyhow::Result<Gru> {
    let mut c = GruConfig::new(s.h);
    c.return_sequences = true;
    let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    Ok(Gru::new(c, s.i, vb.pp("gru"))?
        .with_cpu_path(path)
        .with_threads(Some(threads)))
}

fn main() -> anyhow::Result<()> {
    let mut threads = 1usize;
    let mut shapes = Vec::new();
    let mut json = None;
    let mut impls = vec![
        "fused".to_string(),
        "loop".to_string(),
        "candle-nn".to_string(),
    ];
    let mut min_time = 2.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--shape" => shapes.push(parse_shape(&args.next().context("--shape B,T,I,H")?)?),
            "--json" => json = Some(args.next().context("--json PATH")?),
            "--impl" => {
                impls = args
                    .next()
                    .context("--impl LIST")?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--min-time" => min_time = args.next().context("--min-time SECONDS")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    // candle's CPU ops and gemm's pool read RAYON_NUM_THREADS; set it before any of them run.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if shapes.is_empty() {
        shapes = [
            "64,100,128,256",
            "1,100,128,256",
            "32,500,64,128",
            "256,50,256,512",
        ]
        .iter()
        .map(|s| parse_shape(s))
        .collect::<anyhow::Result<_>>()?;
    }
    let min_time = Duration::from_secs_f64(min_time);
    let mut rows = Vec::new();
    println!(
        "{:<10} {:<8} {:>4} {:>5} {:>4} {:>4} {:>7} {:>11}",
        "impl", "mode", "B", "T", "I", "H", "threads", "median_ms"
    );
    for s in &shapes {
        let x = Tensor::randn(0f32, 1.0, (s.b, s.t, s.i), &Device::Cpu)?;
        for imp in &impls {
            for mode in ["forward", "train"] {
                let vm = VarMap::new();
                let ms = match imp.as_str() {
                    "fused" | "loop" => {
                        let path = if imp == "fused" {
                            CpuPath::Fused
                        } else {
                            CpuPath::Loop
                        };
                        let g = ours(*s, path, threads, &vm)?;
                        if mode == "forward" {
                            median_ms(min_time, || {
                                g.call(&x, CallOptions::default())?;
                                Ok(())
                            })?
                        } else {
                            median_ms(min_time, || {
                                let out = g.call(
                                    &x,
                                    CallOptions {
                                        training: true,
                                        ..Default::default()
                                    },
                                )?;
                                out.output.sum_all()?.backward()?;
                                Ok(())
                            })?
                        }
                    }
                    "candle-nn" => {
                        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
                        let g = candle_nn::rnn::gru(s.i, s.h, Default::default(), vb.pp("gru"))?;
                        let run = || -> anyhow::Result<Tensor> {
                            let states = g.seq(&x)?;
                            Ok(g.states_to_tensor(&states)?)
                        };
                        if mode == "forward" {
                            median_ms(min_time, || run().map(|_| ()))?
                        } else {
                            median_ms(min_time, || {
                                run()?.sum_all()?.backward()?;
                                Ok(())
                            })?
                        }
                    }
                    other => bail!("unknown impl {other} (fused, loop, candle-nn)"),
                };
                println!(
                    "{:<10} {:<8} {:>4} {:>5} {:>4} {:>4} {:>7} {:>11.3}",
                    imp, mode, s.b, s.t, s.i, s.h, threads, ms
                );
                rows.push(serde_json::json!({"impl": imp, "mode": mode, "B": s.b, "T": s.t, "I": s.i, "H": s.h, "threads": threads, "median_ms": ms}));
            }
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {path}"))?;
        println!("wrote {path}");
    }
    // Keep the Module trait in use for readers of this example: the layer is a Candle Module.
    let _ = <Gru as Module>::forward;
    Ok(())
}
