#!/usr/bin/env python3
"""Anchors for the CPU benchmark: Keras 3 (TensorFlow backend) and PyTorch on the same shapes
and thread counts as `bench_cpu`, merged with its JSON into one table with ratios.

    python3 scripts/bench_anchors.py [--threads 1,2] [--shape B,T,I,H ...] [--out DIR]

It installs keras==3.15.1, tensorflow-cpu==2.21.0, torch==2.15.0 and matplotlib into
target/anchors-venv (from PyPI) on first use, runs `bench_cpu` (release build) for each
thread count, times the anchors in fresh processes (thread settings must precede
TensorFlow's start; one-thread runs pinned to one core with taskset), and writes
DIR/bench.json, DIR/bench.md (the table with each row's GFLOP/s and fraction of the sgemm
peak bench_cpu measured, and the goals met or not) and DIR/bench.png (DIR defaults to
target/bench).

Timings are medians after a warm-up, f32, return_sequences=True: "forward" is inference
(Keras: a tf.function of the layer call; PyTorch: nn.GRU under no_grad); "train" is forward +
backward of sum(output) (Keras: GradientTape in a tf.function; PyTorch: autograd).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "anchors-venv")
PY = os.path.join(VENV, "bin", "python")
PINS = ["keras==3.15.1", "tensorflow-cpu==2.21.0", "torch==2.15.0", "numpy", "matplotlib"]
DEFAULT_SHAPES = ["64,100,128,256", "1,100,128,256", "32,500,64,128", "256,50,256,512"]


def ensure_venv():
    if not os.path.exists(PY):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    probe = "import keras, tensorflow, torch, matplotlib"
    if subprocess.call([PY, "-c", probe], stderr=subprocess.DEVNULL) != 0:
        subprocess.check_call([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        subprocess.check_call([PY, "-m", "pip", "install", "-q"] + PINS)


def median_ms(fn, min_time=2.0, min_runs=5, max_runs=200):
    fn()
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def frameworks(threads):
    """Inside the venv: numpy, TensorFlow, Keras (TensorFlow backend) and PyTorch, each
    set to `threads` threads (before TensorFlow starts)."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return np, tf, keras, torch


def worker(threads, shapes):
    """Runs inside the venv, in a fresh process per thread count."""
    np, tf, keras, torch = frameworks(threads)
    rows = []
    for s in shapes:
        b, t, i, h = s
        x = np.random.default_rng(0).standard_normal((b, t, i)).astype("float32")
        layer = keras.layers.GRU(h, return_sequences=True)
        xt = tf.constant(x)
        layer(xt)

        @tf.function
        def fwd(v):
            return layer(v, training=False)

        @tf.function
        def step(v):
            with tf.GradientTape() as tape:
                y = layer(v, training=True)
                loss = tf.reduce_sum(y)
            return tape.gradient(loss, layer.trainable_weights)

        rows.append(("keras-tf", "forward", s, median_ms(lambda: fwd(xt).numpy())))
        rows.append(("keras-tf", "train", s, median_ms(lambda: [g.numpy() for g in step(xt)])))
        gru = torch.nn.GRU(i, h, batch_first=True)
        xp = torch.from_numpy(x)

        def tfwd():
            with torch.no_grad():
                gru(xp)

        def ttrain():
            gru.zero_grad()
            y, _ = gru(xp)
            y.sum().backward()

        rows.append(("torch", "forward", s, median_ms(tfwd)))
        rows.append(("torch", "train", s, median_ms(ttrain)))
        for r in rows[-4:]:
            print(f"{r[0]:<10} {r[1]:<8} {r[2]} threads={threads} {r[3]:.3f} ms", file=sys.stderr)
    return [
        {"impl": n, "mode": m, "B": s[0], "T": s[1], "I": s[2], "H": s[3], "threads": threads, "median_ms": ms}
        for n, m, s, ms in rows
    ]


