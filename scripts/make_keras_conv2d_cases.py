#!/usr/bin/env python3
"""Makes the model cases of tests/data/models with 2-D convolutional front ends before GRUs
(Conv2D, MaxPooling2D, AveragePooling2D, BatchNormalization over 4-D tensors, Reshape with
-1 over an input of any length) and the 1-D pooling a training call goes through, with
Keras 3.15.1 (TensorFlow backend, CPU), in the schema of tests/data/models/README.md. Each
case holds `training` (Keras' loss mean(output^2) + model.losses and every gradient, as
`scripts/make_keras_shared_cases.py` writes it); `time_distributed_conv2d_frames` runs a
CNN on every frame of a clip before a GRU; `deepspeech2_conv2d_bigru` also holds
`longer`: inputs of another length and Keras' outputs for them.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/python scripts/make_keras_conv2d_cases.py tests/data/models
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402
from make_keras_shared_cases import gradient_record  # noqa: E402

L = keras.layers


def randomize(model, rng):
    """Normal * 0.4 weights; BatchNormalization's moving variances positive."""
    for v in model.weights:
        w = rng.normal(size=v.shape).astype(np.float32) * 0.4
        if "moving_variance" in v.path:
            w = np.abs(w) + 0.5
        v.assign(w)


def deepspeech2(out_dir, rng):
    """keras.io's DeepSpeech2 (examples/audio/ctc_asr.py) at a small size: a spectrogram of
    any length, two Conv2D + BatchNormalization + ReLU blocks over time and frequency, the
    frequency axis folded into features, bidirectional GRUs, a per-frame softmax."""
    bins = 12
    x_in = L.Input((None, bins), name="input")
    x = L.Reshape((-1, bins, 1), name="expand_dim")(x_in)
    x = L.Conv2D(4, [5, 7], strides=[2, 2], padding="same", use_bias=False, name="conv_1")(x)
    x = L.BatchNormalization(name="conv_1_bn")(x)
    x = L.ReLU(name="conv_1_relu")(x)
    x = L.Conv2D(4, [3, 5], strides=[1, 2], padding="same", use_bias=False, name="conv_2")(x)
    x = L.BatchNormalization(name="conv_2_bn")(x)
    x = L.ReLU(name="conv_2_relu")(x)
    x = L.Reshape((-1, x.shape[-2] * x.shape[-1]))(x)
    for i in (1, 2):
        x = L.Bidirectional(L.GRU(6, return_sequences=True, reset_after=True,
                                  name=f"gru_{i}"), merge_mode="concat")(x)
        if i < 2:
            x = L.Dropout(0.5)(x)
    x = L.Dense(8, name="dense_1")(x)
    x = L.ReLU(name="dense_1_relu")(x)
    x = L.Dropout(0.5)(x)
    y = L.Dense(5, activation="softmax")(x)
    model = keras.Model(x_in, y, name="DeepSpeech_2")
    randomize(model, rng)
    name = "deepspeech2_conv2d_bigru"
    x = rng.normal(size=(2, 9, bins)).astype(np.float32)
    save_case(out_dir, model, name,
              "keras.io DeepSpeech2 (small): Input((None, 12)) -> Reshape((-1, 12, 1)) -> "
              "Conv2D(4, [5, 7], strides [2, 2], same, no bias) -> BatchNormalization -> ReLU -> "
              "Conv2D(4, [3, 5], strides [1, 2], same, no bias) -> BatchNormalization -> ReLU -> "
              "Reshape((-1, 12)) -> 2 x Bidirectional(GRU(6, return_sequences)) with Dropout -> "
              "Dense(8) -> ReLU -> Dropout -> Dense(5, softmax); with Keras' gradients and "
              "outputs for a longer input", x, "float32")
    gradient_record(out_dir, name, model, x)
    longer = rng.normal(size=(2, 14, bins)).astype(np.float32)
    path = os.path.join(out_dir, name + ".json")
    with open(path) as fh:
        case = json.load(fh)
    case["longer"] = {"inputs": longer.tolist(),
                      "expected": np.asarray(model(longer, training=False))
                      .astype(np.float64).tolist()}
    with open(path, "w") as fh:
        json.dump(case, fh)
    print(name, "longer", np.asarray(model(longer)).shape)


