#!/usr/bin/env python3
"""The PyTorch anchor of the GPU benchmark: torch.nn.GRU (cuDNN) on the rows of
examples/bench_gpu.rs, timed the same way, in the same run.

    python3 scripts/bench_gpu_anchor.py [--shape B,T,I,H]... [--json PATH]
        [--ours bench_gpu.json] [--min-time S] [--max-time S]

Rows: torch-f32 (TF32 off), torch-f32-tf32 (TF32 on), torch-bf16; "forward" is inference
under no_grad, "train" is forward + backward of sum(output). Each row: 3 warm-up runs, then
runs until --min-time (default 0.5 s) has passed and at least 5 ran, never past --max-time
(default 3 s) for the row; each run is timed with CUDA events around it and synchronized;
the median is reported. With --ours, prints a markdown table of our rows against
PyTorch's in the same dtype and math (ours / PyTorch per row, see anchor_for).

Without torch or a CUDA device it prints "skipped: ..." and exits 0 (the GPU runner reads
that as SKIPPED). Needs only torch, which the GPU machine's python3 has.
"""
import argparse
import json
import statistics
import sys
import time

DEFAULT_SHAPES = ["64,100,128,256", "1,100,128,256", "256,50,256,512"]
# (PyTorch impl, dtype name, TF32)
ANCHORS = [
    ("torch-f32", "float32", False),
    ("torch-f32-tf32", "float32", True),
    ("torch-bf16", "bfloat16", False),
]


def anchor_for(impl):
    """The PyTorch row an implementation of ours is compared with: the same dtype and math
    (cudnn-f32 and loop-gpu-f32 with torch-f32, cudnn-f32-tf32 with torch-f32-tf32, ...)."""
    if impl.endswith("-tf32"):
        return "torch-f32-tf32"
    if impl.endswith("-bf16"):
        return "torch-bf16"
    if impl.endswith("-f32"):
        return "torch-f32"
    return None


def parse_shape(s):
    v = [int(x) for x in s.split(",")]
    if len(v) != 4 or min(v) <= 0:
        raise SystemExit(f"--shape takes four positive integers B,T,I,H, got {s!r}")
    return tuple(v)


def median_ms(torch, fn, min_time, max_time):
    row_start = time.perf_counter()
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    while not times or (
        (len(times) < 5 or time.perf_counter() - start < min_time)
        and len(times) < 1000
        and time.perf_counter() - row_start < max_time
    ):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), len(times)


def time_row(torch, shape, dtype_name, tf32, train, args):
    b, t, i, h = shape
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dtype = getattr(torch, dtype_name)
    gru = torch.nn.GRU(i, h, batch_first=True).to(device="cuda", dtype=dtype)
    for p in gru.parameters():
        torch.nn.init.uniform_(p, -0.1, 0.1)
    x = (torch.rand(b, t, i, device="cuda") * 2 - 1).to(dtype)

    def forward():
        with torch.no_grad():
            gru(x)

    def step():
        gru.zero_grad(set_to_none=True)
        out, _ = gru(x)
        out.sum().backward()

    return median_ms(torch, step if train else forward, args.min_time, args.max_time)


def table(ours_rows, torch_rows):
    key = lambda r: (r["mode"], r["B"], r["T"], r["I"], r["H"])
    theirs = {(r["impl"],) + key(r): r for r in torch_rows}
    lines = [
        "| shape (B,T,I,H) | mode | ours | ours ms | PyTorch ms | ours / PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for r in ours_rows:
        pair = anchor_for(r["impl"])
        shape = f'{r["B"]},{r["T"]},{r["I"]},{r["H"]}'
        ours = r.get("median_ms")
        other = theirs.get((pair,) + key(r)) if pair else None
        anchor = other.get("median_ms") if other else None
        ratio = f"{ours / anchor:.2f}x" if ours and anchor else "-"
        fmt = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else "error" if v is None else v
        lines.append(
            f'| {shape} | {r["mode"]} | {r["impl"]} | {fmt(ours)} | {fmt(anchor) if pair else "-"} | {ratio} |'
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", default=[])
    ap.add_argument("--json")
    ap.add_argument("--ours")
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--max-time", type=float, default=3.0)
    args = ap.parse_args()
    shapes = [parse_shape(s) for s in (args.shape or DEFAULT_SHAPES)]
    try:
        import torch
    except ImportError as e:
        print(f"skipped: no torch in this python ({e})")
        return 0
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}")
    print(f'{"impl":<16} {"mode":<9} {"B":>5} {"T":>5} {"I":>5} {"H":>5} {"median ms":>11} {"runs":>6}')
    rows = []
    for shape in shapes:
        for name, dtype_name, tf32 in ANCHORS:
            for mode in ("forward", "train"):
                row = dict(impl=name, mode=mode, B=shape[0], T=shape[1], I=shape[2], H=shape[3])
                head = f"{name:<16} {mode:<9} " + " ".join(f"{v:>5}" for v in shape)
                try:
                    ms, runs = time_row(torch, shape, dtype_name, tf32, mode == "train", args)
                    row.update(median_ms=ms, runs=runs)
                    print(f"{head} {ms:>11.3f} {runs:>6}", flush=True)
                except Exception as e:  # one failing row must not stop the others
                    row["error"] = repr(e)
                    print(f"{head} ERROR {e!r}", flush=True)
                rows.append(row)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(rows, f, indent=1)
    if args.ours:
        try:
            with open(args.ours) as f:
                ours = json.load(f)
        except (OSError, ValueError) as e:
            print(f"no rows of ours to compare ({e})")
            return 0
        print()
        print(table(ours, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
