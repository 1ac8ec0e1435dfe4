#!/usr/bin/env python3
"""Makes the model cases of tests/data/models with Keras' reshaping, activation and noise
layers around GRUs (RepeatVector encoder-decoders, Flatten, Reshape, Permute, ZeroPadding1D,
Cropping1D, UpSampling1D, LeakyReLU, ReLU, ELU, PReLU, Softmax, GaussianNoise, GaussianDropout,
AlphaDropout, ActivityRegularization) with Keras 3.15.1 (TensorFlow backend, CPU), in the
schema of tests/data/models/README.md; `losses` holds Keras' `model.losses` after the call
(the activity losses).

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_reshaping_cases.py tests/data/models
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402


def main(out_dir):
    rng = np.random.default_rng(1201)
    b, t = 3, 7

    def randomize(model):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                           for w in model.get_weights()])

    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[1, 5:] = 0.0
    model = keras.Sequential([
        keras.Input(shape=(t, 5)),
        keras.layers.Masking(0.0),
        keras.layers.GRU(6),
        keras.layers.RepeatVector(4),
        keras.layers.GRU(5, return_sequences=True),
        keras.layers.LeakyReLU(negative_slope=0.1),
        keras.layers.TimeDistributed(keras.layers.Dense(3)),
        keras.layers.Flatten(),
        keras.layers.Dense(6),
        keras.layers.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.05),
    ], name="seq2seq_repeat_vector")
    randomize(model)
    save_case(out_dir, model, "seq2seq_repeat_vector",
              "Sequential: Masking -> GRU(6) -> RepeatVector(4) -> GRU(5, return_sequences) -> "
              "LeakyReLU(0.1) -> TimeDistributed(Dense(3)) -> Flatten -> Dense(6) -> "
              "ReLU(max_value 1.5, negative_slope 0.1, threshold 0.05); row 1 padded after step 5",
              x, "float32")

    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    model = keras.Sequential([
        keras.Input(shape=(t, 5)),
        keras.layers.ZeroPadding1D((1, 2)),
        keras.layers.Cropping1D((2, 1)),
        keras.layers.UpSampling1D(2),
        keras.layers.Permute((2, 1)),
        keras.layers.Reshape((-1, 7)),
        keras.layers.GRU(4, return_sequences=True),
        keras.layers.ELU(alpha=0.7),
        keras.layers.GaussianNoise(0.1),
        keras.layers.GaussianDropout(0.2),
        keras.layers.AlphaDropout(0.1),
        keras.layers.ActivityRegularization(l1=0.01, l2=0.02),
        keras.layers.Dense(3),
        keras.layers.Softmax(),
    ], name="reshape_permute_padding")
    randomize(model)
    name = "reshape_permute_padding"
    save_case(out_dir, model, name,
              "Sequential: ZeroPadding1D((1, 2)) -> Cropping1D((2, 1)) -> UpSampling1D(2) -> "
              "Permute((2, 1)) -> Reshape((-1, 7)) -> GRU(4, return_sequences) -> ELU(0.7) -> "
              "GaussianNoise -> GaussianDropout -> AlphaDropout -> ActivityRegularization(l1 0.01, "
              "l2 0.02) -> Dense(3) -> Softmax", x, "float32")
    model(x, training=False)
    with open(os.path.join(out_dir, name + ".json")) as fh:
        case = json.load(fh)
    case["losses"] = [float(np.asarray(v)) for v in model.losses]
    with open(os.path.join(out_dir, name + ".json"), "w") as fh:
        json.dump(case, fh)
    print(name, "losses", case["losses"])

    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    model = keras.Sequential([
        keras.Input(shape=(t, 5)),
        keras.layers.GRU(6, return_sequences=True),
        keras.layers.PReLU(shared_axes=[1]),
        keras.layers.GRU(4, return_sequences=True),
        keras.layers.PReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ], name="gru_prelu")
    randomize(model)
    save_case(out_dir, model, "gru_prelu",
              "Sequential: GRU(6, return_sequences) -> PReLU(shared_axes=[1]) -> GRU(4, "
              "return_sequences) -> PReLU (alpha of shape (7, 4)) -> Flatten -> Dense(2)",
              x, "float32")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
