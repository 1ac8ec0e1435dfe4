#!/usr/bin/env python3
"""Checks the models `examples/keras_export` writes with Keras 3 itself: `load_model` reads
each `NAME.keras` and computes the case's first output (every output, where the case records
them all) as candle-gru did; a fresh copy of the
architecture (`clone_model`) reads `NAME.weights.h5` with `load_weights` and computes them
too (abs 1e-5 + rel 1e-5). Prints a line per model and exits 1 on any failure.

    KERAS_BACKEND=numpy python3 scripts/check_keras_export.py DIR   # needs keras, h5py, numpy
"""
import glob
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "numpy")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402


def main(d):
    failed, files = 0, sorted(glob.glob(os.path.join(d, "*.json")))
    for path in files:
        case = json.load(open(path))
        name = case["name"]
        dtype = "int32" if case.get("input_dtype") == "int32" else "float32"
        extra = case.get("extra_inputs") or []
        dtypes = case.get("extra_input_dtypes") or [dtype] * len(extra)
        x = [np.array(case["inputs"], dtype=dtype)]
        x += [np.array(v, dtype=d if d in ("int32", "bool") else "float32") for v, d in zip(extra, dtypes)]
        x = x[0] if len(x) == 1 else x
        # Every output when the case records them all, else the first.
        wants = [np.array(e["data"]).reshape(e["shape"])
                 for e in case.get("expected_outputs") or [case["expected"]]]
        line = []
        try:
            model = keras.saving.load_model(os.path.join(d, name + ".keras"))
            fresh = keras.models.clone_model(model)
            fresh.load_weights(os.path.join(d, name + ".weights.h5"))
            for what, m in ((".keras", model), (".weights.h5", fresh)):
                gots = m(x, training=False)
                gots = list(gots) if isinstance(gots, (list, tuple)) else [gots]
                ok, err = len(gots) >= len(wants), 0.0
                for got, want in zip(gots, wants):
                    got = np.asarray(got)
                    same = got.shape == want.shape
                    ok &= same and bool(np.all(np.abs(got - want) <= 1e-5 + 1e-5 * np.abs(want)))
                    err = max(err, float(np.max(np.abs(got - want))) if same else float("inf"))
                line.append(f"{what} max err {err:.1e}{'' if ok else ' FAIL'}")
                failed += not ok
        except Exception as e:  # noqa: BLE001
            line.append(f"FAIL: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            failed += 1
        print(f"{name:<40} " + "  ".join(line))
    print(f"keras {keras.__version__} ({keras.backend.backend()}): {len(files)} models, {failed} failures")
    return 1 if failed or not files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
