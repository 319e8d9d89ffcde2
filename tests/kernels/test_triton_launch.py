"""Launching and compiling ahead (kernels/triton/launch.py).

CPU: `launch` is Triton's kernel[grid] outside a recording pass and only a note inside; a precompile pass records
and hands the launches to compile_ahead; forked workers compile one of our generated kernels for sm_90 through
triton.compile (no GPU needed: that is the point of compiling there). GPU: launches compiled ahead are cache hits
at their first real launch and give the numbers of launches that compiled at first use. Budget: ~15 s on CPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.kernels._triton_common import GPU, requires_triton

pytestmark = requires_triton
ROOT = Path(__file__).resolve().parents[2]


class Kernel:
    """A stand-in for a jitted kernel: kernel[grid](*args, **meta) appends to calls."""

    def __init__(self, calls: list):
        self.calls = calls

    def __getitem__(self, grid):
        return lambda *args, **meta: self.calls.append((grid, args, meta))


def test_launch_is_the_kernels_own_launch_outside_a_recording_pass():
    from kernels.triton import launch
    calls = []
    k = Kernel(calls)
    launch.launch(k, (3, 1), "x", 7, BE=4, num_warps=2)
    assert calls == [((3, 1), ("x", 7), {"BE": 4, "num_warps": 2})] and not launch.compiling()
    with launch.recording() as noted:
        assert launch.compiling()
        launch.launch(k, (5,), "y", BE=8)
    assert noted == [(k, (5,), ("y",), {"BE": 8})] and len(calls) == 1 and not launch.compiling()


def test_precompile_records_the_launches_then_compiles_them_ahead(monkeypatch):
    """fn runs once with its launches only recorded (nothing launches, backward passes too), and compile_ahead
    gets them all; a nested pass is part of the outer one."""
    from kernels.triton import launch
    calls, handed = [], []
    monkeypatch.setattr(launch, "compile_ahead", lambda launches, workers: handed.append((list(launches), workers)))
    k = Kernel(calls)

    def step():
        x = torch.ones(3, requires_grad=True)
        y = Square.apply(x, k)
        launch.precompile(lambda: launch.launch(k, (2,), "inner"))  # nested: recorded by the outer pass
        y.sum().backward()  # the backward launch is recorded too (run on this thread)

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, kernel):
            launch.launch(kernel, (1,), "forward")
            return x * x

        @staticmethod
        def backward(ctx, g):
            launch.launch(k, (1,), "backward")
            return g, None

    launch.precompile(step, workers=3)
    assert calls == [] and not launch.compiling()
    ((launches, workers),) = handed
    assert [args for _, _, args, _ in launches] == [("forward",), ("inner",), ("backward",)] and workers == 3


_WORKER_SCRIPT = """
import sys, warnings
sys.path.insert(0, {root!r})
from triton.backends.compiler import GPUTarget
from kernels.triton import launch, sh
fwd, bwd = sh.fwd_kernel(1), sh.bwd_kernel(1)  # (V, A, B, E, BLOCK, KP): jitted, not interpreted
sig = dict(V="*fp32", A="*fp32", B="*fp32", E="i32", BLOCK="constexpr", KP="constexpr")
attrs = {{(i,): [["tt.divisibility", 16]] for i in range(3)}}
job = lambda kernel, s: ((kernel, s, {{(4,): 256, (5,): 4}}, attrs, {{"num_warps": 4}}), None)
sm90 = GPUTarget("cuda", 90, 32)
ok = launch._compile_in_workers([job(fwd, sig), job(bwd, sig)], sm90, 2)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    bad = launch._compile_in_workers([job(fwd, dict(sig, E="i1024")), job(bwd, sig)], sm90, 2)
print(ok, bad, [str(w.message) for w in caught])
"""


def test_workers_compile_generated_kernels_for_sm90_without_a_gpu(tmp_path):
    """What a forked worker does: triton.compile(ASTSource, target=GPUTarget) of the jobs, into Triton's on-disk
    cache; a job that fails makes the pass report it (the caller then compiles in its own process)."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "triton"),
           "TUMBLER_KERNEL_CACHE": str(tmp_path / "src"), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _WORKER_SCRIPT.format(root=str(ROOT))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ok, bad, warned = done.stdout.strip().splitlines()[-1].split(" ", 2)
    assert (ok, bad) == ("True", "False") and "compiling in this process instead" in warned, done.stdout
    cubins = sorted(p.name for p in (tmp_path / "triton").rglob("*.cubin"))
    assert cubins == ["sh_bwd_l1.cubin", "sh_fwd_l1.cubin"], cubins


_AHEAD_SCRIPT = """
import json, sys, torch
from triton import knobs
sys.path.insert(0, {root!r})
import kernels
from kernels import ConvSpec, make_graph
from kernels.triton import conv, launch
torch.manual_seed(0)
N, E, C = 50, 400, 32
recv = torch.sort(torch.randint(0, N, (E,)))[0].cuda()
graph = make_graph(torch.randint(0, N, (E,)).cuda(), recv, N)
tab = conv.table_for(1, 2, 1)
h, Y, R = torch.randn(N, 4, C).cuda(), torch.randn(E, 9).cuda(), torch.randn(E, tab.P, C).cuda()
g = torch.randn(N, 4, C).cuda()
step = lambda: (conv.conv_recv(h, Y, R, graph, tab), conv.conv_sender(h, Y, R, g, graph, tab, True, True))
with launch.recording() as launches:
    step()
compiled = []
knobs.compilation.listener = lambda **kw: compiled.append(kw["cache_hit"])
launch.compile_ahead(launches, 2)
ahead = list(compiled)  # compiled in this process by compile_ahead itself: none
first = step()
hits = list(compiled[len(ahead):])
knobs.compilation.listener = None
ref = kernels.get_ops("reference")
out = ref.edge_conv(h.double(), Y.double(), R.double(), graph, ConvSpec(1, 2, 1))
err = float((first[0].double() - out).norm() / out.norm())
print(json.dumps(dict(launches=len(launches), ahead=ahead, hits=hits, err=err)))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="compiling ahead needs a CUDA device (its target and Triton's JIT)")
def test_launches_compiled_ahead_are_cache_hits_at_their_first_launch(tmp_path):
    """compile_ahead in a fresh process with empty caches: the workers compile (nothing compiles in this process
    meanwhile), then every first launch loads its kernel from the cache, and the conv gives the reference's
    numbers."""
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / "triton"), "TUMBLER_KERNEL_CACHE": str(tmp_path / "src"),
           "TUMBLER_AUTOTUNE": "0"}
    done = subprocess.run([sys.executable, "-c", _AHEAD_SCRIPT.format(root=str(ROOT))], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["launches"] == 2 and result["ahead"] == [], result
    assert result["hits"] == [True, True], result  # each kernel loaded from the workers' cache entry
    assert result["err"] < 1e-5, result
