//! The seq2seq example: an encoder-decoder trained with teacher forcing on whole sequences
//! decodes greedily, one GruCell step per token, to the stated accuracy; and the cell's
//! steps decode exactly what one-step calls of the decoder layer decode.

use candle_core::{Module, Tensor, D};
use gru_candle::CallOptions;
use gru_support::decoder::{config, train, END, MAX_LEN, START};

#[test]
fn step_by_step_decoding_reverses_held_out_sequences() {
    let cfg = config();
    let report = train(&cfg, |e| {
        println!("epoch {} loss {:.4} exact {:.3}", e.epoch, e.loss, e.exact)
    })
    .unwrap();
    let (first, last) = (report.epochs[0], *report.epochs.last().unwrap());
    assert!(
        last.loss < 0.1 * first.loss,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    // Chance is about 10^-4.5; the README states >= 95% exact.
    assert!(last.exact >= 0.95, "held-out exact {}", last.exact);

    // The decoder layer called one step at a time (its state passed back in) decodes the
    // same tokens as its cell.
    let (m, t) = (&report.model, &report.test);
    let by_cell = m.decode(&t.source, &t.source_mask).unwrap();
    let n = t.source.dim(0).unwrap();
    let mut h = m.encode(&t.source, &t.source_mask).unwrap();
    let mut tokens = Tensor::full(START, n, t.source.device()).unwrap();
    let embedding = candle_nn::Embedding::new(
        report.varmap.data().lock().unwrap()["embedding.embeddings"]
            .as_tensor()
            .clone(),
        cfg.embedding_dim,
    );
    let head_w = report.varmap.data().lock().unwrap()["head.kernel"]
        .as_tensor()
        .clone();
    let head_b = report.varmap.data().lock().unwrap()["head.bias"]
        .as_tensor()
        .clone();
    let mut by_layer: Vec<Vec<u32>> = vec![Vec::new(); n];
    for _ in 0..=MAX_LEN {
        let x = embedding.forward(&tokens).unwrap().unsqueeze(1).unwrap();
        let opts = CallOptions {
            initial_state: Some(&h),
            ..Default::default()
        };
        h = m.decoder.call(&x, opts).unwrap().output.squeeze(1).unwrap();
        let logits = h.matmul(&head_w).unwrap().broadcast_add(&head_b).unwrap();
        tokens = logits.argmax(D::Minus1).unwrap();
        for (seq, tok) in by_layer.iter_mut().zip(tokens.to_vec1::<u32>().unwrap()) {
            if seq.last() != Some(&END) {
                seq.push(tok);
            }
        }
    }
    assert_eq!(by_cell, by_layer);
}
