#!/usr/bin/env python3
"""Makes the model cases of tests/data/models whose layers are called more than once
(shared layers: a Siamese encoder, a Dense applied before and after a GRU) or are models
themselves (a Sequential or functional encoder nested in another model, masks flowing in
and out of it) with Keras 3.15.1 (TensorFlow backend, CPU), in the schema of
tests/data/models/README.md.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_shared_cases.py tests/data/models
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402

L = keras.layers


def gradient_record(out_dir, name, model, inputs):
    """Adds `training` to the case: for the loss mean(output^2) + sum(model.losses) of one
    inference call, `losses` (the regularization and activity losses), `total_loss`, and the
    gradient of every variable by its path in the weights file (a shared layer's variables
    take the gradients of all its calls)."""
    import h5py
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = model(inputs, training=False)
        extra = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
        total = tf.reduce_mean(tf.square(out)) + extra
    grads = tape.gradient(total, model.trainable_variables)
    paths = {}
    with h5py.File(os.path.join(out_dir, name + ".weights.h5")) as f:
        f.visititems(lambda p, o: paths.__setitem__(p, np.asarray(o))
                     if isinstance(o, h5py.Dataset) else None)

    def path_of(v):
        hits = [p for p, a in paths.items()
                if a.shape == tuple(v.shape) and np.array_equal(a, np.asarray(v))]
        assert len(hits) == 1, (v.path, hits)
        return hits[0]
    path = os.path.join(out_dir, name + ".json")
    with open(path) as fh:
        case = json.load(fh)
    case["training"] = {
        "losses": float(extra),
        "total_loss": float(total),
        "gradients": {path_of(v): np.asarray(tf.convert_to_tensor(g)).astype(np.float64)
                      .ravel().tolist() for v, g in zip(model.trainable_variables, grads)},
    }
    with open(path, "w") as fh:
        json.dump(case, fh)


def main(out_dir):
    rng = np.random.default_rng(1130)
    b, t, vocab = 3, 7, 20

    def randomize(model):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                           for w in model.get_weights()])

    # A Siamese model: one nested Sequential encoder (Embedding(mask_zero) -> GRU) and one
    # Dense, each called on both inputs.
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[0, 4:] = 0
    ids[2, 2:] = 0
    ids2 = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids2[1, 3:] = 0
    a_in = keras.Input(shape=(t,), dtype="int32")
    b_in = keras.Input(shape=(t,), dtype="int32")
    enc = keras.Sequential([
        L.Embedding(vocab, 6, mask_zero=True),
        L.GRU(5, kernel_regularizer=keras.regularizers.L2(1e-2)),
    ], name="encoder")
    dense = L.Dense(5, activation="tanh", name="shared_dense",
                    activity_regularizer=keras.regularizers.L2(1e-2))
    ea, eb = dense(enc(a_in)), dense(enc(b_in))
    h = L.Concatenate()([ea, eb, L.Subtract()([ea, eb])])
    y = L.Dense(1, activation="sigmoid")(h)
    model = keras.Model([a_in, b_in], y, name="siamese_nested_encoder")
    randomize(model)
    name = "siamese_nested_encoder"
    out = np.asarray(model([ids, ids2], training=False))
    save_case(out_dir, model, name,
              "Functional, two id inputs: one nested Sequential encoder (Embedding(20, 6, "
              "mask_zero) -> GRU(5, kernel L2)) and one Dense(5, tanh, activity L2) called on "
              "each; Concatenate([a, b, a - b]) -> Dense(1, sigmoid); ids right-padded with 0; "
              "with Keras' gradients", ids, extra_inputs=[ids2], expected=[out])
    gradient_record(out_dir, name, model, [ids, ids2])

    # A Dense called before a GRU and again on the GRU's sequence (its second call takes a
    # layer that comes after it in the config), and a GRU called on two branches.
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[1, 4:] = 0.0
    x[2, 6:] = 0.0
    inp = keras.Input(shape=(t, 5))
    m = L.Masking(0.0)(inp)
    proj = L.Dense(5, name="proj")
    gru = L.GRU(5, return_sequences=True, name="shared_gru")
    p1 = proj(m)
    g1 = gru(p1)
    p2 = proj(g1)
    g2 = gru(m)
    h = L.Add()([p2, g2])
    h = L.GlobalAveragePooling1D()(h)
    y = L.Dense(2)(h)
    model = keras.Model(inp, y, name="shared_dense_and_gru")
    randomize(model)
    save_case(out_dir, model, "shared_dense_and_gru",
              "Functional: Masking -> Dense(5) `proj` -> GRU(5, return_sequences) `shared_gru` "
              "-> proj again; shared_gru again on the masked input; Add -> "
              "GlobalAveragePooling1D (masked) -> Dense(2); rows 1, 2 padded; with Keras' "
              "gradients", x, "float32")
    gradient_record(out_dir, "shared_dense_and_gru", model, x)

    # A nested functional encoder (itself holding a nested Sequential) with two outputs:
    # the outer Masking's mask flows into its GRU, its sequence carries the mask out to
    # the pooling; its state starts the outer decoder GRU.
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[0, 3:] = 0.0
    x[2, 5:] = 0.0
    x2 = rng.normal(size=(b, 4, 3)).astype(np.float32)
    e_in = keras.Input(shape=(t, 5))
    pre = keras.Sequential([L.Dense(6), L.LayerNormalization()], name="pre")
    seq, state = L.GRU(6, return_sequences=True, return_state=True)(pre(e_in))
    encoder = keras.Model(e_in, [seq, state], name="encoder")
    enc_in = keras.Input(shape=(t, 5))
    dec_in = keras.Input(shape=(4, 3))
    seq, state = encoder(L.Masking(0.0)(enc_in))
    dec = L.GRU(6)(dec_in, initial_state=state)
    pooled = L.GlobalAveragePooling1D()(seq)
    y = L.Dense(2)(L.Concatenate()([pooled, dec]))
    model = keras.Model([enc_in, dec_in], y, name="nested_functional_encoder")
    randomize(model)
    name = "nested_functional_encoder"
    out = np.asarray(model([x, x2], training=False))
    save_case(out_dir, model, name,
              "Functional, two inputs: Masking -> nested functional encoder (nested "
              "Sequential(Dense(6), LayerNormalization) -> GRU(6, return_sequences, "
              "return_state)); its sequence average-pooled with the mask it carries out, its "
              "state starts GRU(6) over the second input; Concatenate -> Dense(2); encoder "
              "rows 0, 2 padded", x, "float32", extra_inputs=[x2], expected=[out])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
