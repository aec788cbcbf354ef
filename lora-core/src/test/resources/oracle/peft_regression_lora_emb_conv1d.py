#!/usr/bin/python3
"""Writes peft-regression-lora-emb-conv1d.json: PEFT's own regression case lora_emb_conv1d, re-created in PyTorch.

Run with Debian's torch (python3-torch 1.13), from this folder:
    /usr/bin/python3 peft_regression_lora_emb_conv1d.py > peft-regression-lora-emb-conv1d.json

The case is PEFT's tests/regression/test_regression.py, class TestLoraEmbConv1D (huggingface/peft; the adapter is
the one PEFT 0.6.1 saved, in ../real-adapters/converted-peft-0.6.1-regression/lora-emb-conv1d/). PEFT and
transformers are not imported (neither is packaged here): the model and the LoRA formula are written out below.

  torch.manual_seed(0)
  emb    = nn.Embedding(100, 5)                 # weight ~ N(0, 1)          [100, 5]
  conv1d = transformers Conv1D(nf=1, nx=5)      # weight ~ N(0, 0.02²) [5, 1] ([in, out]: fan_in_fan_out), bias 0
  relu, flatten, lin0 = nn.Linear(10, 2), log_softmax(dim=-1)
  input  = arange(90).reshape(9, 10)

PEFT 0.6.1's LoRA forward (src/peft/tuners/lora/layer.py, Embedding and Linear with fan_in_fan_out = True):
  emb:    y = T[x] + (A^T[x] @ B^T) * s            A = lora_embedding_A [r, 100], B = lora_embedding_B [5, r]
  conv1d: y = x @ W + b + (x @ A^T @ B^T) * s      W [5, 1] as stored, A = lora_A [r, 5], B = lora_B [1, r]
  s = lora_alpha / r = 8 / 8

Check that the base weights are PEFT's: get_peft_model with init_lora_weights=False keeps the adapters' random
draws, made from the same generator right after the base model (emb first, then conv1d, in named_modules order):
lora_embedding_A = randn(8, 100), lora_embedding_B = randn(5, 8), then lora_A = nn.Linear(5, 8, bias=False) and
lora_B = nn.Linear(8, 1, bias=False) (kaiming-uniform). If those four draws equal the saved adapter bit for bit, the
generator stream is PEFT's, and so are the base weights drawn before them. The script refuses to write otherwise.

PEFT compares with torch.allclose(expected, actual, atol=1e-4, rtol=1e-4). The fixture holds every base weight,
the ids, the expected intermediate outputs and the final output, in float32 (each value printed as the float64 it
widens to, which reads back exactly), and the output computed in float64 from the same weights.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "..", "real-adapters", "converted-peft-0.6.1-regression", "lora-emb-conv1d")


def read_safetensors(path):
    """A minimal safetensors reader (F32 only): key -> float32 tensor."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        assert meta["dtype"] == "F32", meta
        begin, end = meta["data_offsets"]
        values = struct.unpack("<%df" % ((end - begin) // 4), data[8 + n + begin:8 + n + end])
        out[key] = torch.tensor(values, dtype=torch.float32).reshape(meta["shape"])
    return out


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: a linear layer whose weight is stored [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class ModelEmbConv1D(nn.Module):
    """test_regression.py's ModelEmbConv1D."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 5)
        self.conv1d = Conv1D(1, 5)
        self.relu = nn.ReLU()
        self.flat = nn.Flatten()
        self.lin0 = nn.Linear(10, 2)
        self.sm = nn.LogSoftmax(dim=-1)


def floats(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def main():
    cfg = json.load(open(os.path.join(ADAPTER, "adapter_config.json")))
    saved = read_safetensors(os.path.join(ADAPTER, "adapter_model.safetensors"))
    a_emb = saved["base_model.model.emb.lora_embedding_A"]
    b_emb = saved["base_model.model.emb.lora_embedding_B"]
    a_c = saved["base_model.model.conv1d.lora_A.weight"]
    b_c = saved["base_model.model.conv1d.lora_B.weight"]
    r = cfg["r"]
    s = cfg["lora_alpha"] / r

    torch.manual_seed(0)
    model = ModelEmbConv1D()
    # PEFT's adapter draws, continuing the same generator (see the module doc)
    redrawn = {
        "emb A": (torch.randn((r, 100)), a_emb),
        "emb B": (torch.randn((5, r)), b_emb),
        "conv1d A": (nn.Linear(5, r, bias=False).weight.detach(), a_c),
        "conv1d B": (nn.Linear(r, 1, bias=False).weight.detach(), b_c),
    }
    for name, (drawn, file) in redrawn.items():
        if not torch.equal(drawn, file):
            sys.exit("the generator does not reproduce PEFT's %s: the base weights may not be PEFT's either" % name)

    ids = torch.arange(90).reshape(9, 10)
    with torch.inference_mode():
        table = model.emb.weight
        e = F.embedding(ids, table) + (F.embedding(ids, a_emb.T) @ b_emb.T) * s            # [9, 10, 5]
        c = model.conv1d(e) + (e @ a_c.T @ b_c.T) * s                                       # [9, 10, 1]
        h = model.flat(model.relu(c))                                                       # [9, 10]
        out = model.sm(model.lin0(h))                                                       # [9, 2]
        # the same in float64 from the same float32 weights: how far float32 rounding alone moves the output
        d = lambda t: t.double()
        e64 = F.embedding(ids, d(table)) + (F.embedding(ids, d(a_emb).T) @ d(b_emb).T) * s
        c64 = e64 @ d(model.conv1d.weight) + d(model.conv1d.bias) + (e64 @ d(a_c).T @ d(b_c).T) * s
        out64 = F.log_softmax(F.linear(torch.relu(c64).reshape(9, 10), d(model.lin0.weight), d(model.lin0.bias)), dim=-1)

    json.dump({
        "source": "PEFT tests/regression/test_regression.py TestLoraEmbConv1D; adapter saved by PEFT 0.6.1",
        "torch": torch.__version__,
        "generator_reproduces_peft_adapter": True,
        "atol": 1e-4,
        "rtol": 1e-4,
        "ids": ids.reshape(-1).tolist(),
        "ids_shape": list(ids.shape),
        "emb_weight": {"shape": list(table.shape), "values": floats(table)},
        "conv1d_weight_in_out": {"shape": list(model.conv1d.weight.shape), "values": floats(model.conv1d.weight)},
        "conv1d_bias": {"shape": list(model.conv1d.bias.shape), "values": floats(model.conv1d.bias)},
        "lin0_weight": {"shape": list(model.lin0.weight.shape), "values": floats(model.lin0.weight)},
        "lin0_bias": {"shape": list(model.lin0.bias.shape), "values": floats(model.lin0.bias)},
        "emb_output": {"shape": list(e.shape), "values": floats(e)},
        "conv1d_output": {"shape": list(c.shape), "values": floats(c)},
        "output": {"shape": list(out.shape), "values": floats(out)},
        "output_float64": {"shape": list(out64.shape), "values": floats(out64)},
        "float32_vs_float64_max_abs": float((out.double() - out64).abs().max()),
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
