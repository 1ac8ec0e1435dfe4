//! CPU benchmark of one GRU step at a time, as a decoder or a streaming model runs it:
//! `GruCell` with trainable weights (`Var`s), its frozen twin (`GruCell::frozen`: constant
//! weights), and candle-nn's `rnn::gru` step, feeding each step's state to the next.
//!
//! `cargo run --release --example bench_step -- [--threads N] [--shape B,T,I,H]...
//! [--json PATH] [--min-time SECONDS]`
//!
//! A timed run is T steps from a zero state with one input (batch B, I features, H units);
//! the table and the JSON rows `{"impl","mode":"step","B","T","I","H","threads",
//! "median_ms","step_us"}` give the median run and its time per step. Without `--shape`:
//! 1,100,128,256; 1,100,512,512; 8,100,256,512; 64,100,128,256. f32, inference.
//! `scripts/bench_step.py` runs it beside PyTorch's `nn.GRUCell` and Keras' `GRUCell`.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_gru::{GruCell, GruCellConfig};
use candle_nn::rnn::RNN;
use candle_nn::{VarBuilder, VarMap};

#[path = "common/bench.rs"]
mod bench;
#[path = "common/shape.rs"]
mod shape;
use bench::{median_ms, parse_args, BenchArgs};
use shape::Shape;

fn args() -> anyhow::Result<BenchArgs> {
    let defaults = [
        "1,100,128,256",
        "1,100,512,512",
        "8,100,256,512",
        "64,100,128,256",
    ];
    parse_args(&defaults, |_, _| Ok(false))
}

/// The median time of T steps of `imp` ("cell", "cell-frozen" or "candle-nn").
fn time_row(imp: &str, s: Shape, x: &Tensor, a: &BenchArgs) -> anyhow::Result<f64> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    match imp {
        "cell" | "cell-frozen" => {
            let cell = GruCell::new(GruCellConfig::new(s.h), s.i, vb.pp("cell"))?;
            let cell = cell.with_threads(Some(a.threads));
            let cell = if imp == "cell" { cell } else { cell.frozen()? };
            median_ms(a.min_time, 500, || {
                let mut h = cell.initial_state(s.b)?;
                for _ in 0..s.t {
                    h = cell.call(x, &h, false)?;
                }
                Ok(())
            })
        }
        "candle-nn" => {
            let g = candle_nn::rnn::gru(s.i, s.h, Default::default(), vb.pp("gru"))?;
            median_ms(a.min_time, 500, || {
                let mut state = g.zero_state(s.b)?;
                for _ in 0..s.t {
                    state = g.step(x, &state)?;
                }
                Ok(())
            })
        }
        other => bail!("unknown impl {other}"),
    }
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    // candle's CPU ops and gemm's pool read RAYON_NUM_THREADS; set it before any of them run.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let mut rows = Vec::new();
    println!(
        "{:<12} {:>4} {:>5} {:>4} {:>4} {:>7} {:>11} {:>9}",
        "impl", "B", "T", "I", "H", "threads", "median_ms", "step_us"
    );
    for &s in &a.shapes {
        let x = Tensor::randn(0f32, 1.0, (s.b, s.i), &Device::Cpu)?;
        for imp in ["cell", "cell-frozen", "candle-nn"] {
            let ms = time_row(imp, s, &x, &a)?;
            let us = ms * 1e3 / s.t as f64;
            println!(
                "{:<12} {:>4} {:>5} {:>4} {:>4} {:>7} {:>11.3} {:>9.1}",
                imp, s.b, s.t, s.i, s.h, a.threads, ms, us
            );
            rows.push(serde_json::json!({"impl": imp, "mode": "step", "B": s.b, "T": s.t, "I": s.i, "H": s.h, "threads": a.threads, "median_ms": ms, "step_us": us}));
        }
    }
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
