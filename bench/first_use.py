"""What the first force-training step costs on a fresh machine: Triton compiling our generated kernels, and
autotuning (kernels/triton/autotune.py) compiling and timing its candidate tiles. GPU only.

    python bench/first_use.py --cold     # each mode in a fresh process with empty caches, then a warm process
    python bench/first_use.py          # one process, with the caches as they are

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


def cold(xyz: str) -> None:
    """Mode 0 then mode 1, each in a new process with empty Triton, source and autotune caches; then mode 1 again
    in a process that finds the caches of the second run (what every later run on the machine sees)."""
    for mode, fresh in (("0", True), ("1", True), ("1", False)):
        if fresh:
            tmp = Path(tempfile.mkdtemp(prefix="tumbler_first_use_"))
            caches = dict(TRITON_CACHE_DIR=str(tmp / "triton"), TUMBLER_KERNEL_CACHE=str(tmp / "src"),
                          TUMBLER_AUTOTUNE_CACHE=str(tmp / "autotune"))
        subprocess.run([sys.executable, __file__, "--xyz", xyz], env={**os.environ, **caches, "TUMBLER_AUTOTUNE": mode},
                       check=True)


def one(xyz: str) -> None:
    sys.path.insert(0, str(ROOT))
    import ase.io
    import torch

    import potential
    from data import Batch

    config = dict(elements=[1, 6, 7, 8], channels=64, lmax=1, lmax_sh=3, correlation=3, num_interactions=2,
                  r_max=5.0, num_bessel=8, radial_hidden=[64, 64], readout_hidden=16, avg_num_neighbors=15.0,
                  atomic_energies=[-13.6, -1029.5, -1484.0, -2041.3], scale=1.0, shift=0.0, dtype="float32",
                  backend="triton")
    model = potential.Potential(potential.ModelConfig.from_dict(config)).cuda()
    batch = Batch.from_atoms([ase.io.read(xyz)] * 8, cutoff=5.0, device="cuda", dtype=torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():  # forces by autograd with create_graph, a loss on them, its gradient to every weight
        out = model(batch, forces=True, training=True)
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2
        torch.autograd.grad(loss, params, allow_unused=True)
        torch.cuda.synchronize()

    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    times = []
    for _ in range(20):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    print(f"TUMBLER_AUTOTUNE={os.environ.get('TUMBLER_AUTOTUNE', '1')}: first step {first:.1f} s, "
          f"then median {times[10] * 1e3:.2f} ms", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold", action="store_true", help="fresh processes and empty caches, both modes")
    p.add_argument("--xyz", default=str(ROOT / ".bench_data" / "3bpa_first.xyz"))
    a = p.parse_args()
    cold(a.xyz) if a.cold else one(a.xyz)
