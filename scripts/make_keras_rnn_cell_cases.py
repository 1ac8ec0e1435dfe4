#!/usr/bin/env python3
"""Makes the model cases of tests/data/models whose GRUs are written as `RNN(GRUCell(...))`
(the generic recurrent layer over Keras' GRU cell, which `GRU` itself runs) with Keras
3.15.1 (TensorFlow backend, CPU), and the same model in Keras 2 (tf_keras 2.21.0: `.h5`,
`save_weights` `.h5` and `.keras`), in the schema of tests/data/models/README.md.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/pip install --no-deps tf_keras==2.21.0
    target/anchors-venv/bin/python scripts/make_keras_rnn_cell_cases.py tests/data/models
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402
import make_keras2_h5_cases as k2cases  # noqa: E402


def build(k, t):
    """Masking -> RNN(GRUCell(6), return_sequences) -> Bidirectional(RNN(GRUCell(3,
    reset_after=False), return_sequences), sum) -> RNN(GRUCell(4), go_backwards,
    return_state) -> Dense(2) on the state."""
    L = k.layers
    inp = k.Input(shape=(t, 5))
    h = L.Masking(0.0)(inp)
    h = L.RNN(L.GRUCell(6), return_sequences=True)(h)
    h = L.Bidirectional(L.RNN(L.GRUCell(3, reset_after=False), return_sequences=True),
                        merge_mode="sum")(h)
    _, state = L.RNN(L.GRUCell(4), go_backwards=True, return_state=True)(h)
    return k.Model(inp, L.Dense(2)(state))


def build_stacked(k, t):
    """Masking -> RNN([GRUCell(5), GRUCell(3, reset_after=False)], return_sequences,
    go_backwards) -> RNN([GRUCell(4), GRUCell(2)], return_state) -> Dense(2) on the
    output and the first cell's state; outputs [Dense, second cell's state]."""
    L = k.layers
    inp = k.Input(shape=(t, 5))
    h = L.Masking(0.0)(inp)
    h = L.RNN([L.GRUCell(5), L.GRUCell(3, reset_after=False)], return_sequences=True,
              go_backwards=True)(h)
    out, s1, s2 = L.RNN([L.GRUCell(4), L.GRUCell(2)], return_state=True)(h)
    y = L.Dense(2)(L.Concatenate()([out, s1]))
    return k.Model(inp, [y, s2])


def main(out_dir):
    rng = np.random.default_rng(1133)
    b, t = 3, 7
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[0, 5:] = 0.0
    x[2, 3:] = 0.0
    description = ("Masking -> RNN(GRUCell(6), return_sequences) -> Bidirectional(RNN(GRUCell(3, "
                   "reset_after=False), return_sequences), sum) -> RNN(GRUCell(4), go_backwards, "
                   "return_state) -> Dense(2) on its state; rows 0, 2 padded")
    model = build(keras, t)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                       for w in model.get_weights()])
    save_case(out_dir, model, "rnn_gru_cells", "Functional: " + description, x, "float32")

    import tf_keras
    model = build(tf_keras, t)
    k2cases.randomize(model, rng)
    k2cases.save_case(out_dir, model, "keras2_rnn_gru_cells", "Keras 2 functional: " + description,
                      x, "float32")

    # Stacked cells: RNN([GRUCell, GRUCell]) (StackedRNNCells).
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[1, 4:] = 0.0
    x[2, 6:] = 0.0
    description = ("Masking -> RNN([GRUCell(5), GRUCell(3, reset_after=False)], "
                   "return_sequences, go_backwards) -> RNN([GRUCell(4), GRUCell(2)], "
                   "return_state) -> Dense(2) on Concatenate(output, first cell's state); "
                   "outputs [Dense, second cell's state]; rows 1, 2 padded")
    model = build_stacked(keras, t)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                       for w in model.get_weights()])
    outs = [np.asarray(o) for o in model(x, training=False)]
    save_case(out_dir, model, "rnn_stacked_gru_cells", "Functional: " + description, x,
              "float32", expected=outs)
    model = build_stacked(tf_keras, t)
    k2cases.randomize(model, rng)
    k2cases.save_case(out_dir, model, "keras2_rnn_stacked_gru_cells",
                      "Keras 2 functional: " + description, x, "float32")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
