//! Trains an embedding -> GRU -> Dense classifier on a synthetic counting task (made in code,
//! no download): which of three marker tokens occurs most often after the last reset token
//! of a variable-length, masked sequence. Prints one line per epoch, saves the weights, the
//! GRU's Keras config and the trained model as a Keras 3 `.keras` file, and writes a
//! loss/accuracy plot.
//!
//! `cargo run --release --example train [-- --epochs N] [--out DIR] [--cpu | --gpu]`
//!
//! Built with `--features cuda` (or `cudnn`) it runs on GPU 0 when one is present; `--cpu`
//! forces the CPU, `--gpu` requires GPU 0 (without one it prints "skipped: no CUDA device"
//! and exits 0, as the GPU runner expects). The default build runs on the CPU. The last line
//! says which path the GRU's last call took, and why.

use anyhow::Context;
use candle_core::Device;
use gru_support::demo::{plot, train, TrainConfig};
use std::path::PathBuf;

/// Where the run goes: `--cpu`, `--gpu`, or GPU 0 when this build has CUDA and one works.
#[derive(PartialEq)]
enum Want {
    Auto,
    Cpu,
    Gpu,
}

fn main() -> anyhow::Result<()> {
    let mut cfg = TrainConfig::default();
    let mut out = PathBuf::from("target/train");
    let mut want = Want::Auto;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--epochs" => cfg.epochs = args.next().context("--epochs N")?.parse()?,
            "--out" => out = PathBuf::from(args.next().context("--out DIR")?),
            "--cpu" => want = Want::Cpu,
            "--gpu" => want = Want::Gpu,
            other => {
                anyhow::bail!("unknown argument {other} (--epochs N, --out DIR, --cpu, --gpu)")
            }
        }
    }
    cfg.device = match want {
        Want::Cpu => Device::Cpu,
        Want::Auto if !cfg!(feature = "cuda") => Device::Cpu,
        _ => match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) if want == Want::Auto => {
                println!("no usable CUDA device ({e}); training on the CPU");
                Device::Cpu
            }
            Err(e) => {
                let why = e.to_string();
                println!(
                    "skipped: no CUDA device ({})",
                    why.lines().next().unwrap_or("")
                );
                return Ok(());
            }
        },
    };
    std::fs::create_dir_all(&out)?;
    println!(
        "task: most frequent of 3 markers after the last reset token, sequences of 8..=40 tokens ({} train, {} test; chance 33%)",
        cfg.train_size, cfg.test_size
    );
    println!("model: embedding({}) -> GRU({}, dropout 0.1, L2 kernel, MaxNorm kernel) -> Dense(3), on {:?}", cfg.embedding_dim, cfg.units, cfg.device);
    let report = train(&cfg, |e| {
        println!(
            "epoch {:>2}  loss {:.4}  train acc {:.3}  test acc {:.3}  {:>6.1}s",
            e.epoch, e.loss, e.train_accuracy, e.test_accuracy, e.elapsed_s
        )
    })?;
    let weights = out.join("classifier.safetensors");
    report.varmap.save(&weights)?;
    let config = out.join("gru_config.json");
    std::fs::write(
        &config,
        serde_json::to_string_pretty(&report.model.gru.config().to_keras_json())?,
    )?;
    // The trained model for Keras 3: keras.saving.load_model("target/train/classifier.keras").
    let keras = out.join("classifier.keras");
    report.model.keras_model()?.save(&keras)?;
    let png = out.join("training.png");
    plot::write_png(&report.epochs, &png)?;
    let last = report.epochs.last().context("no epoch ran")?;
    println!(
        "final test accuracy {:.3} after {:.1}s of training",
        last.test_accuracy, last.elapsed_s
    );
    if let Some(d) = report.model.gru.last_dispatch() {
        println!("GRU path of the last call: {}", d.explain());
    }
    println!(
        "saved {}, {}, {}, {}",
        weights.display(),
        config.display(),
        keras.display(),
        png.display()
    );
    Ok(())
}
