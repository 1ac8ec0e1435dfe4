//! ONNX models: `OnnxModel::from_bytes` on any bytes must load or return a typed error, and
//! every GRU node that loads must run. Seed the corpus with `tests/data/onnx/*.onnx`.
#![no_main]

use candle_core::{DType, Device, Tensor};
use gru_candle::io::onnx::{Layout, OnnxModel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = gru_candle::Limits { max_weight_bytes: 64 << 20, max_member_bytes: 64 << 20 };
    let Ok(model) = OnnxModel::from_bytes(data, "fuzz.onnx", DType::F32, &Device::Cpu, &limits) else {
        return;
    };
    for g in &model.grus {
        let Ok(x) = Tensor::ones((3, 2, g.input_size), DType::F32, &Device::Cpu) else {
            return;
        };
        let x = match g.layout {
            Layout::SeqMajor => x,
            Layout::BatchMajor => x.transpose(0, 1).and_then(|t| t.contiguous()).expect("transpose"),
        };
        let _ = g.forward(&x, None, None);
    }
});
