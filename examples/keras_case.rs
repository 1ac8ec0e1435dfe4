//! Runs golden cases (Keras 3 GRU, golden schema) through the Candle layer.
//!
//! `cargo run --release --example keras_case -- PATH...` (case files or folders). Prints one
//! line per case (name, PASS/FAIL, max abs errors) and `N passed, M failed`; exits 0 only
//! when every case passes. A case that cannot run is a FAIL with its reason.

use gru_support::golden::{case_files, load_case, run_case, run_paths};
use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: keras_case PATH... (golden case files or folders)");
        std::process::exit(2);
    }
    std::process::exit(run_paths(&args, case_files, |file| {
        let report = run_case(&load_case(file)?);
        Ok((report.line(), report.passed()))
    }));
}
