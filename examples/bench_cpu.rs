//! CPU benchmark: the fused kernels, the op-by-op loop and candle-nn's `rnn::gru`, forward
//! (inference) and a training step (forward + backward of sum(output)).
//!
//! `cargo run --release --example bench_cpu -- [--threads N] [--shape B,T,I,H]... [--json PATH]
//! [--impl fused,loop,candle-nn] [--min-time SECONDS]`
//!
//! Without `--shape`: 64,100,128,256; 1,100,128,256; 32,500,64,128; 256,50,256,512.
//! First measures the machine's sgemm peak at the same thread count: 2048^3 f32 products
//! through the code the fused kernels use (gemm, and on one thread the packed kernels of the
//! recurrent products, `gru_core::seq::kernel`); the peak is the faster. Then prints
//! a table with each row's median, its GFLOP/s (the matrix products' flops: forward
//! 2BT(I+H)3H; a training step 2BT(2I+3H)3H: the forward, the backward's state products, dU
//! and dW; the input is data, so no dX) and its fraction of the peak, and writes JSON rows
//! `{"impl","mode","B","T","I","H","threads","median_ms","gflops","peak_fraction"}` plus one
//! row `{"impl":"sgemm-peak","threads","gflops"}`. Medians over repeated runs after a
//! warm-up; f32; return_sequences=True.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_gru::candle::CpuPath;
use candle_gru::{CallOptions, Gru, GruConfig};
use candle_nn::rnn::RNN;
use candle_nn::{VarBuilder, VarMap};
use std::time::Duration;

#[path = "common/bench.rs"]
mod bench;
#[path = "common/shape.rs"]
mod shape;
use bench::{median_ms, parse_args, BenchArgs};
use shape::Shape;

fn ours(s: Shape, path: CpuPath, threads: usize, vm: &VarMap) -> anyhow::Result<Gru> {
    let mut c = GruConfig::new(s.h);
    c.return_sequences = true;
    let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    Ok(Gru::new(c, s.i, vb.pp("gru"))?
        .with_cpu_path(path)
        .with_threads(Some(threads)))
}

struct Args {
    common: BenchArgs,
    impls: Vec<String>,
}

impl std::ops::Deref for Args {
    type Target = BenchArgs;
    fn deref(&self) -> &BenchArgs {
        &self.common
    }
}

fn args() -> anyhow::Result<Args> {
    let mut impls: Vec<String> = ["fused", "loop", "candle-nn"].map(String::from).to_vec();
    let defaults = [
        "64,100,128,256",
        "1,100,128,256",
        "32,500,64,128",
        "256,50,256,512",
    ];
    let common = parse_args(&defaults, |flag, value| match flag {
        "--impl" => {
            impls = value
                .context("--impl LIST")?
                .split(',')
                .map(str::to_string)
                .collect();
            Ok(true)
        }
        _ => Ok(false),
    })?;
    Ok(Args { common, impls })
}

/// The median time of one row: `imp` ("fused", "loop" or "candle-nn") on `x` of shape `s`,
/// forward or a training step.
fn time_row(imp: &str, train: bool, s: Shape, x: &Tensor, a: &Args) -> anyhow::Result<f64> {
    let vm = VarMap::new();
    match imp {
        "fused" | "loop" => {
            let path = if imp == "fused" {
                CpuPath::Fused
            } else {
                CpuPath::Loop
            };
            let g = ours(s, path, a.threads, &vm)?;
            let opts = CallOptions {
                training: train,
                ..Default::default()
            };
            median_ms(a.min_time, 200, || {
                let out = g.call(x, opts)?;
                if train {
                    out.output.sum_all()?.backward()?;
                }
                Ok(())
            })
        }
        "candle-nn" => {
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let g = candle_nn::rnn::gru(s.i, s.h, Default::default(), vb.pp("gru"))?;
            median_ms(a.min_time, 200, || {
                let y = g.states_to_tensor(&g.seq(x)?)?;
                if train {
                    y.sum_all()?.backward()?;
                }
                Ok(())
            })
        }
        other => bail!("unknown impl {other} (fused, loop, candle-nn)"),
    }
}

