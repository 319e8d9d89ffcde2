"""Probe: how fast could a synced fwd+bwd of our conv be if its Triton launches cost as little as Python allows?

    python bench/probe_direct_launch.py [--cfg=0,1,2] [--rounds=5] [--modes=jit,library,ideal,minimal]
                                                      (GPU; peers from the bundle on PYTHONPATH)
    python bench/probe_direct_launch.py --pieces      (the host time of each piece of a launch, tight loop)
    python bench/probe_direct_launch.py --addresses   (an empty kernel of the sender's arity: its launcher given
                                                       tensors, or their device addresses; tight loop, host-bound)

Our conv's launches three ways, in rounds that alternate with OpenEquivariance's and cuEquivariance's fwd+bwd and
the two floors of bench/sync_modes.py (synced CUDA-event medians, and the best peer over each):
  jit      kernel[grid](...) every time (JITFunction.run: binding, specialisation, device and stream lookup)
  library  kernels/triton/launch.py as shipped: the compiled kernel's launcher after a specialisation's first launch,
           looked up by the specialisation key
  ideal    the compiled kernel's launcher looked up by (kernel, constexprs) alone, with the stream taken once: no
           key at all, valid here only because every call of a pass has the same specialisation. It hands the
           launcher the tensors, as it was written before launch.py handed it device addresses (07:50), so it
           bounds the launch path of 06:40, not that of launch.py now.
  minimal  not our op at all: an autograd Function that only allocates the outputs and calls the two compiled
           launchers with device addresses (those of the graph read once), no checks, no tile lookup, no key.
           The least a fwd+bwd written in Python with these kernels can cost; what any leaner launch path of the
           library could at best reach.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
import triton
import triton.language as tl

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tumbler_bench_sync_modes", _HERE / "sync_modes.py")
sync_modes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_modes)
bench = sync_modes.bench

from kernels.triton import conv as triton_conv  # noqa: E402

_LIBRARY = triton_conv.launch
_IDEAL: dict = {}  # (kernel, constexprs and options) -> (compiled kernel, constexpr values in parameter order)
_MODE = ["jit"]


def _launch(kernel, grid, *args, **meta):
    if _MODE[0] == "jit":
        kernel[grid](*args, **meta)
        return
    if _MODE[0] == "library":
        return _LIBRARY(kernel, grid, *args, **meta)
    key = (kernel, tuple(meta.items()))
    hit = _IDEAL.get(key)
    if hit is None:  # first call: Triton compiles or finds the kernel; keep it
        compiled = kernel[grid](*args, **meta)
        _IDEAL[key] = compiled, tuple(meta[n] for n in kernel.arg_names[len(args):])
        return
    compiled, consts = hit
    g0, g1 = grid if len(grid) == 2 else (grid[0], 1)
    compiled.run(g0, g1, 1, _STREAM[0], compiled.function, compiled.packed_metadata, None, None, None, *args, *consts)


_STREAM = [0]


def pieces():
    """--pieces: the host time of each piece of launch.py's direct launch, in a tight loop (best of 20 x 2000 calls),
    on the 128ch l0 sender launch of a fwd+bwd."""
    from kernels.triton import launch
    name, fns = sync_modes.passes_for(1, [], ("fwdbwd",))
    kernel, grid, args, meta = _recorded_launches(fns[("tumbler", "fwdbwd")])[-1]
    key = launch._bind(kernel, args, meta)[0]
    compiled, consts, device, current_device, current_stream = launch._DIRECT[key]
    stream = current_stream(device)
    values = launch._bind(kernel, args, meta)[1]
    knobs = launch._knobs
    grid3 = (grid[0], grid[1] if len(grid) > 1 else 1, 1)
    print("enter hook:", knobs.runtime.launch_enter_hook, "exit hook:", knobs.runtime.launch_exit_hook, flush=True)
    cases = {
        "key": lambda: launch._bind(kernel, args, meta),
        "lookup": lambda: launch._DIRECT.get(key, False),
        "current_device": current_device,
        "torch._C._cuda_getDevice": torch._C._cuda_getDevice,
        "current_stream": lambda: current_stream(device),
        "hook reads": lambda: (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook),
        "launch_metadata": lambda: compiled.launch_metadata(grid3, stream, *args, *consts),
        "run, hooks None": lambda: compiled.run(*grid3, stream, compiled.function, compiled.packed_metadata, None, None, None, *args, *consts),
        "run, addresses": lambda: compiled.run(*grid3, stream, compiled.function, compiled.packed_metadata, None, None, None, *values, *consts),
        "run, Triton's hooks": lambda: compiled.run(*grid3, stream, compiled.function, compiled.packed_metadata, compiled.launch_metadata(grid3, stream, *args, *consts), knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *args, *consts),
        "launch.launch": lambda: launch.launch(kernel, grid, *args, **meta),
        "kernel[grid]": lambda: kernel[grid](*args, **meta),
    }
    for label, fn in cases.items():
        print(f"{label:<24} {_tight_us(fn, 2000):7.2f} us", flush=True)


def _recorded_launches(fn) -> list:
    """(kernel, grid, args, meta) of every launch.launch that reaches launch._run in two calls of fn, with the
    conv's plans forgotten first (a planned launch does not go through launch._run)."""
    from kernels.triton import launch, tuning
    tuning.knobs_changed()
    seen = []
    real = launch._run
    launch._run = lambda kernel, grid, args, meta: seen.append((kernel, grid, args, meta)) or real(kernel, grid, args, meta)
    try:
        fn()
        fn()
    finally:
        launch._run = real
    return seen


