//! Runs model-file cases (Keras `.keras`/`.weights.h5`, PyTorch safetensors) through the
//! loaders: `cargo run --release --example model_case -- PATH...` (case JSON files or
//! folders). One line per case, then `N passed, M failed`; exit 0 only when all pass.

use gru_support::golden::models::{model_case_files, run_model_case};
use gru_support::golden::run_paths;
use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: model_case PATH... (model case JSON files or folders)");
        std::process::exit(2);
    }
    std::process::exit(run_paths(&args, model_case_files, |file| {
        let report = run_model_case(file)?;
        Ok((report.line(), report.passed()))
    }));
}
