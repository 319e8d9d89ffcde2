"""Training speed on one GPU: steady-state time of one force-training step, and what the autograd thread costs.

    python bench/train_step.py --xyz train_300K.xyz                  # 3BPA x 8 and x 64, the documented sizes
    python bench/train_step.py --xyz mol.xyz --copies 8 --profile    # where the host time goes (cProfile)

The step is bench/first_use.py's: a 64-channel, hidden-l<=1, correlation-3, two-layer model (float32, Triton
kernels) on `copies` copies of the first structure of --xyz (3BPA, 27 atoms, for the documented numbers):
forces by autograd with create_graph, a loss on them, and its gradient to every weight, then a synchronize. No
optimizer, data loading or validation: this is the model's part of a training step. Each setting is timed
with torch's autograd engine running the backward on its CUDA device thread (torch's default) and on the
calling thread (torch.autograd.set_multithreading_enabled(False), what tumbler's trainer does), alternating
within each round so a drift of the host's speed hits both alike. Prints the median ms per step of each
setting and size (median over rounds of each round's median) and writes
bench/results/train-step-<GPU>-<UTC time>.json (and $OUT/ when set). GPU only.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from first_use import force_train_step
from result_file import header, write_result


def median_ms(step, steps: int, one_thread: bool) -> float:
    import time
    times = []
    with torch.autograd.set_multithreading_enabled(not one_thread):
        for _ in range(steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xyz", required=True, help="ASE-readable structure file; its first frame is used")
    p.add_argument("--copies", default="8,64", help="batch sizes in copies of the structure (default %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per setting and round (default %(default)s)")
    p.add_argument("--profile", action="store_true", help="instead, cProfile 50 steps (by own and cumulative time)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    result = header(torch.cuda.get_device_name())
    result.update(xyz=args.xyz, rounds=args.rounds, steps=args.steps, rows=[])
    print(result["device"], "torch", torch.__version__, flush=True)
    import ase.io
    per_copy = len(ase.io.read(args.xyz, index=0))
    for copies in (int(c) for c in args.copies.split(",")):
        _, step = force_train_step(args.xyz, copies)
        for _ in range(3):  # compile, tune, warm
            step()
        if args.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.runcall(lambda: [step() for _ in range(50)])
            pstats.Stats(prof).sort_stats("tottime").print_stats(40)
            pstats.Stats(prof).sort_stats("cumtime").print_stats(40)
            continue
        got = {False: [], True: []}
        for _ in range(args.rounds):
            for one_thread in (False, True):
                got[one_thread].append(median_ms(step, args.steps, one_thread))
        for one_thread, v in got.items():
            thread = "calling" if one_thread else "device"
            result["rows"].append(dict(copies=copies, atoms=copies * per_copy, backward_thread=thread,
                                       ms_per_step=float(np.median(v)), rounds_ms=v))
            print(f"x {copies:<3} {thread + ' thread':<15} {np.median(v):7.2f} ms per step   "
                  f"rounds {' '.join(f'{x:.2f}' for x in v)}", flush=True)
    if result["rows"]:
        print(f"wrote {write_result('train-step', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
