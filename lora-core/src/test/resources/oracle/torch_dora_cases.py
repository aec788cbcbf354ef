#!/usr/bin/python3
"""Writes torch-dora-cases.json: DoRA linear layers computed by PyTorch float64 autograd, independent of lora4j.

Run with Debian's torch (python3-torch 1.13): /usr/bin/python3 torch_dora_cases.py > torch-dora-cases.json

The formula is PEFT's, written out here from its source (huggingface/peft, src/peft/tuners/lora/dora.py
DoraLinearLayer.get_weight_norm / forward, variants.py DoraLinearVariant.forward / merge_safe, layer.py
Linear.forward), not imported from PEFT:

  result   = F.linear(x, transpose(W, fan_in_fan_out), b)               # the base layer, bias included
  V        = transpose(W, fan_in_fan_out) + s * (B @ A)                 # [out, in], A and B detached here
  norm     = torch.linalg.norm(V, dim=1).detach()                       # row norms, no gradient ("detached")
  c        = (m / norm).view(1, -1)                                     # PEFT's mag_norm_scale
  no dropout, or eval:   base = result - b                               # base_result given
                         y = result + (c - 1) * base + c * (B(A(x))) * s
  dropout p > 0, train:  xd = dropout(x)                                 # base_result is None: recomputed
                         y = result + (c - 1) * F.linear(xd, transpose(W)) + c * (B(A(xd))) * s
  merge:   W' = transpose(c^T, fan_in_fan_out) * (W + transpose(s * B @ A, fan_in_fan_out))

The dropout mask is lora4j's, reproduced here (java.util.SplittableRandom seeded with seed ^ 0x5DEECE66D, one
nextDouble() per input element in row-major order, kept where it is >= p, kept values scaled by 1 / (1 - p)), so
that the cases with dropout check lora4j's dropout semantics and not only its arithmetic.

Loss L = sum(y * gradOutput); the case holds y, dL/dA, dL/dB, dL/dm, dL/dx, the merged weight, the merged output
and the eval-mode output (no dropout), and the magnitude PEFT initialises for B = 0: the row norms of W.
"""
import json

import torch
import torch.nn.functional as F

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


