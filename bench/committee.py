"""Committee benchmarks: the cost of a committee in MD, and whether its spread finds what it does not know (3BPA).

    python bench/committee.py md [--device cuda] [--members 4] [--repeat 6] [--steps 100]
        ASE MD (VelocityVerlet, 1 fs) of fcc Cu (4 x repeat^3 atoms) through potential.Calculator: one model, then
        a committee of --members models of the same size (random weights, different seeds; speed only). Model: 2
        interactions, 128 channels, l <= 1, harmonics l <= 3, correlation 3, r_max 5 Å, float32 (--small: 16
        channels, for a CPU). Rows: the static path (the calculator's default on CUDA: for one model a StaticStep,
        for the committee one StackedStep, i.e. one list and one captured CUDA graph for all members; eager on a
        CPU) and the eager path (Committee.forward: one shared graph and one autograd call); ms per step and the
        committee / one-model ratio.

    python bench/committee.py 3bpa [--members 4] [--device cuda] [--minutes 5] [--out runs/3bpa_committee]
        1. splits shared/data/3BPA/train_300K.xyz (500) with a fixed seed into 400 for training and 100 held out;
        2. trains a committee (train.py's run with training.committee) on the 400, each member with its own
           valid split and bootstrap resample, --minutes of wall clock per member;
        3. evaluates the committee on the 100 held-out 300 K structures and on all 500 of train_mixedT.xyz.
        Per structure: the true force error of the committee mean (RMSE over atoms and components, eV/Å), and
        the committee's mean and max per-atom force spread (eV/Å). Prints the Spearman rank correlation between
        spread and true error (all 600, and within each set), the medians per set, and the probability that a
        random mixed-T structure has a larger spread than a random held-out 300 K one (ROC AUC; 0.5 = chance).
        --size: small (16 channels, for a CPU), medium (64 channels, l <= 1; default) or paper (configs/3bpa.yaml:
        256 channels, l <= 2; needs far more than a few minutes per member).

Results go to stdout and, as JSON, to $OUT/committee-<part>.json when $OUT is set (else bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the 3BPA files: ../shared/data/3BPA beside the repo (as in /work/main), or shared/ inside it (a device copy)
SHARED = next((p for p in (REPO.parent / "shared" / "data" / "3BPA", REPO / "shared" / "data" / "3BPA",
                           REPO.parents[1] / "shared" / "data" / "3BPA") if p.is_dir()), None)

BIG = dict(channels=128, lmax=1, lmax_sh=3, correlation=3, num_interactions=2, r_max=5.0, num_bessel=8,
           radial_hidden=[64, 64, 64], readout_hidden=16)
SMALL = dict(channels=16, lmax=1, lmax_sh=2, correlation=2, num_interactions=2, r_max=5.0, num_bessel=8,
             radial_hidden=[32, 32], readout_hidden=16)
MEDIUM = dict(channels=64, lmax=1, lmax_sh=3, correlation=3, num_interactions=2, r_max=5.0, num_bessel=8,
              radial_hidden=[64, 64, 64], readout_hidden=16)


def _write(part: str, result: dict) -> None:
    folder = Path(os.environ.get("OUT") or REPO / "bench" / "results")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"committee-{part}.json").write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------------------------------- md cost
def _md_ms_per_step(model, atoms, steps: int, static: bool) -> float:
    from ase.md.verlet import VelocityVerlet

    from potential import Calculator
    from potential.simulation.md_output import init_velocities

    atoms = atoms.copy()
    init_velocities(atoms, 300.0, seed=0)
    atoms.calc = Calculator(model, static=static)
    dyn = VelocityVerlet(atoms, timestep=1.0 * 0.09822694788464063)  # 1 fs in ASE time units
    dyn.run(10)  # warm-up: kernels compiled, graphs captured
    if model.dtype is not None and next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    dyn.run(steps)
    return 1e3 * (time.perf_counter() - start) / steps


def bench_md(args) -> dict:
    from ase.build import bulk

    from potential import Committee, ModelConfig, Potential

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(args.repeat)
    shape = SMALL if args.small else BIG

    def member(seed):
        torch.manual_seed(seed)
        config = ModelConfig(elements=[29], avg_num_neighbors=40.0, scale=0.1, dtype=args.dtype, **shape)
        return Potential(config).to(args.device).eval()

    one = member(0)
    committee = Committee([one] + [member(k) for k in range(1, args.members)])
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "atoms": len(atoms),
              "members": args.members, "model": shape, "dtype": args.dtype, "steps": args.steps, "rows": []}
    for static in (True, False):
        t1 = _md_ms_per_step(one, atoms, args.steps, static)
        tm = _md_ms_per_step(committee, atoms, args.steps, static)
        row = {"path": "static" if static else "eager", "one_ms": t1, "committee_ms": tm, "ratio": tm / t1}
        result["rows"].append(row)
        print(f"{row['path']:6s} one model {t1:8.2f} ms/step   committee of {args.members} {tm:8.2f} ms/step   "
              f"ratio {tm / t1:.2f}  ({len(atoms)} atoms, {result['device']})", flush=True)
    return result


# ------------------------------------------------------------------------------------------- 3BPA uncertainty
def spearman(a, b) -> float:
    """Spearman rank correlation (ranks by argsort; the values here are continuous, so ties do not occur)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def auc(high, low) -> float:
    """P(a random element of `high` > a random element of `low`)."""
    high, low = np.asarray(high)[:, None], np.asarray(low)[None, :]
    return float((high > low).mean() + 0.5 * (high == low).mean())


