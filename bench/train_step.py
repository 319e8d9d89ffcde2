"""Steady-state time of one force-training step (bench/first_use.py's model and step), with torch's autograd
engine running the backward on its CUDA device thread (torch's default) or on the calling thread
(torch.autograd.set_multithreading_enabled(False)). GPU only.

    python bench/train_step.py [--copies=8,64] [--rounds=5] [--steps=20] [--profile]

--profile: instead, the Python functions that take the host time of 50 steps (cProfile, by own time).

The settings alternate within each round, so a drift of the host's speed hits both alike. Prints the median
ms per step of each setting and size (median over rounds of the per-round medians).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_use import ROOT, force_train_step  # noqa: E402


def median_ms(step, steps: int, one_thread: bool) -> float:
    times = []
    with torch.autograd.set_multithreading_enabled(not one_thread):
        for _ in range(steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main(argv):
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    xyz = opts.get("xyz", str(ROOT / ".bench_data" / "3bpa_first.xyz"))
    rounds, steps = int(opts.get("rounds", "5")), int(opts.get("steps", "20"))
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for copies in (int(c) for c in opts.get("copies", "8,64").split(",")):
        _, step = force_train_step(xyz, copies)
        for _ in range(3):  # compile, tune, warm
            step()
        if "--profile" in argv:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.runcall(lambda: [step() for _ in range(50)])
            pstats.Stats(prof).sort_stats("tottime").print_stats(40)
            pstats.Stats(prof).sort_stats("cumtime").print_stats(40)
            continue
        got = {False: [], True: []}
        for _ in range(rounds):
            for one_thread in (False, True):
                got[one_thread].append(median_ms(step, steps, one_thread))
        for one_thread, v in got.items():
            print(f"3BPA x {copies:<3} {'calling thread' if one_thread else 'device thread ':<15} "
                  f"{np.median(v):7.2f} ms per step   rounds {' '.join(f'{x:.2f}' for x in v)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
