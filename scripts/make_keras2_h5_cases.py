#!/usr/bin/env python3
"""Makes the legacy HDF5 model cases of tests/data/models: models written by Keras 2
(tf_keras 2.21.0, `model.save("NAME.h5")`, `model.save_weights("NAME.legacy_weights.h5")`,
and `model.save("NAME.keras")`, tf_keras' archive with Keras 2 configs)
and one written by Keras 3.15.1 in the legacy format (`keras.saving.save_model(m, "NAME.h5")`),
with the outputs the writing Keras computed, in the schema of tests/data/models/README.md.

Keras 3.15.1 cannot load the Keras 2 files (`Unrecognized keyword arguments passed to GRU:
{'time_major': False}`); the script records that in each case's `keras3_load`.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/pip install --no-deps tf_keras==2.21.0
    target/anchors-venv/bin/python scripts/make_keras2_h5_cases.py tests/data/models
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402
import tf_keras  # noqa: E402


def randomize(model, rng):
    weights = []
    for w in model.weights:
        v = rng.normal(size=w.shape).astype(np.float32) * 0.4
        if "moving_variance" in w.name:
            v = np.abs(v) + 0.5
        weights.append(v)
    model.set_weights(weights)


def keras3_load(path, inputs, expected):
    """What Keras 3.15.1 makes of the file: its error, or its outputs' max difference."""
    try:
        m = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001
        return "error: " + str(e).splitlines()[0][:200]
    out = m(inputs, training=False)
    out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    return "loads; max difference %.1e" % float(np.abs(out - expected).max())


def fixed_length_strings(src, dst):
    """A copy of `src` with every string attribute stored as fixed-length bytes, as h5py 2
    and Keras 2.2 wrote them."""
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        def copy_attrs(a, b):
            for k, v in a.attrs.items():
                if isinstance(v, str):
                    b.attrs[k] = np.bytes_(v.encode())
                elif isinstance(v, np.ndarray) and v.dtype == object:
                    b.attrs[k] = np.array([s.encode() if isinstance(s, str) else s for s in v], dtype="S")
                else:
                    b.attrs[k] = v
        copy_attrs(f, g)

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                copy_attrs(obj, g.require_group(name))
            else:
                d = g.create_dataset(name, data=obj[()])
                copy_attrs(obj, d)
        f.visititems(visit)