def bench_3bpa(args) -> dict:
    import yaml

    import data
    from potential import evaluate
    from potential.training.config import parse_config
    from potential.training import run

    if args.data is None:
        raise SystemExit("bench/committee.py 3bpa: no 3BPA folder found; pass --data <folder with train_300K.xyz>")
    shared = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    room = data.read_structures(shared / "train_300K.xyz", energy_key="energy", forces_key="forces")
    mixed = data.read_structures(shared / "train_mixedT.xyz", energy_key="energy", forces_key="forces")
    perm = np.random.default_rng(2026).permutation(len(room))
    held = [room[i] for i in sorted(perm[:100])]
    data.write_dataset(out / "train.h5", [room[i] for i in sorted(perm[100:])])
    data.write_dataset(out / "isolated.h5", data.read_structures(shared / "iso_atoms.xyz", energy_key="energy",
                                                                 forces_key="forces"))
    raw = yaml.safe_load((REPO / "configs" / "3bpa.yaml").read_text())
    raw["data"] = {"train": str(out / "train.h5"), "isolated_atoms": str(out / "isolated.h5"), "valid_fraction": 0.1}
    raw["training"].update(committee=args.members, max_epochs=100000, time_budget_minutes=args.minutes)
    raw["training"].pop("stage_two", None)
    raw["training"]["scheduler"] = "plateau"
    if args.size != "paper":
        raw["model"].update(SMALL if args.size == "small" else MEDIUM)
    if args.threads is not None:
        raw["num_threads"] = args.threads
    raw.update(output_dir=str(out / "run"), device=args.device, dtype=args.dtype, num_workers=0)
    start = time.perf_counter()
    summary = run(parse_config(raw), overwrite=True)
    train_s = time.perf_counter() - start
    models = summary["models"]

    def per_structure(structures):
        results = evaluate(structures, models=models, device=args.device)
        error = np.array([np.sqrt(((r["forces"] - s.forces) ** 2).mean()) for r, s in zip(results, structures)])
        mean_spread = np.array([r["force_spread"].mean() for r in results])
        max_spread = np.array([r["max_force_spread"] for r in results])
        return error, mean_spread, max_spread

    e_room, m_room, x_room = per_structure(held)
    e_mixed, m_mixed, x_mixed = per_structure(mixed)
    result = {"members": args.members, "minutes_per_member": args.minutes, "train_s": train_s, "device": args.device,
              "model": raw["model"], "dtype": args.dtype, "models": models,
              "member_metrics": [m.get("valid") for m in summary["members"]]}
    for name, room_v, mixed_v in (("mean_spread", m_room, m_mixed), ("max_spread", x_room, x_mixed)):
        both_v, both_e = np.concatenate([room_v, mixed_v]), np.concatenate([e_room, e_mixed])
        result[name] = {
            "spearman_all": spearman(both_v, both_e), "spearman_300K": spearman(room_v, e_room),
            "spearman_mixedT": spearman(mixed_v, e_mixed), "auc_mixedT_over_300K": auc(mixed_v, room_v),
            "median_300K": float(np.median(room_v)), "median_mixedT": float(np.median(mixed_v)),
        }
    result["force_rmse"] = {"300K_heldout": float(np.sqrt((e_room ** 2).mean())),
                            "mixedT": float(np.sqrt((e_mixed ** 2).mean()))}
    print(json.dumps({k: v for k, v in result.items() if k not in ("models", "model")}, indent=2))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["md", "3bpa"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--small", action="store_true", help="md: a 16-channel model (CPU)")
    p.add_argument("--size", choices=["small", "medium", "paper"], default="medium", help="3bpa: model size")
    p.add_argument("--dtype", default=None, help="float32 for md, float64 for 3bpa by default")
    p.add_argument("--repeat", type=int, default=6, help="md: fcc Cu cubic cells per side (6: 864 atoms)")
    p.add_argument("--steps", type=int, default=100, help="md: timed steps")
    p.add_argument("--minutes", type=float, default=5.0, help="3bpa: training wall clock per member")
    p.add_argument("--out", default="runs/3bpa_committee", help="3bpa: folder for data and runs")
    p.add_argument("--data", default=SHARED, help="3bpa: folder of the BOTNet 3BPA files (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest for small systems)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.part == "md":
        args.dtype = args.dtype or "float32"
        _write("md", bench_md(args))
    else:
        args.dtype = args.dtype or "float64"
        _write("3bpa", bench_3bpa(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
