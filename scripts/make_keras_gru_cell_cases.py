#!/usr/bin/env python3
"""Makes tests/data/cell: Keras 3.15.1 `GRUCell`s (TensorFlow backend, CPU) stepped by hand,
as a decoder loop steps them, with the states and gradients Keras computes, and Keras'
answers to `GRUCell.get_config()` / `from_config()` (tests/data/cell/README.md has the
schema).

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_gru_cell_cases.py tests/data/cell
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def values(a):
    return np.asarray(tf.cast(a, tf.float64)).tolist()


def run_steps(cell, xs, h0, cotangents, dtype):
    """Steps the cell over xs (T, B, F) from h0 under a tape; the loss is
    sum_t sum(h_t * c_t). Returns (states, grads)."""
    xs = [tf.constant(x, dtype=dtype) for x in xs]
    h0 = tf.constant(h0, dtype=dtype)
    watched = {"kernel": cell.kernel, "recurrent_kernel": cell.recurrent_kernel}
    if cell.use_bias:
        watched["bias"] = cell.bias
    with tf.GradientTape(persistent=True) as tape:
        for x in xs:
            tape.watch(x)
        tape.watch(h0)
        h, states, loss = h0, [], 0.0
        for x, c in zip(xs, cotangents):
            out, new_states = cell(x, [h], training=False)
            h = new_states[0]
            states.append(out)
            loss = loss + tf.reduce_sum(tf.cast(out, tf.float64) * c)
    grads = {k: values(tape.gradient(loss, v.value)) for k, v in watched.items()}
    grads["inputs"] = [values(tape.gradient(loss, x)) for x in xs]
    grads["initial_state"] = values(tape.gradient(loss, h0))
    return [values(s) for s in states], grads


def case(out_dir, name, description, kwargs, rng, b=3, t=5, f=4, u=6, policies=("float32", "float64")):
    xs = rng.normal(size=(t, b, f))
    h0 = rng.normal(size=(b, u)) * 0.5
    cot = rng.normal(size=(t, b, u))
    weights = None
    expected, gradients, config = {}, {}, None
    for p in policies:
        cell = keras.layers.GRUCell(u, dtype=p, **kwargs)
        cell.build((b, f))
        if weights is None:
            weights = [rng.normal(size=w.shape) * 0.5 for w in cell.get_weights()]
        cell.set_weights([w.astype(cell.variable_dtype) for w in weights])
        if config is None:
            config = cell.get_config()
        compute = cell.compute_dtype
        x_in = xs.astype(np.float32 if p.startswith("mixed") else p)
        h_in = h0.astype(np.float32 if p.startswith("mixed") else p)
        states, grads = run_steps(cell, x_in, h_in, cot, x_in.dtype)
        expected[p] = {"compute_dtype": compute, "states": states}
        gradients[p] = grads
    names = ["kernel", "recurrent_kernel", "bias"][: len(weights)]
    data = {
        "name": name,
        "description": description,
        "config": config,
        "input_dim": f,
        "weights": {n: w.tolist() for n, w in zip(names, weights)},
        "inputs": xs.tolist(),
        "initial_state": h0.tolist(),
        "cotangents": cot.tolist(),
        "expected": expected,
        "gradients": gradients,
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as fh:
        json.dump(data, fh)
    print("wrote", name)


def config_probes(out_dir):
    """Keras' get_config of cells built in several ways, and from_config's verdicts."""
    built = {
        "default": keras.layers.GRUCell(4),
        "custom": keras.layers.GRUCell(
            3, activation="relu", recurrent_activation="hard_sigmoid", use_bias=False,
            kernel_regularizer=keras.regularizers.L1L2(0.01, 0.02), bias_constraint="non_neg",
            dropout=0.25, recurrent_dropout=0.5, reset_after=False, seed=11, name="decoder_cell",
            dtype="float64"),
    }
    configs = {k: c.get_config() for k, c in built.items()}
    gru_layer = keras.layers.GRU(5, dropout=0.2, seed=3, dtype="mixed_float16",
                                 return_sequences=True, go_backwards=True)
    layer_configs = {"of_gru_layer": gru_layer.get_config()}
    configs["of_gru_layer"] = gru_layer.cell.get_config()
    probes = []
    for cfg in [{"units": 2}, {"units": 2, "implementation": 1}, {"units": 2, "return_sequences": True},
                {"units": 2, "go_backwards": False}, {"units": 2, "activity_regularizer": None},
                {"units": 2, "use_cudnn": "auto"}, {"units": 0}, {"reset_after": True},
                {"units": 2, "dropout": 1.5}]:
        try:
            c = keras.layers.GRUCell.from_config(dict(cfg))
            probes.append({"config": cfg, "accepted": True, "get_config": c.get_config()})
        except Exception as e:  # noqa: BLE001
            probes.append({"config": cfg, "accepted": False, "error": type(e).__name__})
    # A step of a cell with an activity_regularizer: Keras' base Layer adds the
    # regularizer of each returned tensor (the output and the new state) over the batch.
    rng = np.random.default_rng(5)
    cell = keras.layers.GRUCell(3, activity_regularizer=keras.regularizers.L1L2(0.01, 0.02))
    x = rng.normal(size=(2, 4)).astype(np.float32)
    h = rng.normal(size=(2, 3)).astype(np.float32)
    cell.build((2, 4))
    out, _ = cell(x, [h])
    activity = {"config": cell.get_config(), "weights": [w.tolist() for w in cell.get_weights()],
                "inputs": x.tolist(), "state": h.tolist(), "output": values(out),
                "losses": [float(v) for v in cell.losses]}
    with open(os.path.join(out_dir, "configs.json"), "w") as fh:
        json.dump({"configs": configs, "layer_configs": layer_configs, "from_config": probes,
                   "activity": activity}, fh, indent=1)
    print("wrote configs")


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(2311)
    case(out_dir, "default", "GRUCell(6): reset_after, tanh, sigmoid", {}, rng)
    case(out_dir, "reset_before", "GRUCell(6, reset_after=False)", {"reset_after": False}, rng)
    case(out_dir, "no_bias_relu_hard_sigmoid",
         "GRUCell(6, use_bias=False, activation=relu, recurrent_activation=hard_sigmoid)",
         {"use_bias": False, "activation": "relu", "recurrent_activation": "hard_sigmoid"}, rng)
    case(out_dir, "implementation_1", "GRUCell(6, recurrent_dropout=0.3) (implementation 1), "
         "inference steps", {"recurrent_dropout": 0.3, "dropout": 0.2}, rng)
    case(out_dir, "batch_1_long", "GRUCell(16) at batch 1 over 12 steps (a decoder's shape)",
         {}, rng, b=1, t=12, f=8, u=16)
    case(out_dir, "mixed_float16", "GRUCell(6, dtype=mixed_float16): float16 steps",
         {}, rng, policies=("mixed_float16",))
    config_probes(out_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/cell")
