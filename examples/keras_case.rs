//! Runs golden cases (Keras 3 GRU, golden schema) through the Candle layer.
//!
//! `cargo run --release --example keras_case -- PATH...` (case files or folders). Prints one
//! line per case (name, PASS/FAIL, max abs errors) and `N passed, M failed`; exits 0 only
//! when every case passes. A case that cannot run is a FAIL with its reason.

use candle_gru::golden::{case_files, load_case, run_case};
use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: keras_case PATH... (golden case files or folders)");
        std::process::exit(2);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for arg in &args {
        let files = match case_files(arg) {
            Ok(f) => f,
            Err(e) => {
                println!("{:<55} FAIL  {e}", arg.display());
                failed += 1;
                continue;
            }
        };
        for file in files {
            match load_case(&file) {
                Ok(case) => {
                    let report = run_case(&case);
                    println!("{}", report.line());
                    if report.passed() {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                }
                Err(e) => {
                    println!("{:<55} FAIL  could not load: {e}", file.display());
                    failed += 1;
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 && passed > 0 { 0 } else { 1 });
}
