//! Writes GRU layers as ONNX models, with their inputs and this crate's outputs, for
//! onnxruntime to check (`scripts/check_onnx_export.py`):
//! `cargo run --release --example onnx_export -- OUT_DIR`.
//!
//! Each `export_K.onnx` holds one GRU node (`io::onnx::export_gru` or
//! `export_bidirectional`); `export_K.json` is an ONNX case (the schema of
//! tests/data/onnx): `X`, and `Y`, `Y_h` as the layer computes them, in ONNX's layout.

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::io::onnx::{export_bidirectional, export_gru};
use candle_gru::candle::{Bidirectional, MergeMode};
use candle_gru::core::Activation;
use candle_gru::{CallOptions, Gru, GruConfig};
use serde_json::json;
use std::path::PathBuf;

fn values(n: usize, seed: f64) -> Vec<f32> {
    (0..n)
        .map(|k| (((k as f64) * 0.731 + seed).sin() * 0.8) as f32)
        .collect()
}

fn layer(c: &GruConfig, i: usize) -> anyhow::Result<Gru> {
    let u = c.units;
    let t = |shape: &[usize], seed: f64| -> anyhow::Result<Tensor> {
        let v = Tensor::from_vec(values(shape.iter().product(), seed), shape, &Device::Cpu)?;
        Ok(Var::from_tensor(&v)?.as_tensor().clone())
    };
    let bias = match c.reset_after {
        true => t(&[2, 3 * u], 5.0)?,
        false => t(&[3 * u], 5.0)?,
    };
    Ok(Gru::from_weights(
        c.clone(),
        t(&[i, 3 * u], 1.0)?,
        t(&[u, 3 * u], 3.0)?,
        Some(bias),
    )?)
}

/// (B, T, H) in time order.
fn sequence(g: &Gru, x: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
    let out = g.call(x, CallOptions::default())?;
    let state = out.state.context("return_state")?;
    let y = match g.config().go_backwards {
        false => out.output,
        true => {
            let t = out.output.dim(1)?;
            let idx = Tensor::from_vec((0..t as u32).rev().collect::<Vec<_>>(), t, &Device::Cpu)?;
            out.output.index_select(&idx, 1)?
        }
    };
    Ok((y, state))
}

fn tensor_json(t: &Tensor) -> anyhow::Result<serde_json::Value> {
    let data: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(json!({"dtype": "float32", "shape": t.dims(), "data": data}))
}

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: onnx_export OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    let (b, t, i, u) = (3, 6, 4, 5);
    let x = Tensor::from_vec(values(b * t * i, 0.2), (b, t, i), &Device::Cpu)?;
    let xt = x.transpose(0, 1)?.contiguous()?;
    let mut configs = Vec::new();
    for (reset_after, go_backwards, clip, acts) in [
        (true, false, None, (Activation::Sigmoid, Activation::Tanh)),
        (false, false, None, (Activation::Sigmoid, Activation::Tanh)),
        (
            true,
            true,
            Some(0.4),
            (Activation::HardSigmoid, Activation::Relu),
        ),
    ] {
        let mut c = GruConfig::new(u);
        (c.return_sequences, c.return_state) = (true, true);
        (c.reset_after, c.go_backwards, c.cell_clip) = (reset_after, go_backwards, clip);
        (c.recurrent_activation, c.activation) = acts;
        configs.push(c);
    }
    let mut cases = Vec::new();
    for c in &configs {
        let g = layer(c, i)?;
        let (y, h) = sequence(&g, &x)?;
        cases.push((
            export_gru(&g)?,
            y.transpose(0, 1)?.unsqueeze(1)?,
            h.unsqueeze(0)?,
        ));
    }
    let mut bw = configs[0].clone();
    bw.go_backwards = true;
    let bi = Bidirectional::from_layers(layer(&configs[0], i)?, layer(&bw, i)?, MergeMode::Concat)?;
    let ((yf, hf), (yb, hb)) = (
        sequence(bi.forward_layer(), &x)?,
        sequence(bi.backward_layer(), &x)?,
    );
    let y = Tensor::stack(&[yf.transpose(0, 1)?, yb.transpose(0, 1)?], 1)?;
    cases.push((export_bidirectional(&bi)?, y, Tensor::stack(&[hf, hb], 0)?));
    for (k, (bytes, y, h)) in cases.iter().enumerate() {
        let name = format!("export_{k}");
        std::fs::write(out.join(format!("{name}.onnx")), bytes)?;
        let case = json!({
            "name": name, "kind": "onnx", "files": [format!("{name}.onnx")],
            "gru_nodes": [{"node": "gru", "inputs": {"X": tensor_json(&xt)?},
                           "expected": {"Y": tensor_json(y)?, "Y_h": tensor_json(h)?}}],
        });
        std::fs::write(
            out.join(format!("{name}.json")),
            serde_json::to_string(&case)?,
        )?;
        println!("wrote {name}.onnx and {name}.json");
    }
    Ok(())
}