def save_case(out_dir, model, name, description, inputs, input_dtype, keras3=False, extra_files=(),
              extra_inputs=()):
    out = model([inputs, *extra_inputs] if extra_inputs else inputs, training=False)
    outs = [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]
    out = outs[0]
    path = os.path.join(out_dir, name + ".h5")
    files = [name + ".h5"]
    if keras3:
        keras.saving.save_model(model, path)
        version = keras.__version__
    else:
        model.save(path)
        model.save_weights(os.path.join(out_dir, name + ".legacy_weights.h5"))
        model.save(os.path.join(out_dir, name + ".keras"))
        files += [name + ".legacy_weights.h5", name + ".keras"]
        version = "tf_keras " + tf_keras.__version__
    for suffix, make in extra_files:
        make(path, os.path.join(out_dir, name + suffix))
        files.append(name + suffix)
    case = {
        "name": name,
        "kind": "keras",
        "description": description,
        "files": files,
        "keras_version": version,
        "keras3_load": keras3_load(path, [inputs, *extra_inputs] if extra_inputs else inputs, out),
        "layers": [{"name": l.name, "class_name": l.__class__.__name__,
                    "weights": {w.name: list(w.shape) for w in l.weights}} for l in model.layers],
        "input_dtype": input_dtype,
        "inputs": inputs.tolist(),
        **({"extra_inputs": [np.asarray(e).tolist() for e in extra_inputs],
            "extra_input_dtypes": ["int32" if np.issubdtype(np.asarray(e).dtype, np.integer)
                                   else "float32" for e in extra_inputs]} if extra_inputs else {}),
        "mask": None,
        "expected": [o.astype(np.float64).tolist() for o in outs],
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as fh:
        json.dump(case, fh)
    print(name, [o.shape for o in outs], case["keras3_load"])


def main(out_dir):
    rng = np.random.default_rng(1130)
    b, t, f, vocab = 3, 7, 5, 20
    k2 = tf_keras

    x = rng.normal(size=(b, t, f)).astype(np.float32)
    x[1, 5:] = 0.0
    x[2, 3:] = 0.0
    model = k2.Sequential([
        k2.layers.InputLayer((t, f)),
        k2.layers.Masking(0.0),
        k2.layers.GRU(4, return_sequences=True),
        k2.layers.Dense(3),
    ], name="keras2_sequential_masking")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_sequential_masking",
              "Keras 2: Sequential InputLayer -> Masking(0.0) -> GRU(4, return_sequences) -> Dense(3); "
              "rows right-padded with zeros", x, "float32")

    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[1, 5:] = 0
    ids[2, 2:] = 0
    inp = k2.Input(shape=(t,), dtype="int32")
    h = k2.layers.Embedding(vocab, 5, mask_zero=True)(inp)
    h = k2.layers.Bidirectional(k2.layers.GRU(3, return_sequences=True))(h)
    h = k2.layers.GRU(4, reset_after=False, go_backwards=True)(h)
    y = k2.layers.Dense(3, activation="softmax")(h)
    model = k2.Model(inp, y, name="keras2_embedding_bigru")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_embedding_bigru",
              "Keras 2 functional: Input(int32) -> Embedding(20, 5, mask_zero) -> "
              "Bidirectional(GRU(3, return_sequences)) -> GRU(4, reset_after=False, go_backwards) "
              "-> Dense(3, softmax); ids right-padded with 0", ids, "int32")

    x = rng.normal(size=(b, t, f)).astype(np.float32)
    model = k2.Sequential([
        k2.layers.InputLayer((t, f)),
        k2.layers.Conv1D(6, 3, padding="causal"),
        k2.layers.BatchNormalization(),
        k2.layers.LayerNormalization(),
        k2.layers.GRU(5, return_sequences=True),
        k2.layers.TimeDistributed(k2.layers.Dense(4)),
        k2.layers.GlobalAveragePooling1D(),
        k2.layers.Dropout(0.3),
        k2.layers.Dense(2, activation="tanh"),
        k2.layers.LayerNormalization(),
    ], name="keras2_conv_norm_gru")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_conv_norm_gru",
              "Keras 2: Conv1D(6, 3, causal) -> BatchNormalization -> LayerNormalization(axis [2]) -> "
              "GRU(5, return_sequences) -> TimeDistributed(Dense(4)) -> GlobalAveragePooling1D -> "
              "Dropout -> Dense(2, tanh) -> LayerNormalization(axis [1])", x, "float32")

    x = rng.normal(size=(b, t, f)).astype(np.float32)
    model = k2.Sequential([
        k2.layers.GRU(3, input_shape=(t, f), use_bias=False, activation="relu"),
        k2.layers.Dense(2),
    ], name="keras2_first_layer_input_shape")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_first_layer_input_shape",
              "Keras 2: Sequential whose first layer carries the input shape: GRU(3, relu, "
              "use_bias=False) -> Dense(2); also stored with fixed-length string attributes "
              "(as h5py 2 / Keras 2.2 wrote them)", x, "float32",
              extra_files=[(".fixed_strings.h5", fixed_length_strings)])

    x = rng.normal(size=(b, t, f)).astype(np.float32)
    model = k2.Sequential([
        k2.layers.GRU(6, input_shape=(t, f)),
        k2.layers.RepeatVector(3),
        k2.layers.GRU(4, return_sequences=True),
        k2.layers.LeakyReLU(alpha=0.2),
        k2.layers.Flatten(),
        k2.layers.Dense(4),
        k2.layers.ReLU(max_value=0.3, negative_slope=0.05),
    ], name="keras2_repeat_vector_leaky_relu")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_repeat_vector_leaky_relu",
              "Keras 2: GRU(6) -> RepeatVector(3) -> GRU(4, return_sequences) -> "
              "LeakyReLU(alpha 0.2) -> Flatten -> Dense(4) -> ReLU(max_value 0.3, "
              "negative_slope 0.05)", x, "float32")

    x = rng.normal(size=(b, t, f)).astype(np.float32)
    model = keras.Sequential([
        keras.Input((t, f)),
        keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True), merge_mode="sum"),
        keras.layers.GRU(4),
        keras.layers.Dense(2),
    ], name="keras3_legacy_h5")
    randomize(model, rng)
    save_case(out_dir, model, "keras3_legacy_h5",
              "Keras 3 in the legacy .h5 format: Bidirectional(GRU(3, return_sequences), sum) -> "
              "GRU(4) -> Dense(2)", x, "float32", keras3=True)

    # A Keras 2 functional graph with merges (list-form nodes with several inputs, masks
    # propagated implicitly: Keras 2 records no mask operations).
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[0, 4:] = 0
    inp = k2.Input(shape=(t,), dtype="int32")
    e = k2.layers.Embedding(vocab, 4, mask_zero=True)(inp)
    fw = k2.layers.GRU(4, return_sequences=True)(e)
    bw = k2.layers.GRU(4, return_sequences=True, go_backwards=True)(e)
    h = k2.layers.Add()([e, fw])
    h = k2.layers.Concatenate()([h, bw])
    h = k2.layers.GRU(3)(h)
    y = k2.layers.Dense(2)(h)
    model = k2.Model(inp, y, name="keras2_graph_add_concatenate")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_graph_add_concatenate",
              "Keras 2 functional: Embedding(20, 4, mask_zero) -> GRU(4) and GRU(4, go_backwards); "
              "Add(embedding, gru) -> Concatenate(add, backward gru) -> GRU(3) -> Dense(2); ids "
              "right-padded with 0", ids, "int32")

    # Keras 2's mask rule for merges: the AND of the masks there are (Keras 3: none unless
    # every input is masked, and then the OR).
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[0, 3:] = 0
    ids[2, 5:] = 0
    inp = k2.Input(shape=(t,), dtype="int32")
    masked = k2.layers.Embedding(vocab, 3, mask_zero=True)(inp)
    plain = k2.layers.Embedding(vocab, 3)(inp)
    c = k2.layers.GRU(4)(k2.layers.Concatenate()([masked, plain]))
    a = k2.layers.GRU(3)(k2.layers.Multiply()([masked, plain]))
    y = k2.layers.Dense(2)(k2.layers.Concatenate()([c, a]))
    model = k2.Model(inp, y, name="keras2_merge_mask_rule")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_merge_mask_rule",
              "Keras 2 functional: Embedding(mask_zero) and Embedding (no mask) of the same ids; "
              "Concatenate -> GRU(4) and Multiply -> GRU(3) (Keras 2 passes the masked "
              "branch's mask on) -> Concatenate -> Dense(2)", ids, "int32")


    # A Siamese model: a nested Sequential encoder and a Dense, each called on both inputs.
    # Keras 2 numbers a nested model's calls from 1 (its own first node is not saved); its
    # variables sit in the legacy file under the nested model's name.
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[1, 4:] = 0
    ids2 = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids2[2, 2:] = 0
    a_in = k2.Input(shape=(t,), dtype="int32")
    b_in = k2.Input(shape=(t,), dtype="int32")
    enc = k2.Sequential([k2.layers.Embedding(vocab, 6, mask_zero=True), k2.layers.GRU(5)],
                        name="encoder")
    dense = k2.layers.Dense(5, activation="tanh", name="shared_dense")
    ea, eb = dense(enc(a_in)), dense(enc(b_in))
    y = k2.layers.Dense(1)(k2.layers.Concatenate()([ea, eb, k2.layers.Subtract()([ea, eb])]))
    model = k2.Model([a_in, b_in], y, name="keras2_siamese_nested")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_siamese_nested",
              "Keras 2 functional, two id inputs: one nested Sequential encoder (Embedding(20, 6, "
              "mask_zero) -> GRU(5)) and one Dense(5, tanh) called on each; Concatenate([a, b, "
              "a - b]) -> Dense(1)", ids, "int32", extra_inputs=[ids2])

    # A nested functional encoder (with a nested Sequential and a BatchNormalization, whose
    # moving statistics follow the trainable variables in the legacy file) with two
    # outputs; the outer Masking's mask flows in, the sequence's mask out.
    x = rng.normal(size=(b, t, f)).astype(np.float32)
    x[0, 3:] = 0.0
    x2 = rng.normal(size=(b, 4, 3)).astype(np.float32)
    e_in = k2.Input(shape=(t, f))
    pre = k2.Sequential([k2.layers.Dense(6), k2.layers.BatchNormalization()], name="pre")
    seq, state = k2.layers.GRU(6, return_sequences=True, return_state=True)(pre(e_in))
    encoder = k2.Model(e_in, [seq, state], name="encoder")
    enc_in = k2.Input(shape=(t, f))
    dec_in = k2.Input(shape=(4, 3))
    seq, state = encoder(k2.layers.Masking(0.0)(enc_in))
    dec = k2.layers.GRU(6)(dec_in, initial_state=state)
    pooled = k2.layers.GlobalAveragePooling1D()(seq)
    y = k2.layers.Dense(2)(k2.layers.Concatenate()([pooled, dec]))
    model = k2.Model([enc_in, dec_in], y, name="keras2_nested_functional")
    randomize(model, rng)
    save_case(out_dir, model, "keras2_nested_functional",
              "Keras 2 functional, two inputs: Masking -> nested functional encoder (nested "
              "Sequential(Dense(6), BatchNormalization) -> GRU(6, return_sequences, "
              "return_state)); its sequence average-pooled, its state starts GRU(6) over the "
              "second input; Concatenate -> Dense(2); encoder row 0 padded", x, "float32",
              extra_inputs=[x2])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