/// The products' flops of one call: forward 2BT(I+H)3H; a training step adds the
/// backward's state products and dU (2BT·H·3H each) and dW (2BT·I·3H). The input is data,
/// so no dX: 2BT(2I+3H)3H in all.
fn flops(s: Shape, train: bool) -> f64 {
    let (bt, g) = ((s.b * s.t) as f64, (3 * s.h) as f64);
    match train {
        true => 2.0 * bt * (2 * s.i + 3 * s.h) as f64 * g,
        false => 2.0 * bt * (s.i + s.h) as f64 * g,
    }
}

/// GFLOP/s of 2048^3 f32 products on `threads` threads: through gemm, and (one thread,
/// AVX2 or AVX-512) through the packed kernels of the recurrent products.
fn sgemm_peak(threads: usize, min_time: Duration) -> anyhow::Result<(f64, Option<f64>)> {
    use candle_gru::candle::paths::cpu_pool::CANDLE_POOL;
    use gru_core::seq::kernel::Packed;
    use gru_core::seq::matmul::{gemm, View};
    use gru_core::seq::Threads;
    let n = 2048;
    let a: Vec<f32> = (0..n * n)
        .map(|k| ((k % 97) as f32 - 48.0) * 0.01)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|k| ((k % 89) as f32 - 44.0) * 0.01)
        .collect();
    let mut c = vec![0f32; n * n];
    let gflops = |ms: f64| 2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e9;
    let via_gemm = median_ms(min_time, 200, || {
        gemm(
            &mut c,
            0,
            n,
            View::rows(&a, 0, n, n, n),
            View::rows(&b, 0, n, n, n),
            false,
            Threads::new(threads, &CANDLE_POOL),
        );
        Ok(())
    })?;
    let packed = match (threads, Packed::from_rows(&b, n, n, n)) {
        (1, Some(p)) => Some(gflops(median_ms(min_time, 200, || {
            anyhow::ensure!(p.product(&mut c, &a, n), "packed product sizes");
            Ok(())
        })?)),
        _ => None,
    };
    Ok((gflops(via_gemm), packed))
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    // candle's CPU ops and gemm's pool read RAYON_NUM_THREADS; set it before any of them run.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let (via_gemm, via_packed) = sgemm_peak(a.threads, a.min_time.min(Duration::from_secs(2)))?;
    let peak = via_packed.map_or(via_gemm, |p| p.max(via_gemm));
    println!(
        "sgemm peak (2048^3 f32, {} thread(s)): {peak:.1} GFLOP/s (gemm {via_gemm:.1}{})",
        a.threads,
        via_packed.map_or(String::new(), |p| format!(", packed step kernels {p:.1}"))
    );
    let mut rows = vec![
        serde_json::json!({"impl": "sgemm-peak", "threads": a.threads, "gflops": peak, "gemm_gflops": via_gemm, "packed_gflops": via_packed}),
    ];
    println!(
        "{:<10} {:<8} {:>4} {:>5} {:>4} {:>4} {:>7} {:>11} {:>8} {:>7}",
        "impl", "mode", "B", "T", "I", "H", "threads", "median_ms", "GFLOP/s", "of peak"
    );
    for &s in &a.shapes {
        let x = Tensor::randn(0f32, 1.0, (s.b, s.t, s.i), &Device::Cpu)?;
        for imp in &a.impls {
            for mode in ["forward", "train"] {
                let ms = time_row(imp, mode == "train", s, &x, &a)?;
                let gflops = flops(s, mode == "train") / (ms * 1e-3) / 1e9;
                println!(
                    "{:<10} {:<8} {:>4} {:>5} {:>4} {:>4} {:>7} {:>11.3} {:>8.1} {:>6.0}%",
                    imp,
                    mode,
                    s.b,
                    s.t,
                    s.i,
                    s.h,
                    a.threads,
                    ms,
                    gflops,
                    100.0 * gflops / peak
                );
                rows.push(serde_json::json!({"impl": imp, "mode": mode, "B": s.b, "T": s.t, "I": s.i, "H": s.h, "threads": a.threads, "median_ms": ms, "gflops": gflops, "peak_fraction": gflops / peak}));
            }
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
