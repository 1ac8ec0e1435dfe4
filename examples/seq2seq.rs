//! Train on whole sequences, decode one step at a time: an encoder-decoder of two GRUs
//! learns to reverse 3..=6 digits (teacher forcing: the decoder runs over the whole target
//! in one call), then decodes greedily with the decoder's `GruCell`, one step per token.
//! Prints one line per epoch (loss, held-out exact matches of the step-by-step decoding)
//! and a few decoded examples.
//!
//! `cargo run --release --example seq2seq`

use gru_support::decoder::{config, train};

fn main() -> anyhow::Result<()> {
    let cfg = config();
    let report = train(&cfg, |e| {
        println!(
            "epoch {:>2}  loss {:.4}  held-out exact {:.1}%  {:.1}s",
            e.epoch,
            e.loss,
            100.0 * e.exact,
            e.elapsed_s
        )
    })?;
    let t = &report.test;
    let decoded = report
        .model
        .decode(&t.source.narrow(0, 0, 5)?, &t.source_mask.narrow(0, 0, 5)?)?;
    let sources: Vec<Vec<u32>> = t.source.narrow(0, 0, 5)?.to_vec2()?;
    for (src, out) in sources.iter().zip(&decoded) {
        let digits: Vec<u32> = src
            .iter()
            .copied()
            .filter(|&d| d != 0)
            .map(|d| d - 1)
            .collect();
        let back: Vec<u32> = out
            .iter()
            .filter(|&&d| (1..=10).contains(&d))
            .map(|d| d - 1)
            .collect();
        println!("{digits:?} -> {back:?}");
    }
    Ok(())
}