def crnn(out_dir, rng):
    """keras.io's captcha OCR model (examples/vision/captcha_ocr.py) at a small size, with
    GRUs: an image of width x height, two Conv2D(relu, same) + MaxPooling2D blocks (odd sizes:
    the last row and column fall out), the height folded into features along the width, a
    Dense, bidirectional GRUs, a per-column softmax."""
    width, height = 15, 9
    img = L.Input((width, height, 1), name="image")
    x = L.Conv2D(4, (3, 3), activation="relu", kernel_initializer="he_normal",
                 padding="same", name="Conv1")(img)
    x = L.MaxPooling2D((2, 2), name="pool1")(x)
    x = L.Conv2D(6, (3, 3), activation="relu", kernel_initializer="he_normal",
                 padding="same", name="Conv2")(x)
    x = L.MaxPooling2D((2, 2), name="pool2")(x)
    x = L.Reshape(target_shape=((width // 4), (height // 4) * 6), name="reshape")(x)
    x = L.Dense(8, activation="relu", name="dense1")(x)
    x = L.Dropout(0.2)(x)
    x = L.Bidirectional(L.GRU(5, return_sequences=True, dropout=0.25))(x)
    x = L.Bidirectional(L.GRU(4, return_sequences=True, dropout=0.25))(x)
    y = L.Dense(6, activation="softmax", name="dense2")(x)
    model = keras.Model(img, y, name="ocr_model_v1")
    randomize(model, rng)
    name = "crnn_ocr_conv2d_pooling"
    x = rng.normal(size=(2, width, height, 1)).astype(np.float32)
    save_case(out_dir, model, name,
              "keras.io captcha OCR (small, GRUs): Input((15, 9, 1)) -> Conv2D(4, 3x3, relu, same) "
              "-> MaxPooling2D(2x2) -> Conv2D(6, 3x3, relu, same) -> MaxPooling2D(2x2) -> "
              "Reshape((3, 12)) -> Dense(8, relu) -> Dropout -> 2 x Bidirectional(GRU, "
              "return_sequences, dropout 0.25) -> Dense(6, softmax); with Keras' gradients",
              x, "float32")
    gradient_record(out_dir, name, model, x)


def variants(out_dir, rng):
    """Conv2D's and the 2-D poolings' settings one by one: strides leaving a row (not a
    column) no window reaches, unequal strides, `same` on odd sizes, unequal dilations,
    groups, pooling windows unlike their strides."""
    model = keras.Sequential([
        keras.Input((14, 40, 4)),
        L.Conv2D(4, (3, 2), strides=(2, 2)),
        L.Conv2D(4, (3, 2), strides=(1, 3), padding="same"),
        L.AveragePooling2D((2, 3), strides=(1, 2), padding="same"),
        L.Conv2D(6, (2, 3), dilation_rate=(2, 1), groups=2, activation="tanh"),
        L.MaxPooling2D((3, 2), strides=(2, 1), padding="same"),
        L.AveragePooling2D((2, 1), strides=(1, 1)),
        L.Reshape((-1, 6)),
        L.GRU(5, return_sequences=True),
        L.Dense(3),
    ], name="conv2d_variants")
    randomize(model, rng)
    name = "conv2d_variants_gru"
    x = rng.normal(size=(2, 14, 40, 4)).astype(np.float32)
    save_case(out_dir, model, name,
              "Sequential: Input((14, 40, 4)) -> Conv2D(4, (3, 2), strides (2, 2)) -> "
              "Conv2D(4, (3, 2), strides (1, 3), same) -> "
              "AveragePooling2D((2, 3), strides (1, 2), same) -> Conv2D(6, (2, 3), dilation "
              "(2, 1), groups 2, tanh) -> MaxPooling2D((3, 2), strides (2, 1), same) -> "
              "AveragePooling2D((2, 1), strides 1) -> Reshape((-1, 6)) -> GRU(5, return_sequences) "
              "-> Dense(3); with Keras' gradients", x, "float32")
    gradient_record(out_dir, name, model, x)


def pooling1d(out_dir, rng):
    """The 1-D convolutions and poolings a training call goes through: a strided Conv1D
    leaving a step no window reaches, windows over odd lengths (the last step in none),
    strides unlike the window, `same` padding."""
    model = keras.Sequential([
        keras.Input((33, 4)),
        L.Conv1D(4, 2, strides=3),
        L.Conv1D(6, 2, activation="tanh"),
        L.MaxPooling1D(2),
        L.AveragePooling1D(3, strides=2, padding="same"),
        L.Conv1D(6, 1),
        L.MaxPooling1D(3, strides=2, padding="same"),
        L.AveragePooling1D(2, strides=1),
        L.GRU(5),
        L.Dense(2),
    ], name="pooling1d_training")
    randomize(model, rng)
    name = "pooling1d_training"
    x = rng.normal(size=(3, 33, 4)).astype(np.float32)
    save_case(out_dir, model, name,
              "Sequential: Input((33, 4)) -> Conv1D(4, 2, strides 3) -> Conv1D(6, 2, tanh) -> "
              "MaxPooling1D(2) over 10 steps -> "
              "AveragePooling1D(3, strides 2, same) -> Conv1D(6, 1) -> MaxPooling1D(3, strides 2, "
              "same) -> AveragePooling1D(2, strides 1) -> GRU(5) -> Dense(2); with Keras' "
              "gradients", x, "float32")
    gradient_record(out_dir, name, model, x)


def video_frames(out_dir, rng):
    """A CNN on every frame of a clip (TimeDistributed Conv2D, MaxPooling2D, Flatten), a
    GRU over the frames: the video-classification pattern."""
    td = L.TimeDistributed
    model = keras.Sequential([
        keras.Input((4, 9, 8, 2)),
        td(L.Conv2D(3, (3, 3), activation="relu", padding="same")),
        td(L.MaxPooling2D((2, 2))),
        td(L.Conv2D(4, (2, 2), strides=(2, 1))),
        td(L.Flatten()),
        L.GRU(5),
        L.Dense(2, activation="softmax"),
    ], name="video_frames")
    randomize(model, rng)
    name = "time_distributed_conv2d_frames"
    x = rng.normal(size=(2, 4, 9, 8, 2)).astype(np.float32)
    save_case(out_dir, model, name,
              "Sequential: Input((4, 9, 8, 2)) frames -> TimeDistributed(Conv2D(3, 3x3, relu, "
              "same)) -> TimeDistributed(MaxPooling2D(2x2)) -> TimeDistributed(Conv2D(4, 2x2, "
              "strides (2, 1))) -> TimeDistributed(Flatten) -> GRU(5) -> Dense(2, softmax); with "
              "Keras' gradients", x, "float32")
    gradient_record(out_dir, name, model, x)


def main(out_dir):
    rng = np.random.default_rng(2211)
    deepspeech2(out_dir, rng)
    crnn(out_dir, rng)
    variants(out_dir, rng)
    pooling1d(out_dir, rng)
    video_frames(out_dir, rng)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
