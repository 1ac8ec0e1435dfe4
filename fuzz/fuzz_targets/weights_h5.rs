//! `.weights.h5` files: `KerasModel::load_weights_h5` on any bytes, for the config of the
//! test model `stacked_gru_dense` (Input -> GRU -> GRU -> Dense), must load or return a
//! typed error. Seed the corpus with `tests/data/models/*.weights.h5`.
#![no_main]

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn config() -> &'static serde_json::Value {
    static CONFIG: OnceLock<serde_json::Value> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let archive = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/models/stacked_gru_dense.keras");
        gru_candle::io::keras::KerasModel::archive_config(archive.as_ref()).expect("test model")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fuzz-{}.weights.h5", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = gru_candle::io::keras::KerasModel::load_weights_h5(config(), &path, DType::F32, &Device::Cpu);
    }
});