def _tight_us(fn, calls: int, rounds: int = 20) -> float:
    """The best of `rounds` tight loops of `calls` calls, in us per call (the device synchronised before each)."""
    best = float("inf")
    for _ in range(rounds):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    torch.cuda.synchronize()
    return best


@triton.jit
def _empty(a, b, c, d, e, f, g, h, i, j, k, E, C, BE: tl.constexpr):
    pass


def addresses():
    """--addresses: the host time of one launch of an empty kernel with the conv sender's 11 pointer and 2 integer
    arguments, through the compiled kernel's launcher handed the tensors (it reads data_ptr() and asks the driver
    about each) or their device addresses (launch.py), and through launch.launch and kernel[grid]."""
    from kernels.triton import launch
    empty = _empty
    tensors = [torch.zeros(64, device="cuda") for _ in range(11)]
    args = (*tensors, 20000, 128)
    launch.launch(empty, (1000, 1), *args, BE=4)  # compiles; the next one goes direct
    launch.launch(empty, (1000, 1), *args, BE=4)
    key, values = launch._bind(empty, args, {"BE": 4})
    compiled, consts, device, current_device, current_stream = launch._DIRECT[key]
    stream = current_stream(device)
    cases = {
        "run, tensors": lambda: compiled.run(1000, 1, 1, stream, compiled.function, compiled.packed_metadata, None,
                                             None, None, *args, *consts),
        "run, addresses": lambda: compiled.run(1000, 1, 1, stream, compiled.function, compiled.packed_metadata,
                                               None, None, None, *values, *consts),
        "bind": lambda: launch._bind(empty, args, {"BE": 4}),
        "launch.launch": lambda: launch.launch(empty, (1000, 1), *args, BE=4),
        "kernel[grid]": lambda: empty[(1000, 1)](*args, BE=4),
        "torch.empty": lambda: torch.empty(64, 16, 128, device="cuda"),
        "new_empty": lambda: tensors[0].new_empty(64, 16, 128),
    }
    for rnd in range(2):
        for label, fn in cases.items():
            print(f"round {rnd} {label:<18} {_tight_us(fn, 500):7.2f} us", flush=True)


