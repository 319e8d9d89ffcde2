"""Where one MD step's GPU time goes: torch.profiler over the padded static step (eager, no CUDA graph) of the
bench/md.py model (128 ch, l<=1, 2 layers) on fcc Cu, kernels sorted by their total GPU time.

    python bench/profile_step.py [--reps 6] [--rows 30] [--system cu864|cu4000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--system", default="cu864", choices=["cu864", "cu4000"])
    args = p.parse_args(argv)
    import md as bench_md
    from potential.static_step import StaticStep

    dev = torch.device("cuda")
    atoms = bench_md.cu(6 if args.system == "cu864" else 10)
    model = bench_md.ours_model([29], dev)
    import numpy as np

    step = StaticStep(model, torch.tensor(atoms.numbers), [0, len(atoms)], torch.tensor(np.array(atoms.cell[:])),
                      torch.tensor(atoms.pbc), skin=0.5, cuda_graph=False)
    x = torch.tensor(atoms.positions, dtype=torch.float64, device=dev)
    for _ in range(3):
        step(x)
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(args.reps):
            step(x)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70)
    print(f"{args.system}: {len(atoms)} atoms, {step.num_edges} edges (padded {step.num_pad_edges}), "
          f"contraction {step.contraction}, {args.reps} steps profiled")
    print(table)


if __name__ == "__main__":
    main()
