#!/usr/bin/env python3
"""Makes tests/data/ctc/ctc_cases.json: `keras.ops.ctc_loss` (per-sample loss and its
gradient with respect to the logits) and `keras.ops.ctc_decode` (greedy) with Keras 3.15.1
(TensorFlow backend, CPU) on random logits, for targets with repeated labels (a blank
between them is required), padded targets and outputs shorter than the tensor, a blank
index other than 0, and a target too long for its output; and
`keras.ops.ctc_decode(strategy="beam_search")` (`beam_cases`).

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


def beam_case(name, logits, output_length, beam_width, top_paths, mask_index):
    decoded, scores = keras.ops.ctc_decode(logits, output_length, strategy="beam_search",
                                           beam_width=beam_width, top_paths=top_paths,
                                           mask_index=mask_index)
    return {
        "name": name,
        "logits": np.asarray(logits).astype(np.float64).tolist(),
        "output_length": list(map(int, output_length)),
        "beam_width": beam_width,
        "top_paths": top_paths,
        "mask_index": mask_index,
        "decoded": [np.asarray(d).tolist() for d in decoded],
        "scores": np.asarray(scores).astype(np.float64).tolist(),
    }


def beam_cases():
    """`keras.ops.ctc_decode(strategy="beam_search")`: narrow beams (prefixes fall out and
    come back), several paths, the blank first, last and in the middle, raw logits and
    log-probabilities, outputs shorter than the tensor."""
    rng = np.random.default_rng(78)
    out = []
    logits = rng.normal(size=(4, 15, 6)).astype(np.float32) * 2.0
    out.append(beam_case("narrow_blank_first", logits, [15, 11, 15, 4], 3, 3, 0))
    logits = rng.normal(size=(3, 20, 5)).astype(np.float32) * 1.5
    out.append(beam_case("blank_last", logits, [20, 20, 13], 5, 2, 4))
    logits = rng.normal(size=(3, 18, 7)).astype(np.float32)
    logp = np.asarray(tf.nn.log_softmax(logits)).astype(np.float32)
    out.append(beam_case("log_probs_blank_middle", logp, [18, 9, 16], 8, 4, 3))
    # Peaked frames: repeated labels with and without a blank between them.
    peaks = np.array([1, 1, 0, 1, 2, 2, 2, 0, 0, 3, 0, 3, 3, 1, 0, 2])
    logits = rng.normal(size=(2, 16, 4)).astype(np.float32) * 0.5
    logits[0, np.arange(16), peaks] += 4.0
    logits[1, np.arange(16), peaks[::-1]] += 2.0
    out.append(beam_case("repeats", logits, [16, 16], 10, 3, 0))
    # Keras' defaults: beam_width 100, one path.
    logits = rng.normal(size=(2, 30, 9)).astype(np.float32) * 2.0
    out.append(beam_case("default_width", logits, [30, 22], 100, 1, 0))
    return out


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
                   "cases": cases, "beam_cases": beam_cases()}, fh)
    for cs in cases:
        print(cs["name"], cs["loss"], cs["greedy_scores"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/ctc/ctc_cases.json")
