#!/usr/bin/env python3
"""Makes the model cases of tests/data/models whose functional graphs branch and merge
(Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate; a GRU's returned state
used as a tensor; several model outputs) with Keras 3.15.1 (TensorFlow backend, CPU), in
the schema of tests/data/models/README.md.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_graph_cases.py tests/data/models
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402

L = keras.layers


def main(out_dir):
    rng = np.random.default_rng(1202)
    b, t, vocab = 3, 7, 20

    def randomize(model):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                           for w in model.get_weights()])

    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[1, 4:] = 0.0
    x[2, 6:] = 0.0
    inp = keras.Input(shape=(t, 5))
    h = L.Masking(0.0)(inp)
    d = L.Dense(6)(h)
    g = L.GRU(6, return_sequences=True)(d)
    h = L.Add()([d, g])
    h = L.LayerNormalization()(h)
    fw = L.GRU(4, return_sequences=True)(h)
    bw = L.GRU(4, return_sequences=True, go_backwards=True)(h)
    h = L.Concatenate()([fw, bw])
    h = L.GlobalAveragePooling1D()(h)
    y = L.Dense(3)(h)
    model = keras.Model(inp, y, name="residual_gru_concat")
    randomize(model)
    save_case(out_dir, model, "residual_gru_concat",
              "Functional: Masking -> Dense(6) -> GRU(6, return_sequences); Add(dense, gru) -> "
              "LayerNormalization -> GRU(4) and GRU(4, go_backwards) -> Concatenate -> "
              "GlobalAveragePooling1D (masked) -> Dense(3); rows 1, 2 padded", x, "float32")

    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    inp = keras.Input(shape=(t, 5))
    seq, state = L.GRU(6, return_sequences=True, return_state=True)(inp)
    a = L.GlobalMaxPooling1D()(seq)
    d = L.Dense(6)(state)
    m = L.Multiply()([a, d])
    mx = L.Maximum()([a, state])
    mn = L.Minimum()([d, state])
    avg = L.Average()([m, mx, mn])
    sub = L.Subtract()([avg, state])
    out1 = L.Dense(2)(sub)
    out2 = L.Dense(3)(L.Concatenate()([a, state]))
    model = keras.Model(inp, [out1, out2], name="gru_state_merges_two_outputs")
    randomize(model)
    save_case(out_dir, model, "gru_state_merges_two_outputs",
              "Functional: GRU(6, return_sequences, return_state) -> its sequence max-pooled and "
              "its state through Multiply, Maximum, Minimum, Average, Subtract and Concatenate "
              "-> two outputs Dense(2), Dense(3)", x, "float32")

    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[0, 3:] = 0
    ids[2, 5:] = 0
    inp = keras.Input(shape=(t,), dtype="int32")
    e = L.Embedding(vocab, 5, mask_zero=True)(inp)
    fw = L.GRU(5, return_sequences=True)(e)
    bw = L.GRU(5, return_sequences=True, go_backwards=True, reset_after=False)(e)
    h = L.Add()([fw, bw])
    h = L.GRU(3)(h)
    y = L.Dense(2, activation="softmax")(h)
    model = keras.Model(inp, y, name="embedding_two_grus_add")
    randomize(model)
    save_case(out_dir, model, "embedding_two_grus_add",
              "Functional: Embedding(20, 5, mask_zero) -> GRU(5) and GRU(5, go_backwards, "
              "reset_after=False) -> Add -> GRU(3) -> Dense(2, softmax); ids right-padded with 0",
              ids)

    # An encoder-decoder: two model inputs, the decoder GRU starts from the encoder's state.
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[1, 5:] = 0.0
    x2 = rng.normal(size=(b, 4, 3)).astype(np.float32)
    enc_in = keras.Input(shape=(t, 5))
    dec_in = keras.Input(shape=(4, 3))
    _, state = L.GRU(6, return_state=True)(L.Masking(0.0)(enc_in))
    dec = L.GRU(6, return_sequences=True)(dec_in, initial_state=state)
    y = L.TimeDistributed(L.Dense(2))(dec)
    model = keras.Model([enc_in, dec_in], y, name="encoder_decoder_initial_state")
    randomize(model)
    name = "encoder_decoder_initial_state"
    out = np.asarray(model([x, x2], training=False))
    save_case(out_dir, model, name,
              "Functional, two inputs: Masking -> GRU(6, return_state) encodes the first; "
              "GRU(6, return_sequences, initial_state=its state) decodes the second -> "
              "TimeDistributed(Dense(2)); encoder row 1 padded after step 5", x, "float32",
              extra_inputs=[x2], expected=[out])

    # A bidirectional encoder's two states, concatenated, start a decoder GRU.
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[0, 4:] = 0.0
    x2 = rng.normal(size=(b, 3, 2)).astype(np.float32)
    enc_in = keras.Input(shape=(t, 5))
    dec_in = keras.Input(shape=(3, 2))
    seq, fw, bw = L.Bidirectional(L.GRU(4, return_state=True), merge_mode="sum")(
        L.Masking(0.0)(enc_in))
    state = L.Concatenate()([fw, bw])
    dec = L.GRU(8, return_sequences=True)(dec_in, initial_state=state)
    y = L.Dense(2)(dec)
    model = keras.Model([enc_in, dec_in], [y, seq], name="bidirectional_states_decoder")
    randomize(model)
    name = "bidirectional_states_decoder"
    outs = [np.asarray(o) for o in model([x, x2], training=False)]
    save_case(out_dir, model, name,
              "Functional, two inputs: Masking -> Bidirectional(GRU(4, return_state), sum) "
              "encodes the first; Concatenate(its forward and backward states) starts "
              "GRU(8, return_sequences) over the second -> Dense(2); outputs [decoder, encoder]",
              x, "float32", extra_inputs=[x2], expected=outs)

    # Self-attention over a masked GRU sequence (the mask argument is a list, one per input).
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[1, 4:] = 0
    ids[2, 2:] = 0
    inp = keras.Input(shape=(t,), dtype="int32")
    h = L.GRU(6, return_sequences=True)(L.Embedding(vocab, 5, mask_zero=True)(inp))
    a = L.Attention(use_scale=True)([h, h])
    y = L.Dense(3)(L.GlobalAveragePooling1D()(a))
    model = keras.Model(inp, y, name="gru_self_attention")
    randomize(model)
    save_case(out_dir, model, "gru_self_attention",
              "Functional: Embedding(20, 5, mask_zero) -> GRU(6, return_sequences) -> "
              "Attention(use_scale)([h, h]) with the ids mask on queries and values -> "
              "GlobalAveragePooling1D -> Dense(3)", ids)

    # An attention decoder: AdditiveAttention over the masked encoder sequence, and a causal
    # concat-score Attention returning its scores.
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[0, 5:] = 0.0
    x2 = rng.normal(size=(b, 4, 3)).astype(np.float32)
    enc_in = keras.Input(shape=(t, 5))
    dec_in = keras.Input(shape=(4, 3))
    enc, state = L.GRU(6, return_sequences=True, return_state=True)(L.Masking(0.0)(enc_in))
    dec = L.GRU(6, return_sequences=True)(dec_in, initial_state=state)
    ctx = L.AdditiveAttention(use_scale=True)([dec, enc])
    self_att, scores = L.Attention(use_scale=True, score_mode="concat")(
        [dec, dec], use_causal_mask=True, return_attention_scores=True)
    y = L.Dense(2)(L.Concatenate()([dec, ctx, self_att]))
    model = keras.Model([enc_in, dec_in], [y, scores], name="gru_attention_decoder")
    randomize(model)
    name = "gru_attention_decoder"
    outs = [np.asarray(o) for o in model([x, x2], training=False)]
    save_case(out_dir, model, name,
              "Functional, two inputs: masked encoder GRU(6) sequence and state; decoder "
              "GRU(6, initial_state) -> AdditiveAttention(use_scale)([dec, enc]) and "
              "Attention(use_scale, concat)([dec, dec], causal, scores) -> Concatenate -> "
              "Dense(2); outputs [Dense, attention scores]", x, "float32",
              extra_inputs=[x2], expected=outs)

    # A stateful GRU (streaming): the state carries over from one call to the next until
    # reset_states(); the case holds the outputs of two calls in a row.
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x_next = rng.normal(size=(b, t, 5)).astype(np.float32)
    model = keras.Sequential([
        keras.Input(batch_shape=(b, t, 5)),
        L.GRU(4, stateful=True, return_sequences=True),
        L.GRU(3, stateful=True),
        L.Dense(2),
    ], name="stateful_grus")
    randomize(model)
    name = "stateful_grus"
    first = np.asarray(model(x, training=False))
    second = np.asarray(model(x_next, training=False))
    for layer in model.layers:
        if hasattr(layer, "reset_states"):
            layer.reset_states()
    save_case(out_dir, model, name,
              "Sequential of batch 3: GRU(4, stateful, return_sequences) -> GRU(3, stateful) -> "
              "Dense(2); `expected` is the first call from zero states, `next_call` the call "
              "that follows on `next_inputs`", x, "float32", expected=[first])
    path = os.path.join(out_dir, name + ".json")
    with open(path) as fh:
        case = json.load(fh)
    case["next_inputs"] = x_next.tolist()
    case["next_call"] = second.astype(np.float64).tolist()
    with open(path, "w") as fh:
        json.dump(case, fh)

    masked_merges_case(out_dir, rng)


def masked_merges_case(out_dir, rng):
    """Keras 3's Multiply, Maximum and Minimum over masked inputs: a masked entry counts
    as 1 in a product, takes the other side in a maximum or minimum. Two inputs padded at
    different steps, each through Masking and a GRU; a Dense of the unmasked input joins
    one product; every output a sequence, padded steps included."""
    L = keras.layers
    b, t = 3, 7
    x = rng.normal(size=(b, t, 4)).astype(np.float32)
    x[0, 5:] = 0.0
    x[2, 3:] = 0.0
    x2 = rng.normal(size=(b, t, 4)).astype(np.float32)
    x2[1, 4:] = 0.0
    x2[2, 6:] = 0.0
    a_in = keras.Input(shape=(t, 4))
    b_in = keras.Input(shape=(t, 4))
    a = L.GRU(5, return_sequences=True)(L.Masking(0.0)(a_in))
    c = L.GRU(5, return_sequences=True)(L.Masking(0.0)(b_in))
    plain = L.Dense(5)(b_in)
    both = L.Multiply()([a, c])
    one = L.Multiply()([a, plain])
    hi = L.Maximum()([a, c, plain])
    lo = L.Minimum()([c, a])
    y = L.Dense(2)(L.GRU(3, return_sequences=True)(L.Add()([both, lo])))
    model = keras.Model([a_in, b_in], [y, one, hi, lo], name="masked_merges")
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                       for w in model.get_weights()])
    outs = [np.asarray(o) for o in model([x, x2], training=False)]
    save_case(out_dir, model, "masked_merges",
              "Functional, two inputs padded at different steps: Masking -> GRU(5, "
              "return_sequences) each, Dense(5) of the second unmasked; Multiply(both), "
              "Multiply(masked, unmasked), Maximum(both, unmasked), Minimum(both) (Keras 3 "
              "replaces masked entries); Add(product, minimum) -> GRU(3, return_sequences) -> "
              "Dense(2); outputs [Dense, Multiply(masked, unmasked), Maximum, Minimum]",
              x, "float32", extra_inputs=[x2], expected=outs)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
