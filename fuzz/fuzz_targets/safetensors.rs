//! PyTorch `nn.GRU` and `nn.GRUCell` state_dicts: `TorchGru::load` and
//! `GruCell::load_torch` on any bytes must load or return a typed error.
#![no_main]

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fuzz-{}.safetensors", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = gru_candle::io::torch::TorchGru::load(&path, DType::F32, &Device::Cpu);
        let opts = gru_candle::io::torch::TorchLoad::default();
        let _ = gru_candle::GruCell::load_torch(&path, DType::F32, &Device::Cpu, opts);
    }
});
