#!/usr/bin/env python3
"""Makes the model cases of tests/data/models with `MultiHeadAttention` over GRU sequences
with Keras 3.15.1 (TensorFlow backend, CPU), in the schema of tests/data/models/README.md:
self-attention over a masked embedding GRU with a residual LayerNormalization, and an
encoder-decoder whose decoder attends causally to itself and to the masked encoder
(cross-attention with its own key, `output_shape`, `value_dim`, dropout, scores returned).

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_mha_cases.py tests/data/models
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402
from make_keras_shared_cases import gradient_record  # noqa: E402

L = keras.layers


def main(out_dir):
    rng = np.random.default_rng(1131)
    b, t, vocab = 3, 7, 20

    def randomize(model):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                           for w in model.get_weights()])

    # Self-attention over a masked GRU sequence (Keras' default dot-product path: padded
    # queries attend uniformly), residual, LayerNormalization, masked average.
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[1, 4:] = 0
    ids[2, 2:] = 0
    inp = keras.Input(shape=(t,), dtype="int32")
    h = L.GRU(8, return_sequences=True)(L.Embedding(vocab, 5, mask_zero=True)(inp))
    a = L.MultiHeadAttention(num_heads=2, key_dim=3,
                             kernel_regularizer=keras.regularizers.L2(1e-2),
                             activity_regularizer=keras.regularizers.L2(1e-3))(h, h)
    h = L.LayerNormalization()(L.Add()([h, a]))
    y = L.Dense(3)(L.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, y, name="gru_multi_head_self_attention")
    randomize(model)
    name = "gru_multi_head_self_attention"
    save_case(out_dir, model, name,
              "Functional: Embedding(20, 5, mask_zero) -> GRU(8, return_sequences) -> "
              "MultiHeadAttention(2 heads, key_dim 3, kernel L2, activity L2)(h, h) with the "
              "ids mask -> Add(h, "
              "attention) -> LayerNormalization -> GlobalAveragePooling1D -> Dense(3); with "
              "Keras' gradients", ids)
    gradient_record(out_dir, name, model, ids)

    # An encoder-decoder: causal self-attention over the decoder GRU without bias; cross-
    # attention to the masked encoder with a separate key, value_dim, output_shape and
    # dropout (Keras' explicit path: padded queries give zero weights), scores returned.
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[0, 4:] = 0.0
    x[2, 6:] = 0.0
    x2 = rng.normal(size=(b, 5, 3)).astype(np.float32)
    enc_in = keras.Input(shape=(t, 5))
    dec_in = keras.Input(shape=(5, 3))
    enc, state = L.GRU(6, return_sequences=True, return_state=True)(L.Masking(0.0)(enc_in))
    keys = L.Dense(4)(enc)
    dec = L.GRU(6, return_sequences=True)(dec_in, initial_state=state)
    self_att = L.MultiHeadAttention(num_heads=3, key_dim=2, use_bias=False)(
        dec, dec, use_causal_mask=True)
    ctx, scores = L.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3, output_shape=5,
                                       dropout=0.2)(
        self_att, enc, keys, return_attention_scores=True)
    y = L.Dense(2)(L.Concatenate()([dec, ctx]))
    model = keras.Model([enc_in, dec_in], [y, scores], name="gru_multi_head_decoder")
    randomize(model)
    name = "gru_multi_head_decoder"
    outs = [np.asarray(o) for o in model([x, x2], training=False)]
    save_case(out_dir, model, name,
              "Functional, two inputs: masked encoder GRU(6) sequence and state, Dense(4) keys; "
              "decoder GRU(6, initial_state) -> causal MultiHeadAttention(3 heads, key_dim 2, "
              "no bias) over itself -> MultiHeadAttention(2 heads, key_dim 4, value_dim 3, "
              "output_shape 5, dropout 0.2)(query, encoder, keys, scores returned) -> "
              "Concatenate(decoder, context) -> Dense(2); outputs [Dense, scores]; encoder "
              "rows 0, 2 padded", x, "float32", extra_inputs=[x2], expected=outs)

    # Both of Keras' paths where they differ: a padded query sees no value. The default
    # path (dot_product_attention) gives it the values' average; with dropout Keras builds
    # the weights itself and gives it zeros (then the output bias). Both sequences are
    # model outputs, padded steps included.
    x = rng.normal(size=(b, t, 4)).astype(np.float32)
    x[1, 3:] = 0.0
    x[2, 5:] = 0.0
    inp = keras.Input(shape=(t, 4))
    h = L.GRU(6, return_sequences=True)(L.Masking(0.0)(inp))
    fused = L.MultiHeadAttention(num_heads=2, key_dim=3)(h, h)
    explicit = L.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.1)(h, h)
    model = keras.Model(inp, [fused, explicit], name="gru_multi_head_padded_queries")
    randomize(model)
    save_case(out_dir, model, "gru_multi_head_padded_queries",
              "Functional: Masking -> GRU(6, return_sequences) -> MultiHeadAttention(2 heads, "
              "key_dim 3)(h, h) and the same with dropout 0.1; outputs both sequences, padded "
              "steps included (Keras' two attention paths); rows 1, 2 padded", x, "float32")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
