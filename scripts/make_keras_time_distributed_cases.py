#!/usr/bin/env python3
"""Makes the model cases of tests/data/models with `TimeDistributed` over recurrent layers
and models: a hierarchical document classifier (a sentence encoder model, Embedding with
mask_zero and a Bidirectional GRU, applied to every sentence; a GRU over the sentence
vectors) and a TimeDistributed(GRU) over frames of features, with Keras 3.15.1 (TensorFlow
backend, CPU) and the same model in Keras 2 (tf_keras 2.21.0: `.h5`, `save_weights` `.h5`
and `.keras`), in the schema of tests/data/models/README.md.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/pip install --no-deps tf_keras==2.21.0
    target/anchors-venv/bin/python scripts/make_keras_time_distributed_cases.py tests/data/models
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402
import make_keras2_h5_cases as k2cases  # noqa: E402


def build(k, s, t, vocab):
    L = k.layers
    w_in = k.Input(shape=(t,), dtype="int32")
    h = L.Embedding(vocab, 5, mask_zero=True)(w_in)
    h = L.Bidirectional(L.GRU(4))(h)
    sentence = k.Model(w_in, L.Dense(6, activation="tanh")(h), name="sentence_encoder")
    doc_in = k.Input(shape=(s, t), dtype="int32")
    frames_in = k.Input(shape=(s, t, 3))
    sentences = L.TimeDistributed(sentence)(doc_in)
    frames = L.TimeDistributed(L.GRU(5, reset_after=False))(frames_in)
    doc = L.GRU(6)(sentences)
    clips = L.GRU(3, go_backwards=True)(frames)
    return k.Model([doc_in, frames_in], L.Dense(2)(L.Concatenate()([doc, clips])))


def main(out_dir):
    rng = np.random.default_rng(1135)
    b, s, t, vocab = 3, 4, 6, 20
    ids = rng.integers(1, vocab, size=(b, s, t)).astype(np.int32)
    ids[0, 1, 3:] = 0
    ids[1, 2, 1:] = 0
    ids[2, 3, :] = 0
    frames = rng.normal(size=(b, s, t, 3)).astype(np.float32)
    description = ("documents (batch, 4 sentences, 6 ids): TimeDistributed(sentence encoder "
                   "model: Embedding(20, 5, mask_zero) -> Bidirectional(GRU(4)) -> Dense(6, "
                   "tanh)) -> GRU(6); frames (batch, 4, 6, 3): TimeDistributed(GRU(5, "
                   "reset_after=False)) -> GRU(3, go_backwards); Concatenate -> Dense(2); "
                   "sentences padded with 0, one all padding")
    model = build(keras, s, t, vocab)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                       for w in model.get_weights()])
    out = np.asarray(model([ids, frames], training=False))
    save_case(out_dir, model, "time_distributed_encoders", "Functional, two inputs: " + description,
              ids, extra_inputs=[frames], expected=[out])

    import tf_keras
    model = build(tf_keras, s, t, vocab)
    k2cases.randomize(model, rng)
    k2cases.save_case(out_dir, model, "keras2_time_distributed_encoders",
                      "Keras 2 functional, two inputs: " + description, ids, "int32",
                      extra_inputs=[frames])

    cnn_frames_case(out_dir, rng)


def cnn_frames_case(out_dir, rng):
    """A CNN applied to every frame before a GRU: TimeDistributed(Conv1D) ->
    TimeDistributed(MaxPooling1D) -> TimeDistributed(LayerNormalization) ->
    TimeDistributed(Dropout) -> TimeDistributed(GlobalAveragePooling1D) -> GRU, and a
    TimeDistributed(Flatten) branch."""
    L = keras.layers
    b, s, t = 3, 5, 8
    frames = rng.normal(size=(b, s, t, 3)).astype(np.float32)
    inp = keras.Input(shape=(s, t, 3))
    h = L.TimeDistributed(L.Conv1D(4, 3, padding="same", activation="relu"))(inp)
    h = L.TimeDistributed(L.MaxPooling1D(2))(h)
    h = L.TimeDistributed(L.LayerNormalization())(h)
    h = L.TimeDistributed(L.Dropout(0.3))(h)
    flat = L.TimeDistributed(L.Flatten())(h)
    pooled = L.TimeDistributed(L.GlobalAveragePooling1D())(h)
    g = L.GRU(6)(L.Concatenate()([pooled, flat]))
    model = keras.Model(inp, L.Dense(2)(g), name="time_distributed_cnn_frames")
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                       for w in model.get_weights()])
    save_case(out_dir, model, "time_distributed_cnn_frames",
              "Functional: frames (batch, 5, 8, 3) through TimeDistributed(Conv1D(4, 3, same, "
              "relu)), (MaxPooling1D(2)), (LayerNormalization), (Dropout(0.3)), then "
              "TimeDistributed(GlobalAveragePooling1D) and TimeDistributed(Flatten) -> "
              "Concatenate -> GRU(6) -> Dense(2)", frames, "float32")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
