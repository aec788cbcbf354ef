#!/usr/bin/python3
"""Writes peft-dora-f32/: a DoRA adapter in PEFT's file format, written from the safetensors spec, independent of lora4j.

Run with Debian's torch (python3-torch 1.13): /usr/bin/python3 peft_dora_adapter.py peft-dora-f32

PEFT (src/peft/tuners/lora/model.py, LoraModel._get_adapter_state_dict) saves DoRA's magnitude under
base_model.model.<module>.lora_magnitude_vector, a 1-D [out] tensor WITHOUT ".weight" (the key predates the
refactor that made it a DoraLinearLayer's "weight" parameter), beside lora_A.weight [r, in] and lora_B.weight [out, r],
and writes use_dora: true in adapter_config.json. Two modules, q_proj [12, 8] and v_proj [6, 8], rank 4, F32.

expected.json holds each module's base weight W [out, in] and bias, the tensors as nested lists, an input x and the
output y of PEFT's DoRA forward (eval mode) computed in float64 from the float32 values:
  y = (m / ||W + s B A||_row) * (x (W + s B A)^T) + b, s = lora_alpha / r.
"""
import json
import os
import struct
import sys

import torch


def safetensors(tensors, metadata):
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, t in tensors.items():
        data = t.to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main(out_dir):
    gen = torch.Generator().manual_seed(4242)
    r, alpha = 4, 8
    s = alpha / r
    modules = {"model.layers.0.self_attn.q_proj": (12, 8), "model.layers.0.self_attn.v_proj": (6, 8)}
    tensors = {}
    expected = {"scaling": s, "modules": {}}
    x = torch.randn(3, 8, generator=gen).to(torch.float32)
    expected["x"] = x.double().tolist()
    for name, (out, inn) in modules.items():
        W = torch.randn(out, inn, generator=gen).to(torch.float32)
        b = torch.randn(out, generator=gen).to(torch.float32)
        A = ((torch.rand(r, inn, generator=gen) * 2 - 1) / inn ** 0.5).to(torch.float32)
        B = (torch.randn(out, r, generator=gen) * 0.2).to(torch.float32)
        V = W.double() + s * (B.double() @ A.double())
        m = (V.norm(dim=1) * (1 + 0.1 * torch.randn(out, generator=gen, dtype=torch.float64))).to(torch.float32)
        c = m.double() / V.norm(dim=1)
        y = c * (x.double() @ V.T) + b.double()
        tensors["base_model.model." + name + ".lora_A.weight"] = A
        tensors["base_model.model." + name + ".lora_B.weight"] = B
        tensors["base_model.model." + name + ".lora_magnitude_vector"] = m
        expected["modules"][name] = {"W": W.double().tolist(), "b": b.double().tolist(), "A": A.double().tolist(),
                                     "B": B.double().tolist(), "magnitude": m.double().tolist(), "y": y.tolist()}
    config = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "tiny-dora-test-model", "bias": "none",
        "corda_config": None, "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha, "lora_bias": False, "lora_dropout": 0.05,
        "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA",
        "r": r, "rank_pattern": {}, "revision": None, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM",
        "use_dora": True, "use_rslora": False,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "adapter_model.safetensors"), "wb") as f:
        f.write(safetensors(tensors, {"format": "pt"}))
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "peft-dora-f32")
