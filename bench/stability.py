"""Stable dynamics, not only a good fit: does a trained model keep a molecule physical under hot NVT MD?

    python bench/stability.py runs/acac/model.pt --structure AcAc/train_300K.xyz --temperature 600 --ps 100
    python bench/stability.py MODEL.pt --structure START.xyz --ps 0.05 --device cpu     # a smoke test

Runs Langevin NVT of --replicas copies of the first frame of --structure (each with its own Maxwell-Boltzmann
velocities, seed + k) batched in tumbler's device-resident engine (potential.simulation.dynamics.Dynamics), and
every --check-every steps checks, on the device, each replica against these rules:
  nonfinite   a position or the energy is not finite
  short       two atoms (any pair, bonded or not) closer than --min-distance (0.7 Å)
  stretched   a start bond longer than --max-stretch (2) times its start length; start bonds are the pairs
              closer than 1.2 x the sum of ASE's covalent radii in the start frame
  h_transfer  a stretched bond to a hydrogen that is bonded (1.2 x covalent) to another atom in this frame:
              a proton moved to a new partner (the enol proton of AcAc does so in the DFT reference at 300 K)
  detached    the current frame's graph of pairs closer than --detach-factor (1.5) x the covalent sum is not
              connected: an atom or fragment left the molecule. 1.5, not 1.2: 7 of the 500 DFT frames of
              3BPA train_mixedT (up to 1200 K) are disconnected at 1.2 (their worst nearest-neighbour ratio is 1.26)
A replica stops at its first violation (any rule; with --allow-h-transfer h_transfer is recorded but not fatal);
its time (ps), rules and atoms are recorded. The surviving replicas go on in a new engine (next seed).
Speed: steps/s of the batch and atom-steps/s (atoms of the live replicas x steps) over the engine's time alone;
the checks and the setup (model load, each engine's first step: kernel compiles, CUDA graph capture) are timed
apart. A run the engine aborts still writes what it measured (key "error"), then raises.
Writes bench/results/stability-<device>-<UTC time>.json (and $OUT/ when set) and prints a summary table last.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RULES = ("nonfinite", "short", "stretched", "h_transfer", "detached")


class StabilityCheck:
    """The rules above for B replicas of one molecule, vectorised on the device.

    start: ase.Atoms of the start frame (n atoms). __call__(positions [B*n, 3] Å, energy [B] eV) returns a bool
    tensor [B, len(RULES)] (on the device); describe(positions, b) names the atoms behind replica b's violations.
    """

    def __init__(self, start, device, min_distance=0.7, max_stretch=2.0, detach_factor=1.5, bond_factor=1.2):
        from ase.data import covalent_radii

        self.n = n = len(start)
        self.min_distance, self.max_stretch = float(min_distance), float(max_stretch)
        self.symbols = start.get_chemical_symbols()
        pos0 = torch.tensor(start.positions, dtype=torch.float64, device=device)  # [n, 3] Å
        radii = torch.tensor(covalent_radii[start.numbers], dtype=torch.float64, device=device)  # [n] Å
        self.cov = radii[:, None] + radii[None, :]  # [n, n] Å
        self.bond_cut = bond_factor * self.cov  # [n, n] Å
        self.detach_cut = detach_factor * self.cov
        self.eye = torch.eye(n, dtype=torch.bool, device=device)
        d0 = torch.cdist(pos0, pos0)
        self.i, self.j = torch.nonzero(torch.triu(d0 < self.bond_cut, diagonal=1), as_tuple=True)  # [M] start bonds
        self.d0 = d0[self.i, self.j]  # [M] Å
        hydrogen = torch.tensor(start.numbers == 1, device=device)
        self.h_of_bond = torch.where(hydrogen[self.j], self.j, torch.where(hydrogen[self.i], self.i, -1))  # [M]
        self.partner = torch.where(self.h_of_bond == self.j, self.i, self.j)  # [M] the other atom
        self.squarings = max(1, math.ceil(math.log2(max(n, 2))))
        if not bool(self._connected(d0[None] < self.detach_cut)[0]):
            raise ValueError(f"stability check: the start structure ({start.get_chemical_formula()}) is not one "
                             f"molecule: its graph at {detach_factor} x the covalent radii is not connected")

    def _reach(self, adjacency: torch.Tensor) -> torch.Tensor:
        """adjacency [B, n, n] bool -> [B, n] bool: atoms reachable from atom 0 (repeated squaring)."""
        reach = (adjacency | self.eye).to(torch.float32)
        for _ in range(self.squarings):
            reach = (reach @ reach).clamp_(max=1.0)
        return reach[:, 0] > 0

    def _connected(self, adjacency: torch.Tensor) -> torch.Tensor:
        """[B] bool: the graph is one piece."""
        return self._reach(adjacency).all(dim=1)

    def _distances(self, positions):
        x = positions.reshape(-1, self.n, 3)
        return torch.cdist(x, x)  # [B, n, n] Å

    def _stretched(self, d):
        """[B, M] stretched bonds, and [B, M] those whose hydrogen is bonded to another atom now."""
        stretched = d[:, self.i, self.j] > self.max_stretch * self.d0
        bonded = (d < self.bond_cut) & ~self.eye  # [B, n, n]
        h = self.h_of_bond.clamp(min=0)
        others = bonded[:, h, :].clone()  # [B, M, n]: who the bond's hydrogen is bonded to now
        others[:, torch.arange(len(h), device=d.device), self.partner] = False
        transfer = stretched & (self.h_of_bond >= 0) & others.any(dim=2)
        return stretched & ~transfer, transfer

    def __call__(self, positions: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        d = self._distances(positions)
        finite = torch.isfinite(positions.reshape(-1, self.n, 3)).all(dim=(1, 2)) & torch.isfinite(energy)
        short = ((d < self.min_distance) & ~self.eye).any(dim=(1, 2))
        stretched, transfer = self._stretched(d)
        detached = ~self._connected(d < self.detach_cut)
        return torch.stack([~finite, short & finite, stretched.any(1) & finite, transfer.any(1) & finite,
                            detached & finite], dim=1)  # [B, len(RULES)]

    def describe(self, positions: torch.Tensor, b: int) -> list[str]:
        """Human-readable atoms behind replica b's violations, e.g. 'stretched O3-H11 2.13 Å (start 1.00 Å)'."""
        d = self._distances(positions)[b : b + 1]
        name = [f"{s}{k}" for k, s in enumerate(self.symbols)]
        out = []
        close = torch.nonzero(torch.triu((d[0] < self.min_distance) & ~self.eye, 1))
        out += [f"short {name[p]}-{name[q]} {float(d[0, p, q]):.2f} Å" for p, q in close.tolist()]
        for rule, mask in zip(("stretched", "h_transfer"), self._stretched(d)):
            for m in torch.nonzero(mask[0]).flatten().tolist():
                p, q = int(self.i[m]), int(self.j[m])
                out.append(f"{rule} {name[p]}-{name[q]} {float(d[0, p, q]):.2f} Å (start {float(self.d0[m]):.2f} Å)")
        reach = self._reach(d < self.detach_cut)[0]
        if not bool(reach.all()):
            out.append("detached " + " ".join(name[k] for k in torch.nonzero(~reach).flatten().tolist()))
        return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("model", help="tumbler model file (.pt)")
    a("--structure", required=True, help="ASE-readable file; its first frame is the start structure")
    a("--temperature", type=float, default=600.0, help="K, start velocities and Langevin target (default 600)")
    a("--ps", type=float, default=100.0, help="simulated time per replica, ps (default 100)")
    a("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    a("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    a("--replicas", type=int, default=8, help="independent replicas batched in one engine (default 8)")
    a("--seed", type=int, default=0, help="replica k uses seed + k for its velocities (default 0)")
    a("--check-every", type=int, default=100, help="steps between checks (default 100)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda (default when present) or cpu")
    a("--min-distance", type=float, default=0.7, help="Å (default 0.7)")
    a("--max-stretch", type=float, default=2.0, help="x the start bond length (default 2)")
    a("--detach-factor", type=float, default=1.5, help="x the covalent radii sum, current-frame graph (default 1.5)")
    a("--allow-h-transfer", action="store_true", help="record h_transfer but keep the replica running")
    a("--results-dir", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes (default bench/results)")
    return p


def simulate(args, model, start, check, replicas, stats, say) -> None:
    """Run the live replicas to --ps, checking every --check-every steps; fills `replicas` and `stats` as it goes
    (so an engine error leaves what was measured)."""
    from potential.simulation.dynamics import Dynamics

    fatal = np.array([r != "h_transfer" or not args.allow_h_transfer for r in RULES])
    sync = torch.cuda.synchronize if check.eye.is_cuda else (lambda: None)
    total_steps = int(round(args.ps * 1000.0 / args.timestep))
    live = list(range(len(replicas)))
    while live and stats["steps"] < total_steps:
        t0 = time.perf_counter()
        dyn = Dynamics(model, [replicas[k]["atoms"] for k in live], timestep=args.timestep, thermostat="langevin",
                       temperature=args.temperature, friction=args.friction, seed=args.seed + 1000 * stats["engines"])
        stats["engines"] += 1
        stats["setup_s"] += time.perf_counter() - t0
        fresh = True
        while stats["steps"] < total_steps:
            steps = timed = min(args.check_every, total_steps - stats["steps"])
            if fresh:  # the first step compiles kernels and captures the CUDA graphs: setup, not speed
                t0 = time.perf_counter()
                dyn.step()
                sync()
                stats["setup_s"] += time.perf_counter() - t0
                fresh, timed = False, steps - 1
            t0 = time.perf_counter()
            dyn.run(timed)
            sync()
            t1 = time.perf_counter()
            flags = check(dyn.positions, dyn.energy).cpu().numpy()  # [B, len(RULES)]
            stats["engine_s"] += t1 - t0
            stats["timed_steps"] += timed
            stats["atom_steps"] += timed * dyn.positions.shape[0]
            stats["steps"] += steps
            now_ps = stats["steps"] * args.timestep / 1000.0
            failed = []
            for b, k in enumerate(live):
                replicas[k]["ps"] = now_ps
                new = [r for r, hit in zip(RULES, flags[b]) if hit and r not in replicas[k]["first"]]
                detail = check.describe(dyn.positions, b) if new else []
                for r in new:
                    replicas[k]["first"][r] = {"ps": now_ps, "atoms": [s for s in detail if s.startswith(r)]}
                if (flags[b] & fatal).any():
                    failed.append(k)
                    replicas[k]["stopped"] = True
                    say(f"replica {k} stopped at {now_ps:.3f} ps: {'; '.join(detail)}")
            stats["checks"] += 1
            stats["check_s"] += time.perf_counter() - t1
            if failed:  # carry on with the survivors in a fresh engine (their current state, a new seed)
                for b, atoms in enumerate(dyn.get_atoms()):
                    replicas[live[b]]["atoms"] = atoms
                live = [k for k in live if k not in failed]
                break


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT))  # before bench/: its kernels.py would shadow the kernels package
    sys.path.append(str(Path(__file__).resolve().parent))  # result_file, when imported from a test
    import ase.io

    from potential.evaluate import load_model_file
    from potential.simulation.md_output import check_elements, init_velocities
    from result_file import device_name, header, write_result

    if args.replicas < 1 or args.check_every < 1 or not args.ps > 0 or not args.timestep > 0:
        raise SystemExit("stability: --replicas, --check-every, --ps and --timestep must be positive")
    t0 = time.perf_counter()
    start = ase.io.read(args.structure, index=0)
    start.calc = None
    model = load_model_file(args.model, device=args.device)
    check_elements(start, model.elements, args.structure)
    device = next(model.parameters()).device
    check = StabilityCheck(start, device, args.min_distance, args.max_stretch, args.detach_factor)
    replicas = []
    for k in range(args.replicas):
        atoms = start.copy()
        init_velocities(atoms, args.temperature, args.seed + k)
        replicas.append({"replica": k, "seed": args.seed + k, "atoms": atoms, "ps": 0.0, "stopped": False,
                         "first": {}})
    stats = dict(steps=0, timed_steps=0, atom_steps=0, engines=0, checks=0, engine_s=0.0, check_s=0.0,
                 setup_s=time.perf_counter() - t0)
    error = None
    try:
        simulate(args, model, start, check, replicas, stats, say=print)
    except Exception as e:  # an engine that fails mid-run is a finding too: write what was measured, then raise
        error = e
    t = stats["engine_s"]
    result = {**header(device_name(device)), "argv": sys.argv[1:] if argv is None else list(argv),
              "model": str(args.model), "structure": str(args.structure), "formula": start.get_chemical_formula(),
              "atoms": len(start), "temperature_K": args.temperature, "ps": args.ps, "timestep_fs": args.timestep,
              "friction_per_fs": args.friction, "replicas": args.replicas, "check_every": args.check_every,
              "rules": {"min_distance_A": args.min_distance, "max_stretch": args.max_stretch, "bond_factor": 1.2,
                        "detach_factor": args.detach_factor, "allow_h_transfer": args.allow_h_transfer},
              "stable": sum(not r["stopped"] and r["ps"] >= args.ps - 1e-9 for r in replicas),
              "error": None if error is None else f"{type(error).__name__}: {error}",
              "per_replica": [{k: v for k, v in r.items() if k != "atoms"} for r in replicas],
              "engine": {"timed_steps": stats["timed_steps"], "wall_s": t, "engines_built": stats["engines"],
                         "ms_per_step": 1e3 * t / stats["timed_steps"] if t else math.nan,
                         "steps_per_s": stats["timed_steps"] / t if t else math.nan,
                         "atom_steps_per_s": stats["atom_steps"] / t if t else math.nan},
              "checks": {"count": stats["checks"], "wall_s": stats["check_s"],
                         "ms_per_check": 1e3 * stats["check_s"] / max(stats["checks"], 1)},
              "setup_s": stats["setup_s"]}
    path = write_result("stability", result, args.results_dir)
    e = result["engine"]
    print(f"\n{result['formula']} ({len(start)} atoms), {args.temperature:g} K, {args.ps:g} ps at {args.timestep:g} "
          f"fs, {args.replicas} replicas on {result['device']}  ->  {path}")
    print(f"{'replica':>7} {'seed':>5} {'reached ps':>10}  first violation of each rule (ps, atoms)")
    for r in result["per_replica"]:
        firsts = "; ".join(f"{v['ps']:.3f} ps {', '.join(v['atoms']) or rule}" for rule, v in r["first"].items())
        print(f"{r['replica']:>7} {r['seed']:>5} {r['ps']:>10.3f}  {firsts or '-'}")
    print(f"stable: {result['stable']}/{args.replicas} replicas for {args.ps:g} ps | engine {e['ms_per_step']:.3f} "
          f"ms/step, {e['steps_per_s']:.0f} steps/s, {e['atom_steps_per_s']:.3g} atom-steps/s | checks "
          f"{result['checks']['ms_per_check']:.2f} ms each ({stats['checks']}) | setup {stats['setup_s']:.1f} s")
    if error is not None:
        raise error
    return result


if __name__ == "__main__":
    main()
