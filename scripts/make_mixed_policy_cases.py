#!/usr/bin/env python3
"""Makes tests/data/mixed: Keras 3.15.1 GRU layers under the mixed precision policies
(`mixed_float16`, `mixed_bfloat16`: float32 variables, float16/bfloat16 computation), with
the outputs and gradients Keras computes (TensorFlow backend, CPU), and a `.keras` model
of mixed layers (tests/data/mixed/README.md has the schema).

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_mixed_policy_cases.py tests/data/mixed
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
    """A tensor's values as float64 list (float16/bfloat16 values are exact in float64)."""
    return np.asarray(tf.cast(a, tf.float64)).ravel().tolist()


def dtype_name(a):
    return str(a.dtype.name)


def run_layer(layer, x, mask, h0, cotangents):
    """Calls the layer under a tape; returns (outputs, losses, grads by name)."""
    watched = {"kernel": layer.cell.kernel, "recurrent_kernel": layer.cell.recurrent_kernel}
    if layer.cell.use_bias:
        watched["bias"] = layer.cell.bias
    x = tf.constant(x)
    h0 = None if h0 is None else tf.constant(h0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if h0 is not None:
            tape.watch(h0)
        kwargs = {}
        if mask is not None:
            kwargs["mask"] = tf.constant(mask)
        if h0 is not None:
            kwargs["initial_state"] = [h0]
        out = layer(x, **kwargs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32) * c) for o, c in zip(outs, cotangents)])
    grads = {k: tape.gradient(loss, v.value) for k, v in watched.items()}
    grads["inputs"] = tape.gradient(loss, x)
    if h0 is not None:
        grads["initial_state"] = tape.gradient(loss, h0)
    return outs, [float(tf.cast(l, tf.float64)) for l in layer.losses], grads


def layer_case(name, description, policy, kwargs, rng, mask_lengths=None, with_h0=False):
    b, t, f, u = 3, 6, 4, 5
    x = rng.normal(size=(b, t, f)).astype(np.float32)
    mask = None
    if mask_lengths is not None:
        mask = np.arange(t)[None, :] < np.asarray(mask_lengths)[:, None]
    h0 = rng.normal(size=(b, u)).astype(np.float32) * 0.5 if with_h0 else None
    built = {}
    for p in (policy, "float32"):
        layer = keras.layers.GRU(u, dtype=p, **kwargs)
        layer.build((b, t, f))
        built[p] = layer
    ref = built["float32"]
    weights = [rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in ref.get_weights()]
    for layer in built.values():
        layer.set_weights(weights)
    n_out = 1 + int(kwargs.get("return_state", False))
    seq = kwargs.get("return_sequences", False)
    out_shapes = [(b, t, u) if seq else (b, u)] + [(b, u)] * (n_out - 1)
    cot = [rng.normal(size=s).astype(np.float32) for s in out_shapes]
    outs, losses, grads = run_layer(built[policy], x, mask, h0, cot)
    outs32, losses32, grads32 = run_layer(ref, x, mask, h0, cot)
    names = ["kernel", "recurrent_kernel", "bias"][: len(weights)]
    return {
        "name": name,
        "description": description,
        "policy": policy,
        "config": built[policy].get_config(),
        "input_shape": [b, t, f],
        "weights": {n: {"shape": list(w.shape), "data": w.ravel().astype(np.float64).tolist()}
                    for n, w in zip(names, weights)},
        "inputs": values(x),
        "mask": None if mask is None else mask.astype(np.int64).ravel().tolist(),
        "initial_state": None if h0 is None else values(h0),
        "cotangents": [values(c) for c in cot],
        "expected": {
            "output_dtypes": [dtype_name(o) for o in outs],
            "outputs": [values(o) for o in outs],
            "activity_losses": losses,
            "gradient_dtypes": {k: dtype_name(g) for k, g in grads.items()},
            "gradients": {k: values(g) for k, g in grads.items()},
        },
        "float32_policy": {
            "outputs": [values(o) for o in outs32],
            "activity_losses": losses32,
            "gradients": {k: values(g) for k, g in grads32.items()},
        },
        "generated_with": {"keras": keras.__version__, "backend": "tensorflow", "tensorflow": tf.__version__},
    }


def model_case(out_dir, rng):
    name = "mixed_float16_masking_gru_dense"
    b, t, f = 3, 7, 5
    inp = keras.Input(shape=(t, f))
    h = keras.layers.Masking(0.0)(inp)
    h = keras.layers.GRU(6, return_sequences=True, dtype="mixed_float16")(h)
    y = keras.layers.Dense(3, dtype="mixed_float16")(h)
    model = keras.Model(inp, y, name=name)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4 for w in model.get_weights()])
    x = rng.normal(size=(b, t, f)).astype(np.float32)
    x[1, 5:] = 0.0
    x[2, 3:] = 0.0
    out = model(x)
    model.save(os.path.join(out_dir, name + ".keras"))
    model.save_weights(os.path.join(out_dir, name + ".weights.h5"))
    return {
        "name": name,
        "description": "Input -> Masking -> GRU(6, return_sequences, mixed_float16) -> Dense(3, mixed_float16)",
        "files": [name + ".keras", name + ".weights.h5"],
        "input_shape": [b, t, f],
        "inputs": values(x),
        "output_dtype": dtype_name(out),
        "output_shape": list(out.shape),
        "expected": values(out),
        "generated_with": {"keras": keras.__version__, "backend": "tensorflow", "tensorflow": tf.__version__},
    }


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261129)
    cases = [
        layer_case("mixed_float16_sequence_state_mask",
                   "mixed_float16, return_sequences and return_state, right-padded mask, initial state",
                   "mixed_float16", {"return_sequences": True, "return_state": True}, rng,
                   mask_lengths=[6, 4, 2], with_h0=True),
        layer_case("mixed_bfloat16_last_go_backwards_activity",
                   "mixed_bfloat16, last output, go_backwards, reset_after=False, L2 activity regularizer",
                   "mixed_bfloat16", {"go_backwards": True, "reset_after": False,
                                      "activity_regularizer": keras.regularizers.L2(0.01)}, rng),
        layer_case("mixed_float16_no_bias_hard_sigmoid",
                   "mixed_float16, use_bias=False, hard_sigmoid recurrent activation, return_sequences",
                   "mixed_float16", {"use_bias": False, "recurrent_activation": "hard_sigmoid",
                                     "return_sequences": True}, rng),
    ]
    for c in cases:
        with open(os.path.join(out_dir, c["name"] + ".json"), "w") as fh:
            json.dump(c, fh)
    m = model_case(out_dir, rng)
    with open(os.path.join(out_dir, m["name"] + ".json"), "w") as fh:
        json.dump(m, fh)
    for c in cases:
        e, r = c["expected"], c["float32_policy"]
        d = max(abs(a - b) for o, p in zip(e["outputs"], r["outputs"]) for a, b in zip(o, p))
        print(f"{c['name']}: dtypes {e['output_dtypes']}, max |mixed - float32| output {d:.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/mixed")
