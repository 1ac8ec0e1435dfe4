#!/usr/bin/env python3
"""Makes tests/data/torch: a PyTorch model with two `nn.GRU`s in one state_dict (an encoder
and a decoder, `batch_first=False` as PyTorch defaults) saved with safetensors, and what
PyTorch computes: the encoder over a padded batch packed by its lengths
(`pack_padded_sequence` / `pad_packed_sequence`), the decoder from the encoder's final
states, unpacked. And a decoder of two `nn.GRUCell`s stepped by hand, each step's output
fed back as the next input.

    python3 scripts/bench_anchors.py --help   # once: makes target/anchors-venv (torch)
    target/anchors-venv/bin/pip install safetensors
    target/anchors-venv/bin/python scripts/make_torch_model_cases.py tests/data/torch
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file


class Seq2Seq(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.GRU(5, 4, num_layers=2, bidirectional=True)
        self.bridge = torch.nn.Linear(8, 6)
        self.decoder = torch.nn.GRU(3, 6)


def main(out_dir):
    torch.manual_seed(1136)
    m = Seq2Seq().eval()
    t, b = 7, 3
    x = torch.randn(t, b, 5)
    lengths = torch.tensor([7, 3, 5])
    for k, n in enumerate(lengths.tolist()):
        x[n:, k] = 0.0  # what a padded batch holds; packing never reads it
    y = torch.randn(4, b, 3)
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, h_n = m.encoder(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=t)
        # The last layer's two final states, concatenated, start the decoder.
        h0 = torch.tanh(m.bridge(torch.cat([h_n[-2], h_n[-1]], dim=-1))).unsqueeze(0)
        dec, dec_h = m.decoder(y, h0)
    path = os.path.join(out_dir, "seq2seq.safetensors")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
    case = {
        "name": "seq2seq",
        "description": "torch.nn.Module with encoder nn.GRU(5, 4, num_layers=2, bidirectional) "
                       "and decoder nn.GRU(3, 6) (batch_first=False) and a Linear bridge, one "
                       "state_dict; the encoder over a padded batch packed by lengths, the "
                       "decoder from tanh(bridge(last layer's final states))",
        "torch_version": torch.__version__,
        "files": ["seq2seq.safetensors"],
        "tensors": {k: list(v.shape) for k, v in m.state_dict().items()},
        "inputs": x.tolist(),
        "lengths": lengths.tolist(),
        "encoder_output": out.tolist(),
        "encoder_h_n": h_n.tolist(),
        "decoder_inputs": y.tolist(),
        "decoder_h0": h0.tolist(),
        "decoder_output": dec.tolist(),
        "decoder_h_n": dec_h.tolist(),
    }
    with open(os.path.join(out_dir, "seq2seq.json"), "w") as fh:
        json.dump(case, fh)
    print("seq2seq", tuple(out.shape), tuple(h_n.shape), tuple(dec.shape))


class CellDecoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = torch.nn.GRUCell(7, 6)
        self.out = torch.nn.Linear(6, 7)
        self.aux = torch.nn.GRUCell(6, 4, bias=False)


def cell_decoder(out_dir):
    """h_t = cell(x_t, h_{t-1}), x_{t+1} = tanh(out(h_t)); g_t = aux(h_t, g_{t-1})."""
    torch.manual_seed(1201)
    m = CellDecoder().eval()
    b, steps = 3, 5
    x0 = torch.randn(b, 7)
    h0 = torch.randn(b, 6) * 0.5
    hs, gs = [], []
    with torch.no_grad():
        x, h, g = x0, h0, torch.zeros(b, 4)
        for _ in range(steps):
            h = m.cell(x, h)
            g = m.aux(h, g)
            x = torch.tanh(m.out(h))
            hs.append(h)
            gs.append(g)
    path = os.path.join(out_dir, "cell_decoder.safetensors")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
    case = {
        "name": "cell_decoder",
        "description": "torch.nn.Module with cell = nn.GRUCell(7, 6), out = nn.Linear(6, 7) and "
                       "aux = nn.GRUCell(6, 4, bias=False); 5 steps from x0 and h0: h = cell(x, h), "
                       "g = aux(h, g) from zeros, x = tanh(out(h))",
        "torch_version": torch.__version__,
        "files": ["cell_decoder.safetensors"],
        "tensors": {k: list(v.shape) for k, v in m.state_dict().items()},
        "x0": x0.tolist(),
        "h0": h0.tolist(),
        "cell_states": torch.stack(hs).tolist(),
        "aux_states": torch.stack(gs).tolist(),
    }
    with open(os.path.join(out_dir, "cell_decoder.json"), "w") as fh:
        json.dump(case, fh)
    print("cell_decoder", tuple(torch.stack(hs).shape))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/torch")
    cell_decoder(sys.argv[1] if len(sys.argv) > 1 else "tests/data/torch")
