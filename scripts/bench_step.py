#!/usr/bin/env python3
"""Anchors for the one-step benchmark: PyTorch's `nn.GRUCell` and Keras 3's `GRUCell`
(TensorFlow backend) stepped as a decoder steps them, on the same shapes and thread counts
as `examples/bench_step`, merged with its JSON into one table with ratios.

    python3 scripts/bench_step.py [--threads 1,2] [--shape B,T,I,H ...] [--out DIR]

A timed run is T steps from a zero state, each step's state fed to the next, with one
input of batch B and I features, H units; rows give the median run's time per step (f32,
inference). PyTorch: the cell under no_grad. Keras: the cell's call in a `tf.function`,
called once per step from Python (how a Keras decoding loop runs a compiled step).
Uses target/anchors-venv (see bench_anchors.py, which makes it); writes DIR/bench.json and
DIR/bench.md (DIR defaults to target/bench-step).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_anchors import frameworks, median_ms, parse_args, run_all  # noqa: E402

DEFAULT_SHAPES = ["1,100,128,256", "1,100,512,512", "8,100,256,512", "64,100,128,256"]


def worker(threads, shapes):
    """Runs inside the venv, in a fresh process per thread count."""
    np, tf, keras, torch = frameworks(threads)
    rows = []
    for b, t, i, h in shapes:
        x = np.random.default_rng(0).standard_normal((b, i)).astype("float32")
        cell = torch.nn.GRUCell(i, h)
        xt = torch.from_numpy(x)

        def torch_steps():
            with torch.no_grad():
                s = torch.zeros(b, h)
                for _ in range(t):
                    s = cell(xt, s)

        kcell = keras.layers.GRUCell(h)
        kx = tf.constant(x)
        kcell(kx, [tf.zeros((b, h))])

        @tf.function
        def kstep(v, s):
            return kcell(v, [s], training=False)[0]

        def keras_steps():
            s = tf.zeros((b, h))
            for _ in range(t):
                s = kstep(kx, s)
            s.numpy()

        for name, fn in [("torch", torch_steps), ("keras-tf", keras_steps)]:
            ms = median_ms(fn)
            rows.append({"impl": name, "mode": "step", "B": b, "T": t, "I": i, "H": h, "threads": threads,
                         "median_ms": ms, "step_us": ms * 1e3 / t})
            print(f"{name:<10} B={b} I={i} H={h} threads={threads} {ms * 1e3 / t:.1f} us/step", file=sys.stderr)
    return rows


def main():
    args, shapes, threads_list = parse_args(DEFAULT_SHAPES, "bench-step")
    if args.worker:
        print(json.dumps(worker(threads_list[0], shapes)))
        return
    rows = run_all("bench_step", __file__, shapes, threads_list, args.out)
    json.dump(rows, open(os.path.join(args.out, "bench.json"), "w"), indent=1)

    def get(imp, s, th):
        m = [r["step_us"] for r in rows if r["impl"] == imp and r["threads"] == th
             and (r["B"], r["T"], r["I"], r["H"]) == tuple(s)]
        return m[0] if m else float("nan")

    lines = ["| shape (B,T,I,H) | threads | GruCell us/step | frozen twin | candle-nn | PyTorch GRUCell "
             "| Keras GRUCell | GruCell / PyTorch | GruCell / Keras | candle-nn / GruCell |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in shapes:
        for th in threads_list:
            c, f, n, t, k = (get(m, s, th) for m in ["cell", "cell-frozen", "candle-nn", "torch", "keras-tf"])
            lines.append(f"| {','.join(map(str, s))} | {th} | {c:.1f} | {f:.1f} | {n:.1f} | {t:.1f} | {k:.1f} "
                         f"| {c / t:.2f}x | {c / k:.2f}x | {n / c:.2f}x |")
    worst = max(get("cell", s, th) / get("torch", s, th) for s in shapes for th in threads_list)
    lines += ["", f"- GruCell at most 1.0x PyTorch's GRUCell per step at every shape and thread count "
              f"(highest {worst:.2f}x): {'met' if worst <= 1.0 else 'NOT met'}"]
    table = "\n".join(lines)
    open(os.path.join(args.out, "bench.md"), "w").write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
