#!/usr/bin/env python3
"""Makes the ONNX case `torch_exported_gru` (tests/data/onnx): a bidirectional
`torch.nn.GRU` exported by `torch.onnx.export`, with onnxruntime's values at its GRU node,
in the schema of the other ONNX cases (tests/data/onnx/README.md).

    python3 -m venv target/onnx-venv && target/onnx-venv/bin/pip install torch onnx onnxruntime
    target/onnx-venv/bin/python scripts/make_torch_onnx_case.py tests/data/onnx

The GRU node's own inputs and outputs are read by exposing them as extra graph outputs.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch


def tensor(a):
    a = np.asarray(a)
    dtype = "int32" if a.dtype.kind in "iu" else "float32"
    data = a.astype(np.float64 if dtype == "float32" else np.int64).ravel().tolist()
    return {"dtype": dtype, "shape": list(a.shape), "data": data}


def main(out_dir):
    torch.manual_seed(7)
    gru = torch.nn.GRU(input_size=5, hidden_size=6, num_layers=1, bidirectional=True)
    x = torch.randn(7, 3, 5)
    h0 = torch.randn(2, 3, 6)
    path = os.path.join(out_dir, "torch_exported_gru.onnx")
    torch.onnx.export(gru, (x, h0), path, input_names=["input", "h0"], output_names=["output", "h_n"],
                      opset_version=17, dynamo=False)
    model = onnx.load(path)
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    names = {"X": node.input[0], "Y": node.output[0], "Y_h": node.output[1]}
    if len(node.input) > 4 and node.input[4]:
        names["sequence_lens"] = node.input[4]
    if len(node.input) > 5 and node.input[5]:
        names["initial_h"] = node.input[5]
    graph_outputs = {o.name for o in model.graph.output}
    for n in names.values():
        if n not in graph_outputs and n not in {i.name for i in model.graph.input}:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input": x.numpy(), "h0": h0.numpy()}
    wanted = [n for k, n in names.items() if n not in feeds]
    got = dict(zip(wanted, sess.run(wanted, feeds)))
    got.update(feeds)
    with torch.no_grad():
        ref_out, ref_h = gru(x, h0)
    value = lambda key: got[names[key]]
    # The node's Y (T, D, B, H) is PyTorch's output (T, B, D*H) before its reshape.
    assert np.allclose(value("Y").transpose(0, 2, 1, 3).reshape(7, 3, 12), ref_out.numpy(), atol=1e-5)
    assert np.allclose(value("Y_h"), ref_h.numpy(), atol=1e-5)
    inputs = {k: tensor(value(k)) for k in ("X", "sequence_lens", "initial_h") if k in names}
    case = {
        "name": "torch_exported_gru",
        "kind": "onnx",
        "description": f"torch.onnx.export of nn.GRU(5, 6, bidirectional=True), torch {torch.__version__}, opset 17",
        "files": ["torch_exported_gru.onnx"],
        "opset": 17,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "gru_nodes": [{"node": node.name or node.output[0], "inputs": inputs,
                        "expected": {"Y": tensor(value("Y")), "Y_h": tensor(value("Y_h"))}}],
    }
    with open(os.path.join(out_dir, "torch_exported_gru.json"), "w") as f:
        json.dump(case, f, indent=1)
    print(f"wrote {path} and torch_exported_gru.json: node {case['gru_nodes'][0]['node']}, inputs {sorted(inputs)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/onnx")
