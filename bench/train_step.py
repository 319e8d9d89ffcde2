"""Steady-state time of one force-training step (bench/first_use.py's model and step), with torch's autograd
engine running the backward on its CUDA device thread (torch's default) or on the calling thread
(torch.autograd.set_multithreading_enabled(False)). GPU only.

    python bench/train_step.py [--copies=8,64] [--rounds=5] [--steps=20] [--profile] [--captured]

--profile: instead, the Python functions that take the host time of 50 steps (cProfile, by own time).
--captured: instead, the whole optimizer step of potential/training.py (loss on energies and forces, backward,
gradient clipping, AdamW, EMA) run eagerly (training.graph=off) against the padded step captured as a CUDA graph
(potential.training.captured_step.TrainStep, training.graph=on), both on the calling thread.

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


def full_steps(model, copies: int, xyz: str):
    """(eager step, captured step): each one optimizer step of its own copy of `model` on `copies` copies of the
    structure, labelled with energy 0 and forces 0 (the numbers do not matter for the time), synced."""
    import copy

    import ase.io
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from data import Batch
    from potential.training.captured_step import TrainStep
    from potential.training.metrics import ErrorMetrics, LossWeights, compute_loss

    batch = Batch.from_atoms([ase.io.read(xyz)] * copies, cutoff=5.0, device="cuda", dtype=torch.float32)
    batch.energy.zero_()
    batch.has_energy.fill_(True)
    batch.has_forces.fill_(True)
    weights = LossWeights(energy=1.0, forces=100.0)
    steps = []
    for capturable in (False, True):
        m = copy.deepcopy(model)
        params = list(m.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-3, amsgrad=True, capturable=capturable)
        ema = AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(0.99))
        if not capturable:
            def eager(m=m, params=params, optimizer=optimizer, ema=ema):  # Trainer._train_epoch's loop body
                out = m(batch, forces=True, training=True)
                loss, _ = compute_loss(batch, out, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                optimizer.step()
                ema.update_parameters(m)
                ErrorMetrics(batch.positions.device).update(batch, out, loss)
                torch.cuda.synchronize()
            steps.append(eager)
        else:
            train_step = TrainStep(m, optimizer, weights, batch_size=copies, forces=True, stress=False,
                                   clip_grad_norm=10.0, ema=ema, ema_decay=0.99)

            def captured(train_step=train_step):
                train_step(batch)
                torch.cuda.synchronize()
            steps.append(captured)
    return steps


def main(argv):
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    xyz = opts.get("xyz", str(ROOT / ".bench_data" / "3bpa_first.xyz"))
    rounds, steps = int(opts.get("rounds", "5")), int(opts.get("steps", "20"))
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for copies in (int(c) for c in opts.get("copies", "8,64").split(",")):
        model, step = force_train_step(xyz, copies)
        if "--captured" in argv:
            eager, captured = full_steps(model, copies, xyz)
            for fn in (eager, captured, eager, captured):  # compile, tune, capture, warm
                fn()
            got = {"eager": [], "captured": []}
            for _ in range(rounds):
                for name, fn in (("eager", eager), ("captured", captured)):
                    got[name].append(median_ms(fn, steps, one_thread=True))
            for name, v in got.items():
                print(f"3BPA x {copies:<3} {name + ' step':<15} {np.median(v):7.2f} ms per optimizer step   "
                      f"rounds {' '.join(f'{x:.2f}' for x in v)}", flush=True)
            continue
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
