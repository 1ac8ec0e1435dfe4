#!/usr/bin/env python3
"""Makes the model cases of tests/data/models with the numeric preprocessing layers time
series models put before their GRUs (`Normalization` adapted to data or given its mean and
variance, `Rescaling`, `Identity`) with Keras 3.15.1 (TensorFlow backend, CPU), in the
schema of tests/data/models/README.md.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_preprocessing_cases.py tests/data/models
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402

L = keras.layers


def main(out_dir):
    rng = np.random.default_rng(1132)
    b, t = 3, 7

    def randomize(model):
        # Only the trainable weights: Normalization's adapted statistics stay.
        for layer in model.layers:
            if layer.trainable_weights:
                layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                                   for w in layer.get_weights()])

    # Normalization adapted to data (its mean, variance and count are variables), then
    # Rescaling and Identity, a GRU and a Dense.
    data = (rng.normal(size=(64, t, 5)) * [1.0, 3.0, 0.5, 10.0, 2.0] + [0, 5, -1, 40, 2])
    data = data.astype(np.float32)
    norm = L.Normalization()
    norm.adapt(data)
    inp = keras.Input(shape=(t, 5))
    h = norm(inp)
    h = L.Rescaling(0.5, offset=0.1)(h)
    h = L.Identity()(h)
    h = L.GRU(6)(h)
    y = L.Dense(2)(h)
    model = keras.Model(inp, y, name="normalization_adapted_gru")
    randomize(model)
    x = data[:b].copy()
    save_case(out_dir, model, "normalization_adapted_gru",
              "Functional: Normalization (adapted to data: per-feature mean, variance, count "
              "variables) -> Rescaling(0.5, offset 0.1) -> Identity -> GRU(6) -> Dense(2)",
              x, "float32")

    # Normalization given its mean and variance in the config (over the last two axes),
    # and an inverting one given scalars, around a masked GRU.
    x = rng.normal(size=(b, t, 3)).astype(np.float32) * 2.0 + 1.0
    x[1, 5:] = 0.0
    mean = rng.normal(size=(t, 3)).astype(np.float32)
    var = (rng.random(size=(t, 3)) + 0.5).astype(np.float32)
    inp = keras.Input(shape=(t, 3))
    h = L.Masking(0.0)(inp)
    h = L.Normalization(axis=(1, 2), mean=mean, variance=var)(h)
    h = L.GRU(4, return_sequences=True)(h)
    h = L.Normalization(axis=None, mean=0.5, variance=4.0, invert=True)(h)
    y = L.Dense(2)(h)
    model = keras.Model(inp, y, name="normalization_given_masked_gru")
    randomize(model)
    save_case(out_dir, model, "normalization_given_masked_gru",
              "Functional: Masking -> Normalization(axis (1, 2), mean and variance given) -> "
              "GRU(4, return_sequences) -> Normalization(axis None, mean 0.5, variance 4, "
              "invert) -> Dense(2); row 1 padded", x, "float32")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
