#!/usr/bin/env python3
"""Makes tests/data/ctc/ctc_cases.json: `keras.ops.ctc_loss` (per-sample loss and its
gradient with respect to the logits) and `keras.ops.ctc_decode` (greedy) with Keras 3.15.1
(TensorFlow backend, CPU) on random logits, for targets with repeated labels (a blank
between them is required), padded targets and outputs shorter than the tensor, a blank
index other than 0, and a target too long for its output.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_ctc_cases.py tests/data/ctc/ctc_cases.json
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def case(name, logits, target, target_length, output_length, mask_index):
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = keras.ops.ctc_loss(target, logits, target_length, output_length,
                                  mask_index=mask_index)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, logits)
    decoded, scores = keras.ops.ctc_decode(logits, output_length, strategy="greedy",
                                           merge_repeated=True, mask_index=mask_index)
    return {
        "name": name,
        "logits": np.asarray(logits).astype(np.float64).tolist(),
        "target": np.asarray(target).tolist(),
        "target_length": list(map(int, target_length)),
        "output_length": list(map(int, output_length)),
        "mask_index": mask_index,
        "loss": np.asarray(loss).astype(np.float64).tolist(),
        "gradient": np.asarray(grad).astype(np.float64).tolist(),
        "greedy_decoded": np.asarray(decoded)[0].tolist(),
        "greedy_scores": np.asarray(scores).astype(np.float64).ravel().tolist(),
    }


def main(path):
    rng = np.random.default_rng(77)
    cases = []
    b, t, c = 4, 12, 6
    logits = rng.normal(size=(b, t, c)).astype(np.float32) * 2.0
    target = np.array([[1, 2, 2, 3, 0], [4, 4, 4, 0, 0], [5, 1, 0, 0, 0], [3, 0, 0, 0, 0]],
                      dtype=np.int32)
    cases.append(case("repeats_and_padding", logits, target, [4, 3, 2, 1], [12, 9, 12, 5], 0))
    logits = rng.normal(size=(b, t, c)).astype(np.float32)
    # Blank last (keras.backend.ctc_batch_cost's convention); labels 0..4.
    target = np.array([[0, 1, 0, 2], [3, 3, 1, 1], [4, 0, 0, 0], [2, 2, 2, 2]], dtype=np.int32)
    cases.append(case("blank_last", logits, target, [4, 4, 1, 2], [11, 12, 7, 12], c - 1))
    logits = rng.normal(size=(2, 5, 4)).astype(np.float32)
    # Three repeated labels need five steps; the second output has four.
    target = np.array([[1, 1, 1], [1, 1, 1]], dtype=np.int32)
    cases.append(case("too_long_for_output", logits, target, [3, 3], [5, 4], 0))
    with open(path, "w") as fh:
        json.dump({"keras_version": keras.__version__, "tensorflow_version": tf.__version__,
                   "cases": cases}, fh)
    for cs in cases:
        print(cs["name"], cs["loss"], cs["greedy_scores"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/ctc/ctc_cases.json")