def _minimal(ours):
    """The `minimal` mode: ours' two launches, recorded from one call, replayed from a bare autograd Function."""
    from kernels.triton import launch
    (rk, rgrid, rargs, rmeta), (sk, sgrid, sargs, smeta) = _recorded_launches(ours)[-2:]
    r_compiled, r_consts, device, _, current_stream = launch._DIRECT[launch._bind(rk, rargs, rmeta)[0]]
    s_compiled, s_consts = launch._DIRECT[launch._bind(sk, sargs, smeta)[0]][:2]
    r_fixed = launch._bind(rk, rargs, rmeta)[1][4:]  # recv_ptr, recv_ptr, senders, C
    s_fixed = launch._bind(sk, sargs, smeta)[1][7:]  # send_order, send_ptr, send_perm, receivers, E, C
    out_shape, parts_shape = tuple(rargs[3].shape), tuple(sargs[5].shape)
    rg = (rgrid[0], rgrid[1] if len(rgrid) > 1 else 1, 1)
    sg = (sgrid[0], sgrid[1] if len(sgrid) > 1 else 1, 1)
    stream = current_stream(device)
    rr, rf, rm = r_compiled.run, r_compiled.function, r_compiled.packed_metadata
    sr, sf, sm = s_compiled.run, s_compiled.function, s_compiled.packed_metadata

    class Minimal(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h, Y, R):
            ctx.save_for_backward(h, Y, R)
            out = h.new_empty(out_shape)
            rr(*rg, stream, rf, rm, None, None, None, h.data_ptr(), Y.data_ptr(), R.data_ptr(), out.data_ptr(),
               *r_fixed, *r_consts)
            return out

        @staticmethod
        def backward(ctx, g):
            h, Y, R = ctx.saved_tensors
            dh, dR, parts = torch.empty_like(h), torch.empty_like(R), h.new_empty(parts_shape)
            sr(*sg, stream, sf, sm, None, None, None, h.data_ptr(), g.data_ptr(), Y.data_ptr(), R.data_ptr(),
               dh.data_ptr(), parts.data_ptr(), dR.data_ptr(), *s_fixed, *s_consts)
            return dh, (parts if len(parts_shape) == 2 else parts.sum(0)), dR

    h, Y, R = rargs[:3]
    g = sargs[1]
    hl, Yl, Rl = (t.detach().requires_grad_(True) for t in (h, Y, R))
    run = lambda: torch.autograd.grad(Minimal.apply(hl, Yl, Rl), [hl, Yl, Rl], g)  # noqa: E731
    run.function = Minimal  # for bench/host_time.py --timeline
    return run


def main(argv):
    if "--pieces" in argv:
        return pieces()
    if "--addresses" in argv:
        return addresses()
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    cfgs = [int(c) for c in opts.get("cfg", "0,1,2").split(",")]
    rounds = int(opts.get("rounds", "5"))
    _STREAM[0] = torch.cuda.current_stream().cuda_stream
    triton_conv.launch = _launch
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for cfg in cfgs:
        name, fns = sync_modes.passes_for(cfg, ["oeq", "cueq"], ("fwdbwd",))
        ours = fns.pop(("tumbler", "fwdbwd"))

        def with_mode(mode):
            def run():
                _MODE[0] = mode
                ours()
            return run
        _MODE[0] = "library"
        modes = {"jit": lambda: with_mode("jit"), "library": lambda: with_mode("library"),
                 "ideal": lambda: with_mode("ideal"), "minimal": lambda: _minimal(ours)}
        fns = {**{m: modes[m]() for m in opts.get("modes", "jit,library,ideal,minimal").split(",")},
               **{backend: fn for (backend, _), fn in fns.items()}}
        for fn in fns.values():
            fn()
        torch.cuda.synchronize()
        got: dict = {}
        for _ in range(rounds):
            for b, fn in fns.items():
                got.setdefault(b, []).append(bench.med_ms(fn))
        med = {b: float(np.median(v)) for b, v in got.items()}
        best = min((med[p], p) for p in ("oeq", "cueq") if p in med)
        for b, v in got.items():
            print(f"{name:<14} fwd+bwd {b:<10} {med[b]:7.3f} ms  best peer / this {best[0] / med[b]:5.2f}x   rounds "
                  + " ".join(f"{x:.3f}" for x in v), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
