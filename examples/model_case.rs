//! Runs model-file cases (Keras `.keras`/`.weights.h5`, PyTorch safetensors) through the
//! loaders: `cargo run --release --example model_case -- PATH...` (case JSON files or
//! folders). One line per case, then `N passed, M failed`; exit 0 only when all pass.

use candle_gru::golden::models::{model_case_files, run_model_case};
use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: model_case PATH... (model case JSON files or folders)");
        std::process::exit(2);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for arg in &args {
        let files = match model_case_files(arg) {
            Ok(f) => f,
            Err(e) => {
                println!("{:<30} FAIL  {e}", arg.display());
                failed += 1;
                continue;
            }
        };
        for f in files {
            match run_model_case(&f) {
                Ok(r) => {
                    println!("{}", r.line());
                    if r.passed() {
                        passed += 1
                    } else {
                        failed += 1
                    }
                }
                Err(e) => {
                    println!("{:<30} FAIL  {e}", f.display());
                    failed += 1;
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 && passed > 0 { 0 } else { 1 });
}
