"""Host (Python) time of our conv passes with the Triton launches replaced by no-ops: the part of a small pass's
time that no kernel can win back. CPU is enough (the interpreter is only imported, never run).

    TRITON_INTERPRET=1 python bench/host_time.py

Prints the best of 25 rounds of 300 calls, in us per call, for the forward, the forward+backward, and an
autograd Function of the same arity that does nothing (the floor of any op called through autograd).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernels  # noqa: E402
from kernels.triton import conv as triton_conv  # noqa: E402


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _Noop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, Y, R):
        ctx.shapes = h, Y, R
        return torch.empty(h.shape[0], 16, h.shape[2])

    @staticmethod
    def backward(ctx, g):
        return tuple(torch.empty_like(t) for t in ctx.shapes)


def best_us(fn, rounds=25, calls=300):
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def main():
    for name in ("_recv_kernel", "_send_kernel", "_edge_kernel", "_sender_kernel"):
        setattr(triton_conv, name, lambda tab: _NoLaunch())
    ops = kernels.get_ops("triton")
    spec = kernels.ConvSpec(0, 3, 3)  # the 128ch l0 benchmark config, at 100 nodes x 20 neighbours
    n, k, C = 100, 20, 128
    graph = kernels.make_graph(torch.randint(0, n, (n * k,)), torch.arange(n).repeat_interleave(k), n)
    h = torch.zeros(n, spec.dim_in, C, requires_grad=True)
    Y = torch.zeros(n * k, spec.dim_sh, requires_grad=True)
    R = torch.zeros(n * k, spec.num_paths, C, requires_grad=True)
    g = torch.zeros(n, spec.dim_out, C)

    def fwd():
        with torch.no_grad():
            ops.edge_conv(h, Y, R, graph, spec)

    def fwdbwd():
        torch.autograd.grad(ops.edge_conv(h, Y, R, graph, spec), [h, Y, R], g)

    def floor():
        torch.autograd.grad(_Noop.apply(h, Y, R), [h, Y, R], g)

    for fn in (fwd, fwdbwd, floor):
        print(f"{fn.__name__:<7} {best_us(fn):7.1f} us per call")


if __name__ == "__main__":
    main()
