"""Where the synced time of a small pass goes: the 20k-edge conv passes, ours and the peers, under process
settings that change the host's part and not the GPU's. GPU only; peers from the bundle on PYTHONPATH.

    python bench/sync_modes.py [--cfg=0,1,2] [--rounds=3] [--peers=oeq,cueq] [--settings=default,one_thread]
        [--phases=clean,profiled,graphed] [--passes=fwdbwd,dbl]

Settings, taken in turn within each round (so a drift of the host's speed hits all of them alike):
  default      as bench/kernels.py runs
  one_thread   torch.autograd.set_multithreading_enabled(False): the backward runs on the calling thread
               instead of the engine's CUDA device thread (no hand-off between threads and no wake-up)
  no_gc        gc.disable() (Python's collector never runs inside a timed call)
Phases (--phases, in order; each adds to the process's history): `clean` (nothing else has run yet),
`profiled` (after one torch.profiler session per pass, as bench/kernels.py's GPU-time column runs after each
timing), `graphed` (after each pass was captured in a CUDA graph and replayed, as its graph column).
Prints, for each config, phase, pass, backend and setting, the median CUDA-event ms of synced calls and the
median host ms of the same calls (bench/kernels.py's med_ms), as the median over rounds; then one JSON line.

Two floors are timed beside the fwd+bwd passes, on the same inputs, with next to no GPU work:
  floor_py     an autograd Function of the conv's arity written in Python that allocates its outputs and launches
               nothing: the least any Python-level op pays for a synced fwd+bwd, whatever its kernels
  floor_aten   one ATen op with three differentiable inputs (torch.addcmul on [N, 1, C] tensors: a launch
               forward, two backward), whose autograd node is C++: what an op wired in C++ would pay
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, _HERE / file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load("tumbler_bench_kernels", "kernels.py")  # puts the repo root on sys.path
import kernels  # noqa: E402

SETTINGS = ("default", "one_thread", "no_gc")
PHASES = {  # what runs on every pass before a phase's timings (they accumulate, in the order given)
    "clean": lambda fn: None,
    "profiled": bench.gpu_ms,  # one torch.profiler session, as bench/kernels.py's GPU-time column
    "graphed": bench.graph_ms,  # captured in a CUDA graph and replayed, as its graph column
}


@contextlib.contextmanager
def setting(name):
    if name == "no_gc":
        gc.disable()
        try:
            yield
        finally:
            gc.enable()
    elif name == "one_thread":
        with torch.autograd.set_multithreading_enabled(False):
            yield
    else:
        yield


class _PythonFloor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, Y, R, K_out):
        ctx.save_for_backward(h, Y, R)
        return h.new_empty(h.shape[0], K_out, h.shape[2])

    @staticmethod
    def backward(ctx, g):
        h, Y, R = ctx.saved_tensors
        return torch.empty_like(h), torch.empty_like(Y), torch.empty_like(R), None


def floors(x, Yd, w, g, n, C):
    """{(floor, "fwdbwd"): fn}: the two floors of the module docstring."""
    a, b, c = (torch.randn(n, 1, C, device="cuda", requires_grad=True) for _ in range(3))
    ga = torch.randn(n, 1, C, device="cuda")
    return {("floor_py", "fwdbwd"): lambda: torch.autograd.grad(_PythonFloor.apply(x, Yd, w, g.shape[1]), [x, Yd, w], g),
            ("floor_aten", "fwdbwd"): lambda: torch.autograd.grad(torch.addcmul(a, b, c), [a, b, c], ga)}


def passes_for(cfg, peers, passes=("fwdbwd", "dbl")):
    """{(backend, pass): fn} for one CONV config: ours as bench/kernels.py builds it, the peers through
    bench/peers.py (their builder hands each pass to `measure`, which here only collects it)."""
    name, lmax_in, C, n, k = bench.CONV[cfg]
    spec = kernels.ConvSpec(lmax_in, 3, 3)
    send, recv = bench.graph(n, k)
    gr = kernels.make_graph(send, recv, n)
    ops = kernels.get_ops("triton")
    E = send.shape[0]
    torch.manual_seed(0)
    x = torch.randn(n, spec.dim_in, C, device="cuda", requires_grad=True)
    vec = torch.randn(E, 3, device="cuda", requires_grad=True)
    w = torch.randn(E, spec.num_paths, C, device="cuda", requires_grad=True)
    Yd = ops.spherical_harmonics(vec, 3).detach().requires_grad_(True)
    g = torch.randn(n, spec.dim_out, C, device="cuda")
    _, fwdbwd, dbl = bench.conv_passes(ops, spec, gr, x, vec, w, Yd, g)
    fns = {("tumbler", "fwdbwd"): fwdbwd, ("tumbler", "dbl"): dbl, **floors(x, Yd, w, g, n, C)}
    for peer in peers:  # one call per peer: its pass closures read the builder's loop variables
        collected = []
        (row,) = bench._peers().conv_rows(lmax_in, C, send, recv, n, [peer], lambda fn: collected.append(fn) or {})
        if "error" not in row:  # collected: fwd, fwdbwd, dbl
            fns[(peer, "fwdbwd")], fns[(peer, "dbl")] = collected[1], collected[2]
    return name, {k: fn for k, fn in fns.items() if k[1] in passes}


def main(argv):
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    cfgs = [int(c) for c in opts.get("cfg", "0,1,2").split(",")]
    rounds = int(opts.get("rounds", "3"))
    peers = [p for p in opts.get("peers", "oeq,cueq").split(",") if p]
    settings = opts.get("settings", ",".join(SETTINGS)).split(",")
    phases = opts.get("phases", "clean,profiled").split(",")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    results = []
    for cfg in cfgs:
        name, fns = passes_for(cfg, peers, opts.get("passes", "fwdbwd,dbl").split(","))
        for fn in fns.values():  # compile and warm every pass before any timing
            fn()
        torch.cuda.synchronize()
        for phase in phases:
            for fn in fns.values():
                PHASES[phase](fn)
            got = {}
            for _ in range(rounds):
                for (backend, p), fn in fns.items():
                    for s in settings:
                        with setting(s):
                            ms = bench.med_ms(fn)
                        got.setdefault((backend, p, s), []).append((ms, bench.LAST_HOST_MS[0]))
            for (backend, p, s), v in got.items():
                ev, host = np.median([a for a, _ in v]), np.median([b for _, b in v])
                print(f"{name:<14} {phase:<8} {p:<7} {backend:<8} {s:<11} event {ev:7.3f} ms   host {host:7.3f} ms"
                      f"   rounds {' '.join(f'{a:.3f}' for a, _ in v)}", flush=True)
                results.append(dict(cfg=name, phase=phase, pass_=p, backend=backend, setting=s, event_ms=ev,
                                    host_ms=host, rounds=[a for a, _ in v]))
    print(json.dumps(results))
    summary(results, peers)


def summary(results, peers):
    """Last: for each config, phase and setting, the best peer's synced fwd+bwd over ours and over each floor
    (a ratio under 1.5 for floor_py: no op written in Python reaches 1.5x that peer in synced calls)."""
    at = {(r["cfg"], r["phase"], r["setting"], r["backend"]): r["event_ms"] for r in results if r["pass_"] == "fwdbwd"}
    for cfg, phase, s in sorted({k[:3] for k in at}):
        best = min(((at[(cfg, phase, s, p)], p) for p in peers if (cfg, phase, s, p) in at), default=None)
        if best is None:
            continue
        line = " ".join(f"{b} {at[(cfg, phase, s, b)]:.3f} ({best[0] / at[(cfg, phase, s, b)]:.2f}x)"
                        for b in ("tumbler", "floor_py", "floor_aten") if (cfg, phase, s, b) in at)
        print(f"fwd+bwd {cfg:<14} {phase:<8} {s:<11} best peer {best[1]} {best[0]:.3f} ms; {line}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
