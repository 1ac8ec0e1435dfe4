#!/usr/bin/env python3
"""Checks the models `examples/onnx_export` writes: onnxruntime loads each `export_K.onnx`,
runs it on the case's `X`, and its `Y` and `Y_h` must equal what candle-gru computed
(abs 1e-5 + rel 1e-5). Prints a line per model and exits 1 on any failure.

    python3 scripts/check_onnx_export.py DIR      # needs numpy and onnxruntime
"""
import glob
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def array(t):
    return np.array(t["data"], dtype=np.float64).reshape(t["shape"])


def main(d):
    failed, files = 0, sorted(glob.glob(os.path.join(d, "export_*.json")))
    for path in files:
        case = json.load(open(path))
        node = case["gru_nodes"][0]
        sess = ort.InferenceSession(os.path.join(d, case["files"][0]), providers=["CPUExecutionProvider"])
        x = array(node["inputs"]["X"]).astype(np.float32)
        dirs, hidden = array(node["expected"]["Y_h"]).shape[0], array(node["expected"]["Y_h"]).shape[2]
        h0 = np.zeros((dirs, x.shape[1], hidden), dtype=np.float32)
        y, y_h = sess.run(["Y", "Y_h"], {"X": x, "initial_h": h0})
        errs, bad = [], 0
        for name, got in (("Y", y), ("Y_h", y_h)):
            want = array(node["expected"][name])
            if got.shape != want.shape:
                errs.append(f"{name} shape {got.shape}, expected {want.shape}")
                bad += 1
                continue
            err = float(np.max(np.abs(got - want)))
            bad += not np.all(np.abs(got - want) <= 1e-5 + 1e-5 * np.abs(want))
            errs.append(f"{name} max err {err:.1e}")
        failed += bad
        print(f"{case['name']:<12} {'FAIL' if bad else 'PASS'}  {', '.join(errs)}")
    print(f"onnxruntime {ort.__version__}: {len(files)} exported models checked, {failed} outputs failed")
    return 1 if failed or not files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
