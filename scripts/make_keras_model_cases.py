#!/usr/bin/env python3
"""Makes the model cases of tests/data/models with the layers around GRUs (Embedding,
Dropout, SpatialDropout1D, Activation and softmax heads, LayerNormalization, global
pooling, Conv1D, MaxPooling1D, AveragePooling1D, TimeDistributed(Dense)) with Keras 3.15.1 (TensorFlow backend, CPU), in the schema of
tests/data/models/README.md, plus `input_dtype: "int32"` where the inputs are token ids.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_model_cases.py tests/data/models
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import keras  # noqa: E402


def save_case(out_dir, model, name, description, ids, input_dtype="int32", extra_inputs=(),
              expected=None):
    if expected is None:
        out = model(ids, training=False)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
    else:
        outs = expected
    model.save(os.path.join(out_dir, name + ".keras"))
    model.save_weights(os.path.join(out_dir, name + ".weights.h5"))
    case = {
        "name": name,
        "kind": "keras",
        "description": description,
        "files": [name + ".keras", name + ".weights.h5"],
        "keras_version": keras.__version__,
        "layers": [{"name": l.name, "class_name": l.__class__.__name__,
                    "weights": {w.path: list(w.shape) for w in l.weights}} for l in model.layers],
        "input_dtype": input_dtype,
        "inputs": ids.tolist(),
        **({"extra_inputs": [np.asarray(e).tolist() for e in extra_inputs],
            "extra_input_dtypes": ["int32" if np.issubdtype(np.asarray(e).dtype, np.integer)
                                   else "float32" for e in extra_inputs]} if len(extra_inputs) else {}),
        "mask": None,
        "expected": [np.asarray(o).astype(np.float64).tolist() for o in outs],
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as fh:
        json.dump(case, fh)
    print(name, [tuple(np.asarray(o).shape) for o in outs])


def main(out_dir):
    rng = np.random.default_rng(1129)
    b, t, vocab = 3, 7, 20

    def randomize(model):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4 for w in model.get_weights()])

    # Token ids right-padded with 0 (Embedding's mask_zero padding id).
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[1, 5:] = 0
    ids[2, 2:] = 0
    inp = keras.Input(shape=(t,), dtype="int32")
    h = keras.layers.Embedding(vocab, 5, mask_zero=True)(inp)
    h = keras.layers.Dropout(0.3)(h)
    h = keras.layers.GRU(6, return_sequences=True)(h)
    h = keras.layers.SpatialDropout1D(0.2)(h)
    h = keras.layers.GRU(4)(h)
    y = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, y, name="embedding_mask_zero_gru_softmax")
    randomize(model)
    save_case(out_dir, model, "embedding_mask_zero_gru_softmax",
              "Input(int32) -> Embedding(20, 5, mask_zero) -> Dropout -> GRU(6, return_sequences) "
              "-> SpatialDropout1D -> GRU(4) -> Dense(3, softmax); ids right-padded with 0",
              ids)

    ids = rng.integers(0, vocab, size=(b, t)).astype(np.int32)
    model = keras.Sequential([
        keras.Input(shape=(t,), dtype="int32"),
        keras.layers.Embedding(vocab, 4),
        keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True)),
        keras.layers.Dense(5),
        keras.layers.Activation("tanh"),
        keras.layers.Dense(2),
        keras.layers.Activation("log_softmax"),
    ], name="embedding_bidirectional_activations")
    randomize(model)
    save_case(out_dir, model, "embedding_bidirectional_activations",
              "Sequential: Embedding(20, 4) (no mask; id 0 is a token) -> Bidirectional(GRU(3, "
              "return_sequences)) -> Dense(5) -> Activation(tanh) -> Dense(2) -> "
              "Activation(log_softmax)", ids)

    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[0, 4:] = 0
    ids[2, 6:] = 0
    inp = keras.Input(shape=(t,), dtype="int32")
    h = keras.layers.Embedding(vocab, 5, mask_zero=True)(inp)
    h = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))(h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    y = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, y, name="embedding_bigru_layernorm_average_pool")
    randomize(model)
    save_case(out_dir, model, "embedding_bigru_layernorm_average_pool",
              "Input(int32) -> Embedding(20, 5, mask_zero) -> Bidirectional(GRU(4, "
              "return_sequences)) -> LayerNormalization -> GlobalAveragePooling1D (masked mean) "
              "-> Dense(3, softmax); ids right-padded with 0", ids)

    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    model = keras.Sequential([
        keras.Input(shape=(t, 5)),
        keras.layers.GRU(6, return_sequences=True),
        keras.layers.LayerNormalization(center=False, epsilon=1e-5),
        keras.layers.GlobalMaxPooling1D(keepdims=True),
        keras.layers.Dense(2),
    ], name="gru_layernorm_max_pool")
    randomize(model)
    save_case(out_dir, model, "gru_layernorm_max_pool",
              "Sequential: GRU(6, return_sequences) -> LayerNormalization(center=False, "
              "epsilon=1e-5) -> GlobalMaxPooling1D(keepdims) -> Dense(2)", x, "float32")

    x = rng.normal(size=(b, 16, 3)).astype(np.float32)
    model = keras.Sequential([
        keras.Input(shape=(16, 3)),
        keras.layers.Conv1D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling1D(2),
        keras.layers.Conv1D(6, 2, padding="causal", dilation_rate=2, groups=2),
        keras.layers.AveragePooling1D(3, strides=1, padding="same"),
        keras.layers.Conv1D(6, 3, strides=2, use_bias=False),
        keras.layers.MaxPooling1D(2, strides=1, padding="same"),
        keras.layers.GRU(5),
        keras.layers.Dense(2),
    ], name="conv1d_pooling_gru")
    randomize(model)
    save_case(out_dir, model, "conv1d_pooling_gru",
              "Sequential: Conv1D(8, 3, same, relu) -> MaxPooling1D(2) -> Conv1D(6, 2, causal, "
              "dilation 2, groups 2) -> AveragePooling1D(3, strides 1, same) -> Conv1D(6, 3, "
              "strides 2, no bias) -> MaxPooling1D(2, strides 1, same) -> GRU(5) -> Dense(2)",
              x, "float32")

    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[1, 4:] = 0.0
    model = keras.Sequential([
        keras.Input(shape=(t, 5)),
        keras.layers.Masking(0.0),
        keras.layers.TimeDistributed(keras.layers.Dense(4, activation="tanh")),
        keras.layers.GRU(3, return_sequences=True),
        keras.layers.TimeDistributed(keras.layers.Dense(2)),
    ], name="time_distributed_dense_gru")
    randomize(model)
    save_case(out_dir, model, "time_distributed_dense_gru",
              "Sequential: Masking(0.0) -> TimeDistributed(Dense(4, tanh)) -> GRU(3, "
              "return_sequences) -> TimeDistributed(Dense(2)); row 1 padded after step 4",
              x, "float32")

    training_case(out_dir, rng, vocab)
    batch_norm_case(out_dir, rng)


def training_case(out_dir, rng, vocab):
    """A model with regularizers, a constraint and a frozen layer, with Keras' loss and
    gradients of one batch: `training` holds the labels, the loss parts, the gradient of
    every trainable variable by its path in the weights file, and the constrained kernel."""
    import h5py
    import tensorflow as tf

    b, t = 4, 6
    ids = rng.integers(1, vocab, size=(b, t)).astype(np.int32)
    ids[1, 4:] = 0
    ids[3, 2:] = 0
    inp = keras.Input(shape=(t,), dtype="int32")
    h = keras.layers.Embedding(vocab, 5, mask_zero=True,
                               embeddings_regularizer=keras.regularizers.L2(1e-3))(inp)
    h = keras.layers.Dropout(0.25)(h)
    h = keras.layers.GRU(6, return_sequences=True, kernel_regularizer=keras.regularizers.L2(0.01),
                         activity_regularizer=keras.regularizers.L1(1e-3))(h)
    h = keras.layers.LayerNormalization(trainable=False)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dense(4, activation="tanh", kernel_regularizer=keras.regularizers.L1L2(1e-3, 1e-2),
                           kernel_constraint=keras.constraints.MaxNorm(0.5),
                           activity_regularizer=keras.regularizers.L2(1e-3))(h)
    y = keras.layers.Dense(3, activation="softmax", bias_regularizer=keras.regularizers.L1(0.02))(h)
    model = keras.Model(inp, y, name="training_regularized")
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4 for w in model.get_weights()])
    labels = rng.integers(0, 3, size=(b,)).astype(np.int32)
    name = "training_regularized"
    save_case(out_dir, model, name,
              "Input(int32) -> Embedding(mask_zero, L2) -> Dropout(0.25) -> GRU(6, return_sequences, "
              "kernel L2, activity L1) -> LayerNormalization(trainable=False) -> "
              "GlobalAveragePooling1D -> Dense(4, tanh, kernel L1L2, MaxNorm(0.5), activity L2) -> "
              "Dense(3, softmax, bias L1); with Keras' loss, gradients and constraint", ids)
    ce = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        out = model(ids, training=False)
        data_loss = ce(labels, out)
        extra = tf.add_n(model.losses)
        total = data_loss + extra
    variables = model.trainable_variables
    grads = tape.gradient(total, variables)
    # Each variable's path in the weights file: the dataset holding exactly its values.
    paths = {}
    with h5py.File(os.path.join(out_dir, name + ".weights.h5")) as f:
        def visit(p, obj):
            if isinstance(obj, h5py.Dataset):
                paths[p] = np.asarray(obj)
        f.visititems(visit)
    def path_of(v):
        hits = [p for p, a in paths.items() if a.shape == tuple(v.shape) and np.array_equal(a, np.asarray(v))]
        assert len(hits) == 1, (v.path, hits)
        return hits[0]
    dense = next(l for l in model.layers if isinstance(l, keras.layers.Dense))
    with open(os.path.join(out_dir, name + ".json")) as fh:
        case = json.load(fh)
    case["training"] = {
        "labels": labels.tolist(),
        "data_loss": float(data_loss),
        "regularization_and_activity_loss": float(extra),
        "total_loss": float(total),
        "trainable_paths": sorted(path_of(v) for v in variables),
        "all_paths": sorted(paths),
        "gradients": {path_of(v): np.asarray(g).astype(np.float64).ravel().tolist()
                      for v, g in zip(variables, grads)},
        "constrained": {"path": path_of(dense.kernel),
                        "values": np.asarray(dense.kernel_constraint(dense.kernel)).astype(np.float64).ravel().tolist()},
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as fh:
        json.dump(case, fh)
    print(name, "loss", float(total), "extra", float(extra))


def batch_norm_case(out_dir, rng):
    """Masking -> BatchNormalization -> GRU -> Dense: the inference outputs (moving
    statistics), and under `batch_norm_training` the outputs of one training call (masked
    batch statistics) and the moving statistics that call leaves."""
    b, t = 3, 7
    x = (rng.normal(size=(b, t, 4)) * 2.0 + 0.5).astype(np.float32)
    x[0, 5:] = 0.0
    x[2, 3:] = 0.0
    model = keras.Sequential([
        keras.Input(shape=(t, 4)),
        keras.layers.Masking(0.0),
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-2),
        keras.layers.GRU(5),
        keras.layers.Dense(2),
    ], name="masking_batch_norm_gru")
    weights = [rng.normal(size=w.shape).astype(np.float32) * 0.4 for w in model.get_weights()]
    weights[3] = np.abs(weights[3]) + 0.5  # moving_variance > 0
    model.set_weights(weights)
    name = "masking_batch_norm_gru"
    save_case(out_dir, model, name,
              "Sequential: Masking(0.0) -> BatchNormalization(momentum 0.9, epsilon 1e-2) -> "
              "GRU(5) -> Dense(2); with a training call's outputs and moving statistics",
              x, "float32")
    bn = next(l for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    out = model(x, training=True)
    with open(os.path.join(out_dir, name + ".json")) as fh:
        case = json.load(fh)
    case["batch_norm_training"] = {
        "outputs": np.asarray(out).astype(np.float64).tolist(),
        "moving_mean": np.asarray(bn.moving_mean).astype(np.float64).tolist(),
        "moving_variance": np.asarray(bn.moving_variance).astype(np.float64).tolist(),
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as fh:
        json.dump(case, fh)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