def plot(rows, path, shapes, threads_list):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = ["fused", "keras-tf", "torch", "candle-nn", "loop"]
    colors = {"fused": "#d62728", "keras-tf": "#1f77b4", "torch": "#2ca02c", "candle-nn": "#9467bd", "loop": "#8c564b"}
    fig, axes = plt.subplots(len(threads_list), 2, figsize=(12, 4 * len(threads_list)), squeeze=False)
    for ti, th in enumerate(threads_list):
        for mi, mode in enumerate(["forward", "train"]):
            ax = axes[ti][mi]
            width = 0.8 / len(impls)
            for k, imp in enumerate(impls):
                vals = []
                for s in shapes:
                    m = [r["median_ms"] for r in rows if r["impl"] == imp and r["mode"] == mode and r["threads"] == th
                         and (r["B"], r["T"], r["I"], r["H"]) == tuple(s)]
                    vals.append(m[0] if m else 0)
                ax.bar([x + k * width for x in range(len(shapes))], vals, width, label=imp, color=colors[imp])
            ax.set_yscale("log")
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(shapes))])
            ax.set_xticklabels(["B%d T%d I%d H%d" % tuple(s) for s in shapes], fontsize=8)
            ax.set_ylabel("median ms (log)")
            ax.set_title(f"{mode}, {th} thread(s)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def parse_args(default_shapes, default_out):
    """The scripts' common arguments: --threads, --shape (repeatable), --out, and the
    internal --worker. Returns (args, shapes, thread counts)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shape", action="append")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", default_out))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in (args.shape or default_shapes)]
    return args, shapes, [int(t) for t in args.threads.split(",")]


def run_all(example, script, shapes, threads_list, out_dir, ours_args=(), worker_args=()):
    """Builds `examples/<example>` (release) and, for each thread count, runs it (with
    `ours_args`) and `script --worker` (with `worker_args`; the anchors, in a fresh process:
    thread settings must precede TensorFlow's start); one-thread runs pinned to one core
    where taskset exists. Returns the rows of both."""
    ensure_venv()
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    shape_args = sum([["--shape", ",".join(map(str, s))] for s in shapes], [])
    subprocess.check_call(["cargo", "build", "--release", "-q", "--example", example], cwd=ROOT)
    bench = os.path.join(ROOT, "target", "release", "examples", example)
    for th in threads_list:
        pin = ["taskset", "-c", str(os.cpu_count() - 1)] if th == 1 and shutil.which("taskset") else []
        ours = os.path.join(out_dir, f"ours_t{th}.json")
        subprocess.check_call(pin + [bench, "--threads", str(th), "--json", ours] + shape_args
                              + list(ours_args), cwd=ROOT)
        rows += json.load(open(ours))
        out = subprocess.check_output(pin + [PY, os.path.abspath(script), "--worker", "--threads", str(th)]
                                      + shape_args + list(worker_args))
        rows += json.loads(out)
    return rows


def main():
    args, shapes, threads_list = parse_args(DEFAULT_SHAPES, "bench")
    if args.worker:
        print(json.dumps(worker(threads_list[0], shapes)))
        return
    rows = run_all("bench_cpu", __file__, shapes, threads_list, args.out)
    json.dump(rows, open(os.path.join(args.out, "bench.json"), "w"), indent=1)

    def get(imp, mode, s, th):
        m = [r["median_ms"] for r in rows if r["impl"] == imp and r["mode"] == mode and r["threads"] == th
             and (r["B"], r["T"], r["I"], r["H"]) == tuple(s)]
        return m[0] if m else float("nan")

    peaks = {r["threads"]: r["gflops"] for r in rows if r["impl"] == "sgemm-peak"}
    gf = {(r["mode"], r["B"], r["T"], r["I"], r["H"], r["threads"]): r.get("gflops")
          for r in rows if r["impl"] == "fused"}
    lines = ["sgemm peak (2048^3 f32, measured by bench_cpu in this run): "
             + ", ".join(f"{th} thread(s) {p:.1f} GFLOP/s" for th, p in sorted(peaks.items())), "",
             "| shape (B,T,I,H) | mode | threads | fused ms | fused GFLOP/s | of peak | Keras-TF ms | torch ms "
             "| candle-nn ms | loop ms | fused / Keras-TF | fused / torch | candle-nn / fused |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in shapes:
        for mode in ["forward", "train"]:
            for th in threads_list:
                f, k, t, c, lp = (get(n, mode, s, th) for n in ["fused", "keras-tf", "torch", "candle-nn", "loop"])
                g = gf.get((mode, *s, th)) or float("nan")
                pk = peaks.get(th, float("nan"))
                lines.append(f"| {','.join(map(str, s))} | {mode} | {th} | {f:.2f} | {g:.1f} | {100 * g / pk:.0f}% "
                             f"| {k:.2f} | {t:.2f} | {c:.2f} | {lp:.2f} "
                             f"| {f / k:.2f}x | {f / t:.2f}x | {c / f:.2f}x |")
    lines += ["", "Goals (one thread unless said):"]

    def goal(text, ok):
        lines.append(f"- {text}: {'met' if ok else 'NOT met'}")

    ref, b1 = (64, 100, 128, 256), (1, 100, 128, 256)
    if ref in shapes and 1 in threads_list:
        g = gf.get(("forward", *ref, 1)) or 0.0
        goal(f"forward at 64,100,128,256 at least 85% of the peak ({100 * g / peaks.get(1, float('inf')):.0f}%)",
             g >= 0.85 * peaks.get(1, float("inf")))
        r = get("fused", "train", ref, 1) / get("keras-tf", "train", ref, 1)
        goal(f"training step at 64,100,128,256 at most 0.8x Keras-TF ({r:.2f}x)", r <= 0.8)
    if b1 in shapes and 1 in threads_list:
        r = get("fused", "forward", b1, 1) / get("torch", "forward", b1, 1)
        goal(f"B=1 forward at most 0.5x PyTorch ({r:.2f}x)", r <= 0.5)
    worst = min(get("candle-nn", m, s, th) / get("fused", m, s, th)
                for s in shapes for m in ["forward", "train"] for th in threads_list)
    goal(f"at least 3x candle-nn at every shape and thread count (lowest {worst:.2f}x)", worst >= 3.0)
    if 1 in threads_list and 2 in threads_list:
        slower = [f"{','.join(map(str, s))} {m}" for s in shapes for m in ["forward", "train"]
                  if get("fused", m, s, 2) > get("fused", m, s, 1)]
        goal("two threads never slower than one" + (f" (slower: {'; '.join(slower)})" if slower else ""),
             not slower)
    table = "\n".join(lines)
    open(os.path.join(args.out, "bench.md"), "w").write(table + "\n")
    print(table)
    subprocess.check_call([PY, "-c", f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                           f"import bench_anchors as b, json; b.plot(json.load(open({os.path.join(args.out, 'bench.json')!r})), "
                           f"{os.path.join(args.out, 'bench.png')!r}, {[list(s) for s in shapes]!r}, {threads_list!r})"])
    print("wrote", os.path.join(args.out, "bench.json"), os.path.join(args.out, "bench.md"), os.path.join(args.out, "bench.png"))


if __name__ == "__main__":
    main()
