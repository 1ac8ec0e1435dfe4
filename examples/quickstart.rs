//! Builds a GRU from a Keras `get_config()` JSON, runs it on random input, and prints the
//! shapes, the path the call took and why.
//!
//! `cargo run --release --example quickstart [-- CONFIG.json] [--cuda]`
//! (`--cuda` needs the `cuda` feature and a GPU; the default is the CPU.)

use anyhow::Context;
use candle_core::{Device, Tensor};
use candle_gru::{candle::dtype_of_policy, CallOptions, Gru, GruConfig};
use candle_nn::{VarBuilder, VarMap};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cuda = args.iter().any(|a| a == "--cuda");
    let path = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gru_config.json").to_string()
        });
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let config = GruConfig::from_keras_str(&text)?;
    let device = if cuda {
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
    let dtype = dtype_of_policy(&config.dtype)?;

    let (batch, timesteps, features) = (4, 12, 16);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &device);
    let gru = Gru::new(config.clone(), features, vb.pp(&config.name))?;

    let x = Tensor::randn(0f32, 1.0, (batch, timesteps, features), &device)?.to_dtype(dtype)?;
    // Right-padded mask: sample i has 12 - 2i valid steps.
    let mask: Vec<u8> = (0..batch)
        .flat_map(|b| (0..timesteps).map(move |t| (t < timesteps - 2 * b) as u8))
        .collect();
    let mask = Tensor::from_vec(mask, (batch, timesteps), &device)?;
    let out = gru.call(
        &x,
        CallOptions {
            mask: Some(&mask),
            ..Default::default()
        },
    )?;

    println!(
        "layer        {} (units {}, reset_after {})",
        config.name, config.units, config.reset_after
    );
    println!("device       {:?}, dtype {:?}", device, dtype);
    println!("input        {:?}", x.dims());
    println!("output       {:?}", out.output.dims());
    if let Some(state) = &out.state {
        println!("state        {:?}", state.dims());
    }
    for (name, w) in [
        ("kernel", Some(gru.kernel())),
        ("recurrent", Some(gru.recurrent_kernel())),
        ("bias", gru.bias()),
    ] {
        if let Some(w) = w {
            println!("{name:<12} {:?}", w.dims());
        }
    }
    println!("path         {:?}", out.dispatch.path);
    println!("why          {}", out.dispatch.explain());
    for c in &out.dispatch.checks {
        println!(
            "  [{}] {:<38} {}",
            if c.passed { "x" } else { " " },
            c.condition.name(),
            c.reason
        );
    }
    Ok(())
}
