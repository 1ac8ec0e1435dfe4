#!/usr/bin/env python3
"""Makes the model cases of tests/data/models whose masks come in as a model input: a
boolean `keras.Input` handed to layers as their `mask` argument, as keras.io's "Video
Classification with a CNN-RNN Architecture" does (frame features and a frame mask in, the
first GRU called with `mask=mask_input`), with Keras 3.15.1 (TensorFlow backend, CPU), in
the schema of tests/data/models/README.md. The mask inputs are written as 0/1 with the
input dtype "bool". Each case holds `training` (Keras' loss mean(output^2) +
model.losses and every gradient), except the tf_keras twin of the classifier
(`keras2_video_classifier_mask_input`: `.h5`, `save_weights` `.h5` and tf_keras' `.keras`).

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/pip install --no-deps tf_keras==2.21.0
    target/anchors-venv/bin/python scripts/make_keras_mask_input_cases.py tests/data/models
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402
from make_keras_shared_cases import gradient_record  # noqa: E402

L = keras.layers


def randomize(model, rng):
    for v in model.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32) * 0.4)


def frames_and_mask(rng, lengths, t, features):
    """Per-frame features, zero past each video's length, and the frame mask."""
    x = rng.normal(size=(len(lengths), t, features)).astype(np.float32)
    mask = np.zeros((len(lengths), t), dtype=bool)
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
        mask[i, :n] = True
    return x, mask


def mark_bool(out_dir, name, mask):
    """The case's mask input as 0/1 of dtype "bool"."""
    path = os.path.join(out_dir, name + ".json")
    with open(path) as fh:
        case = json.load(fh)
    case["extra_inputs"][-1] = mask.astype(np.int32).tolist()
    case["extra_input_dtypes"][-1] = "bool"
    with open(path, "w") as fh:
        json.dump(case, fh)


def video_classifier(out_dir, rng):
    """keras.io's video classifier's sequence model at a small size (20 frames of 2048
    InceptionV3 features there, 8 of 12 here)."""
    t, features = 8, 12
    frame_features_input = keras.Input((t, features))
    mask_input = keras.Input((t,), dtype="bool")
    x = L.GRU(16, return_sequences=True)(frame_features_input, mask=mask_input)
    x = L.GRU(8)(x)
    x = L.Dropout(0.4)(x)
    x = L.Dense(8, activation="relu")(x)
    output = L.Dense(5, activation="softmax")(x)
    model = keras.Model([frame_features_input, mask_input], output, name="video_classifier")
    randomize(model, rng)
    x, mask = frames_and_mask(rng, [8, 5, 2], t, features)
    name = "video_classifier_mask_input"
    out = np.asarray(model([x, mask], training=False))
    save_case(out_dir, model, name,
              "keras.io video classification (small): Input((8, 12)) frame features and "
              "Input((8,), bool) frame mask -> GRU(16, return_sequences)(x, mask=mask) -> "
              "GRU(8) -> Dropout(0.4) -> Dense(8, relu) -> Dense(5, softmax); videos of 8, 5 "
              "and 2 frames; with Keras' gradients", x, "float32", extra_inputs=[mask],
              expected=[out])
    gradient_record(out_dir, name, model, [x, mask])
    mark_bool(out_dir, name, mask)


def mask_everywhere(out_dir, rng):
    """One boolean mask input handed to a Bidirectional GRU, a pooling and an attention
    layer, and a mask with holes (a frame dropped in the middle)."""
    t, features = 7, 5
    x_in = keras.Input((t, features))
    m_in = keras.Input((t,), dtype="bool")
    h = L.Bidirectional(L.GRU(4, return_sequences=True))(x_in, mask=m_in)
    a = L.Attention()([h, h], mask=[m_in, m_in])
    pooled = L.GlobalAveragePooling1D()(a, mask=m_in)
    last = L.GRU(3, go_backwards=True)(h, mask=m_in)
    y = L.Dense(2)(L.Concatenate()([pooled, last]))
    model = keras.Model([x_in, m_in], y, name="mask_input_everywhere")
    randomize(model, rng)
    x, mask = frames_and_mask(rng, [7, 4, 6], t, features)
    mask[0, 3] = False
    name = "mask_input_everywhere"
    out = np.asarray(model([x, mask], training=False))
    save_case(out_dir, model, name,
              "Functional, Input((7, 5)) and Input((7,), bool) as every layer's mask: "
              "Bidirectional(GRU(4, return_sequences)) -> Attention([h, h], mask=[m, m]) -> "
              "GlobalAveragePooling1D(mask=m); GRU(3, go_backwards)(h, mask=m); "
              "Concatenate -> Dense(2); lengths 7 (frame 3 masked), 4, 6; with Keras' "
              "gradients", x, "float32", extra_inputs=[mask], expected=[out])
    gradient_record(out_dir, name, model, [x, mask])
    mark_bool(out_dir, name, mask)


def keras2_video_classifier(out_dir, rng):
    """The video classifier as the TensorFlow 2 Keras (tf_keras 2.21.0) version of the
    keras.io example writes it: the mask argument recorded as `["input_2", 0, 0]` and the
    second GRU taking the mask the first one's sequence carries."""
    import make_keras2_h5_cases as k2cases
    import tf_keras

    K = tf_keras.layers
    t, features = 8, 12
    frame_features_input = tf_keras.Input((t, features))
    mask_input = tf_keras.Input((t,), dtype="bool")
    x = K.GRU(16, return_sequences=True)(frame_features_input, mask=mask_input)
    x = K.GRU(8)(x)
    x = K.Dropout(0.4)(x)
    x = K.Dense(8, activation="relu")(x)
    output = K.Dense(5, activation="softmax")(x)
    model = tf_keras.Model([frame_features_input, mask_input], output)
    k2cases.randomize(model, rng)
    x, mask = frames_and_mask(rng, [8, 5, 2], t, features)
    name = "keras2_video_classifier_mask_input"
    k2cases.save_case(out_dir, model, name,
                      "tf_keras 2.21.0 video classifier: Input((8, 12)) and Input((8,), bool) -> "
                      "GRU(16, return_sequences)(x, mask=mask) -> GRU(8) -> Dropout -> "
                      "Dense(8, relu) -> Dense(5, softmax); videos of 8, 5 and 2 frames",
                      x, "float32", extra_inputs=[mask])
    mark_bool(out_dir, name, mask)


def main(out_dir):
    rng = np.random.default_rng(1130 + 7)
    video_classifier(out_dir, rng)
    mask_everywhere(out_dir, rng)
    keras2_video_classifier(out_dir, rng)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
