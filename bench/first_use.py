"""First use on a fresh machine: how long the first force-training step takes while Triton compiles our kernels.

    python bench/first_use.py --xyz train_300K.xyz --cold       # the documented table: fresh caches, 5 variants
    python bench/first_use.py --xyz train_300K.xyz --compile-times   # each kernel's compile time, longest first

The step: a 64-channel, hidden-l<=1, correlation-3, two-layer model (float32, Triton kernels) on eight copies of
the first structure of --xyz (3BPA, 27 atoms: 216 atoms for the documented numbers); forces by autograd with
create_graph, a loss on them, its gradient to every weight, then a synchronize.
--cold runs each variant in a new process on empty Triton, kernel-source and autotune caches:
  0   TUMBLER_AUTOTUNE=0 (the default tiles), each kernel compiled at its first launch
  0p  TUMBLER_AUTOTUNE=0, with the trainer's precompile (kernels.Ops.precompile: the step's kernels compiled at
      once in forked worker processes before the step)
  1, 1p  the same with autotuning (every tile candidate compiled and timed)
  again  1p in a later process that finds the caches of the variant before it (every later run on the machine)
Each prints the seconds of the first step (precompile included) and the median ms of the next 20 steps; --cold
writes them to bench/results/first-use-<GPU>-<UTC time>.json (and $OUT/ when set). GPU only.
"""
from __future__ import annotations

import argparse
import json
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


def cold(xyz: str, variants: list) -> list[dict]:
    """Each variant in a new process (see VARIANTS); returns the JSON line each printed last."""
    rows, caches = [], {}
    for name in variants:
        mode, precompile, fresh = VARIANTS[name]
        if fresh:
            tmp = Path(tempfile.mkdtemp(prefix="tumbler_first_use_"))
            caches = dict(TRITON_CACHE_DIR=str(tmp / "triton"), TUMBLER_KERNEL_CACHE=str(tmp / "src"),
                          TUMBLER_AUTOTUNE_CACHE=str(tmp / "autotune"))
        run = subprocess.run([sys.executable, __file__, "--xyz", xyz] + (["--precompile"] if precompile else []),
                             env={**os.environ, **caches, "TUMBLER_AUTOTUNE": mode}, capture_output=True, text=True)
        out = run.stdout
        print(out, end="", flush=True)
        if run.returncode:
            raise SystemExit(f"first_use.py: variant {name} failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
        rows.append({"variant": name, **json.loads(out.strip().splitlines()[-1])})
    return rows


def force_train_step(xyz: str, copies: int = 8, channels: int = 64):
    """(model, step): step() is one force-training step of the bench model on `copies` copies of the first
    structure in `xyz` (forces by autograd with create_graph, a loss on them, its gradient to every weight),
    synced."""
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
    batch = Batch.from_atoms([ase.io.read(xyz, index=0)] * copies, cutoff=5.0, device="cuda", dtype=torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        out = model(batch, forces=True, training=True)
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2
        torch.autograd.grad(loss, params, allow_unused=True)
        torch.cuda.synchronize()
    return model, step


def compile_times(xyz: str) -> None:
    """One process, kernels compiled one after another at their first launches: each one's compile time (from
    Triton's jit_cache_hook to its jit_post_compile_hook), longest first. Run it on empty caches."""
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
    """This process's first step and the median of the next 20; the last line printed is JSON."""
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
    row = dict(autotune=os.environ.get("TUMBLER_AUTOTUNE", "1"), precompile_s=ahead if precompile else None,
               first_step_s=first, steady_ms=times[10] * 1e3)
    print(f"TUMBLER_AUTOTUNE={row['autotune']}"
          f"{f', precompiled in {ahead:.1f} s' if precompile else ', no precompile'}: first step {first:.1f} s "
          f"(precompile included), then median {row['steady_ms']:.2f} ms")
    print(json.dumps(row), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xyz", required=True, help="ASE-readable structure file; its first frame is used")
    p.add_argument("--cold", action="store_true", help="each --variants entry in a fresh process; writes JSON")
    p.add_argument("--variants", default="0,0p,1,1p,again", help="with --cold: which, in order (default %(default)s)")
    p.add_argument("--precompile", action="store_true", help="one process: compile the step's kernels before it")
    p.add_argument("--compile-times", action="store_true", help="one process: each kernel's compile time")
    a = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    if a.cold:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from result_file import header, write_result
        result = header(torch.cuda.get_device_name())
        result.update(xyz=a.xyz, copies=8, rows=cold(a.xyz, a.variants.split(",")))
        print(f"wrote {write_result('first-use', result)}")
    elif a.compile_times:
        compile_times(a.xyz)
    else:
        one(a.xyz, a.precompile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
