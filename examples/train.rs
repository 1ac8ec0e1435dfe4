//! Trains an embedding -> GRU -> Dense classifier on a synthetic counting task (made in code,
//! no download): which of three marker tokens occurs most often after the last reset token
//! of a variable-length, masked sequence. Prints one line per epoch, saves the weights and the GRU's Keras config,
//! and writes a loss/accuracy plot.
//!
//! `cargo run --release --example train [-- --epochs N] [--out DIR] [--cpu]`
//!
//! Built with `--features cuda` it runs on GPU 0 when one is present (`--cpu` forces the
//! CPU); the default build runs on the CPU.

use anyhow::Context;
use candle_core::Device;
use candle_gru::demo::{plot, train, TrainConfig};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut cfg = TrainConfig::default();
    if cfg!(feature = "cuda") {
        cfg.device = Device::cuda_if_available(0)?;
    }
    let mut out = PathBuf::from("target/train");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--epochs" => cfg.epochs = args.next().context("--epochs N")?.parse()?,
            "--out" => out = PathBuf::from(args.next().context("--out DIR")?),
            "--cpu" => cfg.device = Device::Cpu,
            other => anyhow::bail!("unknown argument {other} (--epochs N, --out DIR, --cpu)"),
        }
    }
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
    let png = out.join("training.png");
    plot::write_png(&report.epochs, &png)?;
    let last = report.epochs.last().context("no epoch ran")?;
    println!("final test accuracy {:.3}", last.test_accuracy);
    println!(
        "saved {}, {}, {}",
        weights.display(),
        config.display(),
        png.display()
    );
    Ok(())
}
