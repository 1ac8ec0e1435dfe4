#!/usr/bin/env python3
"""Anchors for the model benchmark: keras.io's DeepSpeech2 speech model (Conv2D front end,
two bidirectional GRU layers, a per-frame softmax over 32 classes) in Keras 3 (TensorFlow
backend, the same `.keras` file candle-gru reads) and in PyTorch (the same layers and
sizes), on the same shapes and thread counts as `examples/bench_models`, merged with its
JSON into one table with ratios.

    python3 scripts/bench_models.py [--threads 1,2] [--shape B,T,I,H ...] [--out DIR]

A shape is batch B, T spectrogram frames of I bins, GRUs of H units. "forward" is
inference (Keras: a tf.function of the model call; PyTorch: no_grad). "train" is a
training call (BatchNormalization on the batch's statistics, dropout on), the CTC loss of
the same random targets (a quarter as many labels as output frames, the blank last;
Keras: keras.ops.ctc_loss in a tf.function with a GradientTape; PyTorch: F.ctc_loss) and
the gradients of every variable, no optimizer step. Uses target/anchors-venv (see
bench_anchors.py, which makes it); writes the models to DIR/models and DIR/bench.json,
DIR/bench.md (DIR defaults to target/bench-models).
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_anchors import PY, ROOT, ensure_venv, frameworks, median_ms, parse_args, run_all  # noqa: E402

DEFAULT_SHAPES = ["4,200,161,128"]
CLASSES = 32


def same(length, span, stride):
    """TensorFlow's `same` padding (before, after)."""
    out = -(-length // stride)
    total = max((out - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def keras_model(keras, i, h):
    L = keras.layers
    x_in = L.Input((None, i))
    x = L.Reshape((-1, i, 1))(x_in)
    x = L.Conv2D(32, [11, 41], strides=[2, 2], padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(32, [11, 21], strides=[1, 2], padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Reshape((-1, x.shape[-2] * x.shape[-1]))(x)
    for k in range(2):
        x = L.Bidirectional(L.GRU(h, return_sequences=True, reset_after=True))(x)
        if k == 0:
            x = L.Dropout(0.5)(x)
    x = L.Dense(2 * h)(x)
    x = L.ReLU()(x)
    x = L.Dropout(0.5)(x)
    y = L.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(x_in, y, name="DeepSpeech_2")


def model_path(out_dir, s):
    return os.path.join(out_dir, "models", "ds2_{}_{}_{}_{}.keras".format(*s))


def make_models(out_dir, shapes):
    _, _, keras, _ = frameworks(1)
    os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
    for s in shapes:
        keras_model(keras, s[2], s[3]).save(model_path(out_dir, s))


def targets(np, b, length):
    k = np.arange(b * length)
    return ((k * 7919 + 13) % (CLASSES - 1)).reshape(b, length).astype("int32")


def torch_model(torch, i, h):
    nn, F = torch.nn, torch.nn.functional

    class DS2(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, (11, 41), stride=(2, 2), bias=False)
            self.bn1 = nn.BatchNorm2d(32)
            self.conv2 = nn.Conv2d(32, 32, (11, 21), stride=(1, 2), bias=False)
            self.bn2 = nn.BatchNorm2d(32)
            f = -(-(-(-i // 2)) // 2)
            self.gru1 = nn.GRU(32 * f, h, batch_first=True, bidirectional=True)
            self.gru2 = nn.GRU(2 * h, h, batch_first=True, bidirectional=True)
            self.dense = nn.Linear(2 * h, 2 * h)
            self.out = nn.Linear(2 * h, CLASSES)

        def conv(self, x, conv, bn, stride):
            kh, kw = conv.kernel_size
            (t0, t1), (f0, f1) = same(x.shape[2], kh, stride[0]), same(x.shape[3], kw, stride[1])
            return F.relu(bn(conv(F.pad(x, (f0, f1, t0, t1)))))

        def forward(self, x):
            x = self.conv(x.unsqueeze(1), self.conv1, self.bn1, (2, 2))
            x = self.conv(x, self.conv2, self.bn2, (1, 2))
            b, c, t, f = x.shape
            x = x.permute(0, 2, 3, 1).reshape(b, t, f * c)
            x = F.dropout(self.gru1(x)[0], 0.5, self.training)
            x = self.gru2(x)[0]
            x = F.dropout(F.relu(self.dense(x)), 0.5, self.training)
            return F.log_softmax(self.out(x), dim=-1)

    return DS2()


def worker(threads, shapes, out_dir):
    """Runs inside the venv, in a fresh process per thread count."""
    np, tf, keras, torch = frameworks(threads)
    rows = []
    for s in shapes:
        b, t, i, h = s
        x = np.random.default_rng(0).standard_normal((b, t, i)).astype("float32")
        frames = -(-t // 2)
        length = max(frames // 4, 1)
        y = targets(np, b, length)
        tl, ol = np.full((b,), length, "int32"), np.full((b,), frames, "int32")
        model = keras.saving.load_model(model_path(out_dir, s))
        xt = tf.constant(x)

        @tf.function
        def fwd(v):
            return model(v, training=False)

        @tf.function
        def step(v):
            with tf.GradientTape() as tape:
                probs = model(v, training=True)
                logp = tf.math.log(tf.clip_by_value(probs, 1e-7, 1.0))
                loss = tf.reduce_mean(keras.ops.ctc_loss(y, logp, tl, ol, mask_index=CLASSES - 1))
            return tape.gradient(loss, model.trainable_variables)

        rows.append(("keras-tf", "forward", s, median_ms(lambda: fwd(xt).numpy())))
        rows.append(("keras-tf", "train", s, median_ms(lambda: [g.numpy() for g in step(xt)])))
        net = torch_model(torch, i, h)
        xp, yp = torch.from_numpy(x), torch.from_numpy(y).long()
        tlp, olp = torch.from_numpy(tl).long(), torch.from_numpy(ol).long()

        def tfwd():
            net.eval()
            with torch.no_grad():
                net(xp)

        def ttrain():
            net.train()
            net.zero_grad()
            logp = net(xp)
            loss = torch.nn.functional.ctc_loss(logp.transpose(0, 1), yp, olp, tlp,
                                                blank=CLASSES - 1)
            loss.backward()

        rows.append(("torch", "forward", s, median_ms(tfwd)))
        rows.append(("torch", "train", s, median_ms(ttrain)))
        for r in rows[-4:]:
            print(f"{r[0]:<10} {r[1]:<8} {r[2]} threads={threads} {r[3]:.1f} ms", file=sys.stderr)
    return [{"impl": n, "mode": m, "B": s[0], "T": s[1], "I": s[2], "H": s[3],
             "threads": threads, "median_ms": ms} for n, m, s, ms in rows]


def table(rows, shapes, threads_list):
    def get(imp, mode, s, th):
        for r in rows:
            if (r["impl"], r["mode"], r["threads"]) == (imp, mode, th) and \
                    (r["B"], r["T"], r["I"], r["H"]) == tuple(s):
                return r["median_ms"]
        return None

    lines = ["| B,T,I,H | mode | threads | candle-gru ms | Keras-TF ms | PyTorch ms | "
             "ours/Keras | ours/PyTorch |", "|---|---|---|---|---|---|---|---|"]
    for s in shapes:
        for mode in ("forward", "train"):
            for th in threads_list:
                o, k, p = (get(n, mode, s, th) for n in ("candle-gru", "keras-tf", "torch"))
                lines.append(f"| {','.join(map(str, s))} | {mode} | {th} | {o:.1f} | {k:.1f} | "
                             f"{p:.1f} | {o / k:.2f}x | {o / p:.2f}x |")
    return "\n".join(lines)


def main():
    args, shapes, threads_list = parse_args(DEFAULT_SHAPES, "bench-models")
    if args.worker:
        print(json.dumps(worker(threads_list[0], shapes, args.out)))
        return
    ensure_venv()
    shape_args = sum([["--shape", ",".join(map(str, s))] for s in shapes], [])
    subprocess.check_call([PY, os.path.abspath(__file__), "--make", "--out", args.out] + shape_args)
    out = os.path.abspath(args.out)
    rows = run_all("bench_models", __file__, shapes, threads_list, out,
                   ours_args=["--models", os.path.join(out, "models")], worker_args=["--out", out])
    md = table(rows, shapes, threads_list)
    print(md)
    with open(os.path.join(args.out, "bench.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as fh:
        fh.write(md + "\n")


if __name__ == "__main__":
    if "--make" in sys.argv:
        sys.argv.remove("--make")
        a, sh, _ = parse_args(DEFAULT_SHAPES, "bench-models")
        make_models(a.out, sh)
    else:
        main()
