"""Host time of our conv passes: the part of a small pass's time that no kernel can win back.

    TRITON_INTERPRET=1 python bench/host_time.py   # CPU: Triton launches replaced by no-ops
    python bench/host_time.py --gpu                # GPU: real launches at the 128ch l0 20k bench size

Prints the best of 25 rounds of 300 calls, in us per call, for the forward, the forward+backward, and an
autograd Function of the same arity that does nothing (the floor of any op called through autograd). The GPU
mode issues the calls without syncing (host time, as long as the GPU keeps up), then prints the CUDA-event
median of one call as bench/kernels.py times it, and the Python functions that take the host time (cProfile).
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
        return torch.empty(h.shape[0], 16, h.shape[2], device=h.device)

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


def event_ms(fn):
    """CUDA-event median of one call, synced after each: bench/kernels.py's timer (loaded by path, since the
    name `kernels` is the package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tumbler_bench_kernels", Path(__file__).with_name("kernels.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.med_ms(fn, warm=5, rep=200)


def host_profile(fn, calls=300, rows=22):
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(rows)


def main():
    gpu = "--gpu" in sys.argv
    if not gpu:
        for name in ("_recv_kernel", "_send_kernel", "_edge_kernel", "_sender_kernel"):
            setattr(triton_conv, name, lambda tab: _NoLaunch())
    ops = kernels.get_ops("triton")
    spec = kernels.ConvSpec(0, 3, 3)  # the 128ch l0 benchmark config: 1000 nodes (100 on CPU) x 20 neighbours
    n, k, C = (1000 if gpu else 100), 20, 128
    dev = torch.device("cuda" if gpu else "cpu")
    graph = kernels.make_graph(torch.randint(0, n, (n * k,), device=dev),
                               torch.arange(n, device=dev).repeat_interleave(k), n)
    h = torch.randn(n, spec.dim_in, C, device=dev, requires_grad=True)
    Y = torch.randn(n * k, spec.dim_sh, device=dev, requires_grad=True)
    R = torch.randn(n * k, spec.num_paths, C, device=dev, requires_grad=True)
    g = torch.randn(n, spec.dim_out, C, device=dev)

    def fwd():
        with torch.no_grad():
            ops.edge_conv(h, Y, R, graph, spec)

    def fwdbwd():
        torch.autograd.grad(ops.edge_conv(h, Y, R, graph, spec), [h, Y, R], g)

    def floor():
        torch.autograd.grad(_Noop.apply(h, Y, R), [h, Y, R], g)

    def torch_mul():  # a plain torch op of the same arity through autograd, for scale
        torch.autograd.grad((h * 2).sum() + Y.sum() + R.sum(), [h, Y, R])

    def report(fns, tag=""):
        for fn in fns:
            line = f"{fn.__name__ + tag:<14} {best_us(fn):7.1f} us per call"
            if gpu:
                torch.cuda.synchronize()
                line += f"   event median {event_ms(fn) * 1e3:7.1f} us"
            print(line, flush=True)

    report((fwd, fwdbwd, floor) + ((torch_mul,) if gpu else ()))
    if gpu:
        host_profile(fwdbwd)


if __name__ == "__main__":
    main()
