#!/usr/bin/python3
"""PyTorch side of lora4j's DoraProbe: PEFT's DoRA formula against plain LoRA on the same shapes, interleaved.

/usr/bin/python3 lora-benchmarks/torch/dora.py [--d 1024,4096] [--r 8] [--n 1,64,512] [--seconds 20]

float32, torch.set_num_threads(2), W [d, d] U(+-1/sqrt(d)) with a bias, r = 8, s = 2. Per (d, n), one call of each
variant per round in rotating order (as DoraProbe), medians with the interquartile range, ratios as medians of the
per-round ratios:
  lora_fwd    y = x W^T + b + s (x A^T) B^T                                  under no_grad
  dora_fwd    PEFT's DoraLinearLayer.forward: norm of W + s B A (B @ A formed, [d, d]), c = m / norm,
              y = result + (c - 1) (result - b) + c s B(A(x))                 under no_grad (PEFT recomputes the
              norm every forward unless ENABLE_DORA_CACHING)
  dora_ba_fwd the same formula with lora_weight = B @ A ([d, d], the obvious way; PEFT builds it from an identity
              matrix instead, B(A(eye)), so that FSDP works, which costs a [d, d] x [d, r] product more)
  lora_step   forward with autograd, y.backward(g), grads zeroed (x needs a gradient, as DoraProbe's backward(g))
  dora_step   the same for DoRA (m, A, B trainable), PEFT's formula
  dora_ba_step  the same with B @ A
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def quartiles(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return statistics.median(v), q[0], q[2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--d", default="1024,4096")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--n", default="1,64,512")
    p.add_argument("--seconds", type=float, default=20)
    args = p.parse_args()
    torch.set_num_threads(2)
    r = args.r
    s = 2.0
    print("torch %s, threads %d" % (torch.__version__, torch.get_num_threads()))
    for d in [int(v) for v in args.d.split(",")]:
        g0 = torch.Generator().manual_seed(d)
        bound = 1.0 / d ** 0.5
        W = (torch.rand(d, d, generator=g0) * 2 - 1) * bound
        b = (torch.rand(d, generator=g0) * 2 - 1) * bound
        A = ((torch.rand(r, d, generator=g0) * 2 - 1) * bound).requires_grad_(True)
        B = (torch.randn(d, r, generator=g0) * 1e-3).requires_grad_(True)
        m = (torch.linalg.norm(W + s * (B @ A).detach(), dim=1) * 1.01).detach().requires_grad_(True)

        def lora(x):
            return F.linear(x, W, b) + F.linear(F.linear(x, A), B) * s

        def dora(x, peft=True):
            result = F.linear(x, W, b)
            if peft:
                eye = torch.eye(d, dtype=x.dtype)
                lora_weight = F.linear(F.linear(eye, A), B).T
            else:
                lora_weight = B @ A
            norm = torch.linalg.norm(W + s * lora_weight.detach(), dim=1).detach()
            c = (m / norm).view(1, -1)
            return result + ((c - 1) * (result - b) + c * F.linear(F.linear(x, A), B) * s)

        for n in [int(v) for v in args.n.split(",")]:
            x = torch.randn(n, d, generator=g0)
            xg = x.clone().requires_grad_(True)
            grad = torch.randn(n, d, generator=g0)

            def fwd(f):
                def run():
                    with torch.no_grad():
                        f(x)
                return run

            def step(f):
                def run():
                    f(xg).backward(grad)
                    for t in (A, B, m, xg):
                        t.grad = None
                return run

            def dora_ba(x):
                return dora(x, peft=False)

            variants = [("lora_fwd", fwd(lora)), ("dora_fwd", fwd(dora)), ("dora_ba_fwd", fwd(dora_ba)),
                        ("lora_step", step(lora)), ("dora_step", step(dora)), ("dora_ba_step", step(dora_ba))]
            for _, f in variants * 2:
                f()
            times = {k: [] for k, _ in variants}
            end = time.perf_counter() + args.seconds
            rounds = 0
            while rounds < 5 or (time.perf_counter() < end and rounds < 400):
                for k in range(len(variants)):
                    name, f = variants[(rounds + k) % len(variants)]
                    t = time.perf_counter()
                    f()
                    times[name].append((time.perf_counter() - t) * 1e6)
                rounds += 1
            print("\nd = %d, n = %d: %d interleaved rounds; us, median [25th - 75th percentile]" % (d, n, rounds))
            for name, _ in variants:
                print("  %-12s %12.1f  [%.1f - %.1f]" % ((name,) + quartiles(times[name])))
            for a, bb in (("dora_fwd", "lora_fwd"), ("dora_ba_fwd", "lora_fwd"), ("dora_step", "lora_step"),
                          ("dora_ba_step", "lora_step")):
                ratios = [u / v for u, v in zip(times[a], times[bb])]
                print("    %s / %s %7.3f  [%.3f - %.3f]" % ((a, bb) + quartiles(ratios)))


if __name__ == "__main__":
    main()
