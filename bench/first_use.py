"""What the first force-training step costs on a fresh machine: Triton compiling our generated kernels, and
autotuning (kernels/triton/autotune.py) compiling and timing its candidate tiles. GPU only.

    python bench/first_use.py --cold [--variants=0,0p,1,1p,again]   # each in a fresh process (see VARIANTS)
    python bench/first_use.py [--precompile]   # one process, with the caches as they are

--compile-times: one process (cold caches wanted), kernels compiled one after another at their first launches;
prints each kernel's compile time (Triton's jit_cache_hook -> jit_post_compile_hook), longest first.
--precompile: the kernels of the step are compiled at once, in forked worker processes, before it
(kernels.Ops.precompile, as the trainer does before the first step of a process); without it each compiles at its
first launch.

Model: 64 channels, hidden l<=1, sh l<=3, correlation 3, two interactions, float32; batch: eight copies of the
first 3BPA structure (216 atoms; .bench_data/3bpa_first.xyz, or --xyz). Prints the first step's seconds and the
median of the next 20 steps.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


VARIANTS = {  # name: (TUMBLER_AUTOTUNE, --precompile, fresh caches)
    "0": ("0", False, True), "0p": ("0", True, True), "1": ("1", False, True), "1p": ("1", True, True),
    "again": ("1", True, False),
}


def cold(xyz: str, variants: list) -> None:
    """Each variant in a new process: TUMBLER_AUTOTUNE 0 or 1, without or with --precompile, on empty Triton,
    source and autotune caches; "again" finds the caches of the variant before it (what every later run on the
    machine sees)."""
    for name in variants:
        mode, precompile, fresh = VARIANTS[name]
        if fresh:
            tmp = Path(tempfile.mkdtemp(prefix="tumbler_first_use_"))
            caches = dict(TRITON_CACHE_DIR=str(tmp / "triton"), TUMBLER_KERNEL_CACHE=str(tmp / "src"),
                          TUMBLER_AUTOTUNE_CACHE=str(tmp / "autotune"))
        subprocess.run([sys.executable, __file__, "--xyz", xyz] + (["--precompile"] if precompile else []),
                       env={**os.environ, **caches, "TUMBLER_AUTOTUNE": mode}, check=True)


def force_train_step(xyz: str, copies: int = 8, channels: int = 64):
    """(model, step): step() is one force-training step of the bench model on `copies` copies of the structure
    in `xyz` (forces by autograd with create_graph, a loss on them, its gradient to every weight), synced."""
    sys.path.insert(0, str(ROOT))
    import ase.io
    import torch

    import potential
    from data import Batch

    config = dict(elements=[1, 6, 7, 8], channels=channels, lmax=1, lmax_sh=3, correlation=3, num_interactions=2,
                  r_max=5.0, num_bessel=8, radial_hidden=[64, 64], readout_hidden=16, avg_num_neighbors=15.0,
                  atomic_energies=[-13.6, -1029.5, -1484.0, -2041.3], scale=1.0, shift=0.0, dtype="float32",
                  backend="triton")
    model = potential.Potential(potential.ModelConfig.from_dict(config)).cuda()
    batch = Batch.from_atoms([ase.io.read(xyz)] * copies, cutoff=5.0, device="cuda", dtype=torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        out = model(batch, forces=True, training=True)
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2
        torch.autograd.grad(loss, params, allow_unused=True)
        torch.cuda.synchronize()
    return model, step


def compile_times(xyz: str) -> None:
    from triton import knobs
    model, step = force_train_step(xyz)
    started, took = {}, []

    def before(**kwargs):
        started[kwargs["repr"], str(kwargs["key"])] = time.perf_counter()

    def after(**kwargs):
        seconds = time.perf_counter() - started.pop((kwargs["repr"], str(kwargs["key"])))
        took.append((seconds, f"{kwargs['fn'].name} {kwargs['repr'][:120]}"))

    knobs.runtime.jit_cache_hook, knobs.runtime.jit_post_compile_hook = before, after
    t = time.perf_counter()
    step()
    total = time.perf_counter() - t
    print(f"first step {total:.1f} s, {len(took)} kernels compiled in {sum(s for s, _ in took):.1f} s")
    for seconds, name in sorted(took, reverse=True):
        print(f"{seconds:7.2f} s  {name}")


def one(xyz: str, precompile: bool) -> None:
    import torch
    model, step = force_train_step(xyz)
    t = time.perf_counter()
    if precompile:
        model.ops.precompile(step, torch.device("cuda"))
    ahead = time.perf_counter() - t
    step()
    first = time.perf_counter() - t
    times = []
    for _ in range(20):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    print(f"TUMBLER_AUTOTUNE={os.environ.get('TUMBLER_AUTOTUNE', '1')}"
          f"{f', precompiled in {ahead:.1f} s' if precompile else ', no precompile'}: first step {first:.1f} s "
          f"(precompile included), then median {times[10] * 1e3:.2f} ms", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold", action="store_true", help="each --variants entry in a fresh process with empty caches")
    p.add_argument("--precompile", action="store_true", help="compile the step's kernels at once before it")
    p.add_argument("--compile-times", action="store_true", help="each kernel's compile time, longest first")
    p.add_argument("--variants", default="0,0p,1,1p,again", help="with --cold: which, in order (VARIANTS)")
    p.add_argument("--xyz", default=str(ROOT / ".bench_data" / "3bpa_first.xyz"))
    a = p.parse_args()
    if a.cold:
        cold(a.xyz, a.variants.split(","))
    elif a.compile_times:
        compile_times(a.xyz)
    else:
        one(a.xyz, a.precompile)