class SplittableRandom:
    """java.util.SplittableRandom(seed): nextLong() = mix64(seed += GOLDEN_GAMMA), nextDouble() = (nextLong() >>> 11) * 2^-53."""

    def __init__(self, seed):
        self.seed = seed & MASK64

    @staticmethod
    def mix64(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def next_double(self):
        self.seed = (self.seed + GOLDEN_GAMMA) & MASK64
        return (self.mix64(self.seed) >> 11) * 2.0 ** -53


def lora4j_mask(seed, count, p):
    rng = SplittableRandom(seed ^ 0x5DEECE66D)
    return [1.0 if rng.next_double() >= p else 0.0 for _ in range(count)]


def transpose(w, fan_in_fan_out):
    return w.T if fan_in_fan_out else w


def peft_dora(x, W, b, A, B, m, s, fan_in_fan_out, mask=None, p=0.0):
    """PEFT's Linear.forward with a DoRA adapter; mask None means eval or dropout 0 (base_result reused)."""
    result = F.linear(x, transpose(W, fan_in_fan_out), b)
    eye = torch.eye(A.shape[1], dtype=x.dtype)
    lora_weight = F.linear(F.linear(eye, A), B).T                      # lora_B(lora_A(x_eye)).T = B @ A
    weight = transpose(W, fan_in_fan_out)
    norm = torch.linalg.norm(weight + s * lora_weight.detach(), dim=1).to(weight.dtype).detach()
    c = (m / norm).view(1, -1)
    if mask is None:
        xd = x
        base = result - b if b is not None else result
    else:
        xd = x * mask / (1.0 - p)
        base = F.linear(xd, transpose(W, fan_in_fan_out))
    lora_result = F.linear(F.linear(xd, A), B)
    return result + ((c - 1) * base + c * lora_result * s)


def peft_merged_weight(W, A, B, m, s, fan_in_fan_out):
    delta = transpose(B @ A, fan_in_fan_out) * s                       # get_delta_weight
    norm = torch.linalg.norm(transpose(W, fan_in_fan_out) + transpose(delta, fan_in_fan_out), dim=1).detach()
    factor = transpose((m / norm).view(-1, 1), fan_in_fan_out)
    return factor * (W + delta)


def case(gen, n, d_in, d_out, r, alpha, rslora, fan_in_fan_out, bias, dropout, seed):
    s = alpha / (r ** 0.5) if rslora else alpha / r
    dt = torch.float64
    W = torch.randn(d_in, d_out, dtype=dt, generator=gen) if fan_in_fan_out else torch.randn(d_out, d_in, dtype=dt, generator=gen)
    b = torch.randn(d_out, dtype=dt, generator=gen) if bias else None
    A = (torch.rand(r, d_in, dtype=dt, generator=gen) * 2 - 1) / d_in ** 0.5
    B = torch.randn(d_out, r, dtype=dt, generator=gen) * 0.3
    x = torch.randn(n, d_in, dtype=dt, generator=gen)
    g = torch.randn(n, d_out, dtype=dt, generator=gen)
    init_norm = torch.linalg.norm(transpose(W, fan_in_fan_out), dim=1)   # PEFT's init with B = 0
    v_norm = torch.linalg.norm(transpose(W, fan_in_fan_out) + s * (B @ A), dim=1)
    m = v_norm * (1 + 0.25 * torch.randn(d_out, dtype=dt, generator=gen))  # a trained magnitude, c != 1
    m[0] = -0.5 * m[0]                                                     # training may make one negative

    mask = None
    mask_list = None
    if dropout > 0:
        mask_list = lora4j_mask(seed, n * d_in, dropout)
        mask = torch.tensor(mask_list, dtype=dt).reshape(n, d_in)

    A_ = A.clone().requires_grad_(True)
    B_ = B.clone().requires_grad_(True)
    m_ = m.clone().requires_grad_(True)
    x_ = x.clone().requires_grad_(True)
    y = peft_dora(x_, W, b, A_, B_, m_, s, fan_in_fan_out, mask, dropout)
    (y * g).sum().backward()
    with torch.no_grad():
        y_eval = peft_dora(x, W, b, A, B, m, s, fan_in_fan_out)
        merged = peft_merged_weight(W, A, B, m, s, fan_in_fan_out)
        y_merged = F.linear(x, transpose(merged, fan_in_fan_out), b)

    def rows(t):
        return t.detach().tolist()

    return {
        "n": n, "in": d_in, "out": d_out, "rank": r, "alpha": alpha, "rslora": rslora, "scaling": s,
        "fanInFanOut": fan_in_fan_out, "dropout": dropout, "seed": seed,
        "W": rows(W), "b": None if b is None else rows(b), "A": rows(A), "B": rows(B), "magnitude": rows(m),
        "x": rows(x), "gradOutput": rows(g), "dropoutMask": mask_list,
        "magnitudeInit": rows(init_norm), "weightNorm": rows(v_norm),
        "y": rows(y), "yEval": rows(y_eval), "yMerged": rows(y_merged), "mergedWeight": rows(merged),
        "gradA": rows(A_.grad), "gradB": rows(B_.grad), "gradMagnitude": rows(m_.grad), "gradInput": rows(x_.grad),
    }


def main():
    gen = torch.Generator().manual_seed(20261205)
    specs = [
        # n, in, out, r, alpha, rslora, fan_in_fan_out, bias, dropout, seed
        (5, 7, 6, 3, 6.0, False, False, True, 0.0, 1),
        (4, 10, 12, 4, 8.0, True, False, False, 0.0, 2),
        (3, 9, 8, 2, 4.0, False, True, True, 0.0, 3),
        (6, 16, 5, 5, 10.0, True, True, False, 0.0, 4),
        (1, 8, 8, 1, 2.0, False, False, True, 0.0, 5),
        (8, 33, 17, 8, 16.0, False, False, True, 0.0, 6),
        (7, 12, 9, 3, 6.0, False, False, True, 0.25, 7),
        (5, 8, 10, 2, 3.0, True, True, True, 0.5, 8),
    ]
    cases = [case(gen, *spec) for spec in specs]
    out = {
        "source": "PyTorch " + torch.__version__ + " float64 autograd, PEFT's DoRA formula (torch_dora_cases.py)",
        "loss": "sum(y * gradOutput)",
        "convention": "W [out,in] ([in,out] when fanInFanOut), A [r,in], B [out,r], magnitude [out]; "
                      "y = (m / ||W + s B A||_row) (x (W + s B A)^T) + b as PEFT computes it (see the script)",
        "cases": cases,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
