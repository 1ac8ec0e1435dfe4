#!/usr/bin/env python3
"""Makes the model cases of tests/data/models with `Dot` layers: the attention decoder
written with Dot and softmax that Keras 2 tutorials taught (scores = Dot(axes=[2, 2])(
[decoder, encoder]), weights = softmax, context = Dot(axes=[2, 1])([weights, encoder])),
and a cosine proximity (`Dot(axes=1, normalize=True)`) of two GRU states, with Keras 3.15.1
(TensorFlow backend, CPU) and the same model in Keras 2 (tf_keras 2.21.0: `.h5`,
`save_weights` `.h5` and `.keras`), in the schema of tests/data/models/README.md.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (keras, tf)
    target/anchors-venv/bin/pip install --no-deps tf_keras==2.21.0
    target/anchors-venv/bin/python scripts/make_keras_dot_attention_cases.py tests/data/models
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_model_cases import keras, np, save_case  # noqa: E402
import make_keras2_h5_cases as k2cases  # noqa: E402


def build(k, t, t_dec):
    L = k.layers
    enc_in = k.Input(shape=(t, 5))
    dec_in = k.Input(shape=(t_dec, 3))
    enc, state = L.GRU(6, return_sequences=True, return_state=True)(L.Masking(0.0)(enc_in))
    dec, dec_state = L.GRU(6, return_sequences=True, return_state=True)(
        dec_in, initial_state=state)
    scores = L.Dot(axes=[2, 2])([dec, enc])
    weights = L.Activation("softmax")(scores)
    context = L.Dot(axes=[2, 1])([weights, enc])
    h = L.TimeDistributed(L.Dense(4, activation="tanh"))(L.Concatenate()([context, dec]))
    y = L.Dense(2)(h)
    cosine = L.Dot(axes=1, normalize=True)([state, dec_state])
    return k.Model([enc_in, dec_in], [y, cosine, weights])


def main(out_dir):
    rng = np.random.default_rng(1134)
    b, t, t_dec = 3, 7, 4
    x = rng.normal(size=(b, t, 5)).astype(np.float32)
    x[1, 5:] = 0.0
    x2 = rng.normal(size=(b, t_dec, 3)).astype(np.float32)
    description = ("encoder GRU(6) over Masking, decoder GRU(6, initial_state); Luong "
                   "attention with Dot(axes=[2, 2]) -> softmax -> Dot(axes=[2, 1]) -> "
                   "Concatenate -> TimeDistributed(Dense(4, tanh)) -> Dense(2); the cosine "
                   "of the two final states (Dot(axes=1, normalize)); outputs [Dense, "
                   "cosine, attention weights]")
    model = build(keras, t, t_dec)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                       for w in model.get_weights()])
    outs = [np.asarray(o) for o in model([x, x2], training=False)]
    save_case(out_dir, model, "dot_attention_decoder", "Functional, two inputs: " + description,
              x, "float32", extra_inputs=[x2], expected=outs)

    import tf_keras
    model = build(tf_keras, t, t_dec)
    k2cases.randomize(model, rng)
    k2cases.save_case(out_dir, model, "keras2_dot_attention_decoder",
                      "Keras 2 functional, two inputs: " + description, x, "float32",
                      extra_inputs=[x2])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/models")
