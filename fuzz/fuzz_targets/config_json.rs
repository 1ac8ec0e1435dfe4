//! GRU config dicts: `GruConfig::from_keras_json` (and `GruCellConfig`'s) on any JSON. What
//! parses must round-trip through `to_keras_json` unchanged, and a small one must build a
//! layer and run a call.
#![no_main]

use candle_core::{DType, Device, Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(cell) = gru_core::GruCellConfig::from_keras_json(&v) {
        let back = gru_core::GruCellConfig::from_keras_json(&cell.to_keras_json()).expect("cell");
        assert_eq!(back.to_keras_json(), cell.to_keras_json());
    }
    let Ok(cfg) = gru_core::GruConfig::from_keras_json(&v) else {
        return;
    };
    let back = gru_core::GruConfig::from_keras_json(&cfg.to_keras_json()).expect("round trip");
    assert_eq!(back.to_keras_json(), cfg.to_keras_json());
    if cfg.units > 32 {
        return;
    }
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let Ok(g) = gru_candle::Gru::new(cfg, 3, vb) else {
        return;
    };
    let x = Tensor::ones((2, 3, 3), DType::F32, &Device::Cpu).expect("input");
    let _ = g.call(&x, gru_candle::CallOptions::training());
});
