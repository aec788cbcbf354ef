#!/usr/bin/env python3
"""PyTorch side of lora4j's side-by-side benchmark (lora-benchmarks, package io.github.lora4j.benchmarks.sidebyside).

The Java harness runs this script once per round, between its own rounds, and reads one JSON object per line from
stdout: {"side": "torch", "d": in = out, "r": rank, "n": rows, "target": ..., "median_ms": ..., "p25_ms": ...,
"p75_ms": ..., "calls": ...}. It can also run alone: python3 side_by_side.py --grid small.

Timing, identical to the Java side: 3 warm-up calls, then calls until the budget (1 s) is spent (at least 5), and
the median of those calls. float32, torch.set_num_threads(2), no autograd outside the training targets.

Targets (the same formulas as lora4j's):
  plain       y = x W^T + b                       F.linear, no adapter
  merged      the same gemm after W += s B A      (a merged layer costs its base product)
  unmerged    y = x W^T + b + s (x A^T) B^T       loralib's forward, under no_grad
  step        forward, y.backward(g), zero A.grad and B.grad, with x.requires_grad (dL/dx computed)
  step_nodx   the same with an input that needs no gradient (PyTorch skips dL/dx)
  merge_pair  W.addmm_(B, A, alpha=s) then W.addmm_(B, A, alpha=-s): one merge and one unmerge
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

GRID = [(d, r, n) for d in (1024, 4096) for r in (8, 64) for n in (1, 8, 64, 512)] + [(64, 8, 64)]
SMALL_GRID = [(256, 8, 8), (64, 8, 64)]


def measure(fn, budget):
    for _ in range(3):
        fn()
    times = []
    end = time.perf_counter() + budget
    while len(times) < 5 or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "p25_ms": q[0], "p75_ms": q[2], "calls": len(times)}


def cases(d, r, n):
    g = torch.Generator().manual_seed(d * 1000 + r * 10 + n)
    bound = 1.0 / d ** 0.5
    w = (torch.rand(d, d, generator=g) * 2 - 1) * bound
    b = (torch.rand(d, generator=g) * 2 - 1) * bound
    s = 2.0  # alpha = 2r, as lora4j's benchmark fixtures
    a = ((torch.rand(r, d, generator=g) * 2 - 1) * bound).requires_grad_(True)
    bb = (torch.randn(d, r, generator=g) * 1e-3).requires_grad_(True)
    x = torch.randn(n, d, generator=g)
    xg = x.clone().requires_grad_(True)
    grad = torch.randn(n, d, generator=g)

    def lora(inp):
        result = F.linear(inp, w, b)
        result += (inp @ a.transpose(0, 1) @ bb.transpose(0, 1)) * s
        return result

    def plain():
        with torch.no_grad():
            return F.linear(x, w, b)

    def unmerged():
        with torch.no_grad():
            return lora(x)

    def step(inp):
        def run():
            y = lora(inp)
            y.backward(grad)
            a.grad.zero_()
            bb.grad.zero_()
            inp.grad = None
        return run

    def merge_pair():
        with torch.no_grad():
            w.addmm_(bb, a, alpha=s)
            w.addmm_(bb, a, alpha=-s)

    out = [("plain", plain), ("merged", plain), ("unmerged", unmerged), ("step", step(xg)), ("step_nodx", step(x))]
    if n == 1 or d == 64:
        out.append(("merge_pair", merge_pair))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--grid", choices=["full", "small"], default="full")
    p.add_argument("--round", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(2)
    print(json.dumps({"side": "torch", "info": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "config": torch.__config__.parallel_info().replace("\n", "; ")}), flush=True)
    for d, r, n in (GRID if args.grid == "full" else SMALL_GRID):
        for target, fn in cases(d, r, n):
            m = measure(fn, args.budget)
            m.update({"side": "torch", "round": args.round, "d": d, "r": r, "n": n, "target": target})
            print(json.dumps(m), flush=True)


if __name__ == "__main__":
    sys.exit(main())
