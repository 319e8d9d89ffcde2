"""Where one MD step's time goes, for the bench/md.py model (128 ch, l<=1, 2 layers) on fcc Cu.

    python bench/profile_step.py [--reps 6] [--rows 30] [--system cu864|cu4000] [--skin 0.5]

1. Split of one ASE MD step through the static Calculator (medians of --timed calls, ms): the captured graph's
   replay alone (CUDA events), StaticStep.__call__ (neighbour check + replay), Calculator.calculate, and a whole
   ASE VelocityVerlet step; then a torch.profiler table of the ASE steps sorted by host time.
2. torch.profiler over the padded static step run eagerly (no CUDA graph), kernels sorted by their GPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def median_ms(fn, timed: int, cuda_events: bool = False) -> float:
    """Median over `timed` calls of fn (after 3 warm-up calls); host wall time unless cuda_events."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(timed):
        if cuda_events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ase_split(atoms, model, args) -> None:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from potential import Calculator

    calc = Calculator(model, skin=args.skin)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.run(5)
    step = calc.step
    x = torch.tensor(atoms.positions, dtype=torch.float64, device=calc.device)
    rng = np.random.default_rng(0)

    def calculate():  # a new state each call, so ASE's cache never answers
        atoms.positions += rng.normal(scale=1e-5, size=atoms.positions.shape)
        atoms.get_forces()

    rows = {
        "graph replay (GPU, CUDA events)": median_ms(step._graph.replay, args.timed, cuda_events=True),
        "StaticStep(positions)": median_ms(lambda: step(x), args.timed),
        "Calculator via atoms.get_forces": median_ms(calculate, args.timed),
        "VelocityVerlet step": median_ms(lambda: dyn.run(1), args.timed),
    }
    print(f"ASE split, {len(atoms)} atoms, {step.num_edges} edges (padded {step.num_pad_edges}, active bucket "
          f"{step.num_active_edges}), skin {args.skin} Å, "
          f"contraction {step.contraction}, captures {step.captures}, rebuilds {step.rebuilds}")
    for name, ms in rows.items():
        print(f"  {name:40s} {ms:8.3f} ms")
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        dyn.run(args.reps)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=args.rows, max_name_column_width=60))


def kernel_table(atoms, model, args) -> None:
    from potential.static_step import StaticStep

    step = StaticStep(model, torch.tensor(atoms.numbers), [0, len(atoms)], torch.tensor(np.array(atoms.cell[:])),
                      torch.tensor(atoms.pbc), skin=args.skin, cuda_graph=False, stress=True)
    x = torch.tensor(atoms.positions, dtype=torch.float64, device=step.device)
    for _ in range(3):
        step(x)
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(args.reps):
            step(x)
        torch.cuda.synchronize()
    print(f"eager padded step: {len(atoms)} atoms, {step.num_edges} edges (padded {step.num_pad_edges}, active "
          f"bucket {step.num_active_edges}), "
          f"contraction {step.contraction}, {args.reps} steps profiled")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--timed", type=int, default=50)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--skin", type=float, default=0.5)
    p.add_argument("--system", default="cu864", choices=["cu864", "cu4000"])
    p.add_argument("--parts", default="ase,kernels")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in float32 matmuls (the radial MLP)")
    args = p.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    import md as bench_md

    dev = torch.device("cuda")
    atoms = bench_md.with_velocities(bench_md.cu(6 if args.system == "cu864" else 10), 300)
    model = bench_md.ours_model([29], dev)
    if "ase" in args.parts:
        ase_split(atoms, model, args)
    if "kernels" in args.parts:
        kernel_table(atoms, model, args)


if __name__ == "__main__":
    main()
