"""MD speed on one GPU: tumbler's device-resident engine and its ASE calculator against MACE, in one process.

    python bench/md.py --bpa train_300K.xyz            # the README's MD table (about 5-9 minutes on an H200)
    python bench/md.py --parts engine,ase              # ours only (MACE not installed)
    python bench/md.py --quick --cpu                   # tiny sizes on the CPU: a smoke test, not a measurement

Both sides use the same model size: 2 interactions, 128 channels, hidden l <= 1, edge harmonics l <= 3,
correlation 3, r_max 5 Å, 8 Bessel functions, radial MLP 64x64x64, float32, random weights (speed only).
Systems:
  cu864    fcc Cu, 6x6x6 cubic cells (864 atoms), NVE velocity Verlet, 1 fs, 300 K start
  cu4000   fcc Cu, 10x10x10 cubic cells (4000 atoms)
  3bpa64   64 replicas of 3BPA (27 atoms; the first frame of --bpa, e.g. train_300K.xyz of the 3BPA set) at
           300..900 K under Langevin: our engine batches them; MACE runs them as one 1728-atom structure of
           far-apart copies; the ASE rows ("3bpa1") run one molecule. Without --bpa the 3BPA rows are skipped.
Parts (--parts): engine = potential.simulation.dynamics.Dynamics (`md.py --engine gpu`: one CUDA graph per
step, 100 timed steps); ase = potential.Calculator in ASE's VelocityVerlet (20 timed steps, list rebuilds
included; on CUDA it replays the same captured step), and its eager path for contrast; mace, mace_late =
mace.calculators.MACECalculator in ASE, once per backend (cuEquivariance, e3nn; OpenEquivariance late);
maxsize = the largest fcc Cu cell whose forces fit in GPU memory (ours: one static step; MACE: get_forces).
Rows give ms per MD step (mean over the timed steps) and atom-steps per second. Before timing on a GPU, the
model's kernels are compiled in parallel worker processes (TUMBLER_AUTOTUNE=compile).
Writes bench/results/md-<GPU>-<UTC time>.json (and $OUT/ when set) after every row, so a run cut short keeps
what it measured, and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from result_file import device_name, header, write_result  # noqa: E402 (bench/, this file's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BPA_FILE = None  # --bpa: an xyz file of 3BPA (its first frame is used); None skips the 3BPA systems


class Bench:
    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
        self.results = {**header(device_name(self.device)), "argv": sys.argv[1:], "rows": []}
        self.path = None

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def row(self, **kw):
        kw["t_s"] = round(time.perf_counter() - self.t0, 1)
        self.results["rows"].append(kw)
        print(json.dumps(kw), flush=True)
        self.path = write_result("md", self.results)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def peak_mib(self):
        return torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else float("nan")

    def reset_peak(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


# ------------------------------------------------------------------ systems and models
def cu(n_rep: int):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n_rep,) * 3)
    atoms.rattle(0.05, seed=1)
    return atoms


def bpa():
    from ase.io import read

    atoms = read(BPA_FILE, index=0)
    atoms.calc = None
    atoms.pbc = False
    atoms.cell = [0, 0, 0]
    atoms.center()
    return atoms


def bpa_supermolecule(copies: int, spacing: float = 25.0):
    """`copies` 3BPA molecules on a cubic grid, `spacing` Å apart (no pair within r_max): one structure."""
    from ase import Atoms

    one = bpa()
    side = int(np.ceil(copies ** (1 / 3)))
    out = Atoms()
    for k in range(copies):
        m = one.copy()
        m.positions += spacing * np.array([k % side, (k // side) % side, k // side ** 2])
        out += m
    return out


def with_velocities(atoms, temperature, seed=0):
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    return atoms


def ours_model(elements, device, quick=False):
    from potential import ModelConfig, Potential

    torch.manual_seed(0)
    cfg = ModelConfig(elements=list(elements), channels=8 if quick else 128, lmax=1, lmax_sh=3, correlation=3,
                      num_interactions=2, r_max=5.0, num_bessel=8, radial_hidden=(64, 64, 64), readout_hidden=16,
                      avg_num_neighbors=40.0, atomic_energies=[-3.0] * len(elements), scale=0.1, shift=0.0,
                      dtype="float32", backend="auto")
    return Potential(cfg).to(device).eval()


def mace_model(atomic_numbers, path):
    """MACE's ScaleShiftMACE at the size of ours: 128x0e+128x1o hidden, max_ell 3, correlation 3, 2 layers."""
    from e3nn import o3
    import mace.modules as mm

    torch.manual_seed(0)
    model = mm.ScaleShiftMACE(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=mm.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=mm.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(atomic_numbers), hidden_irreps=o3.Irreps("128x0e+128x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.array([-3.0] * len(atomic_numbers)),
        avg_num_neighbors=40.0, atomic_numbers=list(atomic_numbers), correlation=3,
        gate=torch.nn.functional.silu, atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )
    torch.save(model, path)
    return path


def systems(quick):
    if quick:
        return {"cu864": lambda: cu(2), "cu4000": lambda: cu(3)}
    return {"cu864": lambda: cu(6), "cu4000": lambda: cu(10)}


# ------------------------------------------------------------------ timing helpers
def time_ase(bench, atoms, steps, warm):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    return time_engine(bench, VelocityVerlet(atoms, 1.0 * units.fs), steps, warm)


def time_engine(bench, dyn, steps, warm):
    """Seconds per step of dyn.run (an ASE dynamics or our Dynamics), after `warm` untimed steps."""
    dyn.run(warm)
    bench.sync()
    t0 = time.perf_counter()
    dyn.run(steps)
    bench.sync()
    return (time.perf_counter() - t0) / steps


# ------------------------------------------------------------------ parts
def part_engine(bench):
    from potential.simulation.dynamics import Dynamics

    a = bench.args
    steps, warm = a.steps, 10
    model_cu = ours_model([29], bench.device, a.quick)
    model_bpa = ours_model([1, 6, 7, 8], bench.device, a.quick)
    cases = [(name, model_cu, [with_velocities(make(), 300)], None) for name, make in systems(a.quick).items()]
    temps = np.linspace(300, 900, a.replicas)
    if BPA_FILE is not None:
        cases.append(("3bpa64", model_bpa, [with_velocities(bpa(), t, seed=k) for k, t in enumerate(temps)], temps))
    variants = [(None, "auto")]  # (cuda_graph, contraction)
    extra = [(True, "grouped"), (False, "auto")] if bench.device.type == "cuda" else []
    for name, model, atoms_list, temps in cases:
        for graph, contraction in variants + (extra if name == "cu864" else []):
            if bench.left() < 20:
                bench.row(part="engine", system=name, skipped="budget")
                continue
            try:
                bench.reset_peak()
                kw = dict(thermostat="langevin", temperature=temps, friction=0.01) if temps is not None else {}
                dyn = Dynamics(model, atoms_list, timestep=1.0, skin=a.skin, cuda_graph=graph, seed=0,
                               contraction=contraction, **kw)
                n_atoms = dyn.positions.shape[0]
                # the padded, captured step against the eager unpadded Potential at the same positions
                import data

                batch = data.Batch.from_atoms(dyn.get_atoms(), model.r_max, device=bench.device, dtype=model.dtype)
                ref = model(batch)["forces"].double()
                err = float((dyn.forces - ref).norm() / ref.norm())
                t = time_engine(bench, dyn, steps if n_atoms < 3000 else max(steps // 2, 10), warm)
                impl = "tumbler-engine" + ("" if graph in (None, True) else "-nograph")
                impl += "" if contraction == "auto" else f"-{contraction}"
                bench.row(part="engine", impl=impl, contraction=dyn.static.contraction,
                          system=name, atoms=n_atoms, structures=dyn.num_structures, ms_per_step=t * 1e3,
                          atom_steps_per_s=n_atoms / t, rebuilds=dyn.rebuilds, captures=dyn.static.captures,
                          cuda_graph=dyn.static.cuda_graph, edges=dyn.static.num_edges,
                          pad_edges=dyn.static.num_pad_edges, active_edges=dyn.static.num_active_edges,
                          force_rel_err_vs_eager=err, peak_MiB=bench.peak_mib(),
                          host_neighbor_search=dyn.static.neighbors.host_search)
                del dyn
            except Exception as e:
                traceback.print_exc()
                bench.row(part="engine", system=name, error=repr(e)[:300])


def part_ase(bench):
    from potential import Calculator

    a = bench.args
    cases = [(name, [29], make, None) for name, make in systems(a.quick).items()] + [("3bpa1", [1, 6, 7, 8], bpa, None)]
    cases.append(("cu864", [29], systems(a.quick)["cu864"], False))  # the eager path (no static step), for contrast
    for name, elements, make, static in [c for c in cases if wanted(a, c[0])]:
        if bench.left() < 20:
            bench.row(part="ase", system=name, skipped="budget")
            continue
        try:
            bench.reset_peak()
            atoms = with_velocities(make(), 300)
            atoms.calc = Calculator(ours_model(elements, bench.device, a.quick), skin=a.skin, static=static)
            t = time_ase(bench, atoms, a.ase_steps, 5)
            bench.row(part="ase", impl="tumbler-ase" + ("-eager" if static is False else ""), system=name, atoms=len(atoms), ms_per_step=t * 1e3,
                      atom_steps_per_s=len(atoms) / t, peak_MiB=bench.peak_mib())
        except Exception as e:
            traceback.print_exc()
            bench.row(part="ase", impl="tumbler-ase", system=name, error=repr(e)[:300])


def wanted(args, system: str) -> bool:
    if system.startswith("3bpa") and BPA_FILE is None:
        return False
    return not args.systems or system in args.systems.split(",")


def mace_calculator(backend, path, device="cuda"):
    from mace.calculators import MACECalculator

    kw = {"enable_cueq": backend == "cueq", "enable_oeq": backend == "oeq"}
    return MACECalculator(model_paths=path, device=str(device), default_dtype="float32", **kw)


def part_mace_late(bench):
    """The backends of --mace-late-backends, after the memory test (so a slow one cannot crowd it out)."""
    part_mace(bench, bench.args.mace_late_backends)


def part_mace(bench, backends=None):
    a = bench.args
    backends = a.mace_backends if backends is None else backends
    try:
        cu_path = mace_model([29], "/tmp/bench_mace_cu.model")
        bpa_path = mace_model([1, 6, 7, 8], "/tmp/bench_mace_bpa.model")
    except Exception as e:
        traceback.print_exc()
        bench.row(part="mace", error=f"MACE unavailable: {e!r}"[:300])
        return
    cases = [(name, cu_path, make) for name, make in systems(a.quick).items()]
    cases += [("3bpa1", bpa_path, bpa), ("3bpa64", bpa_path, lambda: bpa_supermolecule(a.replicas))]
    for backend in [b for b in backends.split(",") if b]:
        for name, path, make in [c for c in cases if wanted(a, c[0])]:
            if bench.left() < 25:
                bench.row(part="mace", impl=f"mace-{backend}", system=name, skipped="budget")
                continue
            try:
                bench.reset_peak()
                atoms = with_velocities(make(), 300)
                atoms.calc = mace_calculator(backend, path, bench.device)
                t = time_ase(bench, atoms, a.ase_steps, 5)
                bench.row(part="mace", impl=f"mace-{backend}", system=name, atoms=len(atoms), ms_per_step=t * 1e3,
                          atom_steps_per_s=len(atoms) / t, peak_MiB=bench.peak_mib())
            except Exception as e:
                traceback.print_exc()
                bench.row(part="mace", impl=f"mace-{backend}", system=name, error=repr(e)[:300])
                break  # this backend is broken here: the next one


def part_maxsize(bench):
    """Largest fcc Cu cell (n x n x n cubic cells) whose forces fit: sizes grow until the first failure."""
    from potential.static_step import StaticStep

    a = bench.args
    sizes = {name: [int(s) for s in sz.split(",")] for name, sz in (x.split("=") for x in a.max_sizes.split(";"))}
    impls = ["tumbler-engine"] + [f"mace-{b}" for b in a.maxsize_backends.split(",") if b]
    model = ours_model([29], bench.device, a.quick)
    path = None
    for impl in impls:
        best = None
        for n_rep in sizes["tumbler" if impl == "tumbler-engine" else impl.split("-", 1)[1]]:
            if bench.left() < 15:
                bench.row(part="maxsize", impl=impl, skipped="budget", largest_atoms=best)
                break
            atoms = cu(n_rep)
            try:
                bench.reset_peak()
                t0 = time.perf_counter()
                if impl == "tumbler-engine":
                    x = torch.tensor(atoms.positions, dtype=torch.float64, device=bench.device)
                    step = StaticStep(model, torch.tensor(atoms.numbers), [0, len(atoms)],
                                      torch.tensor(np.array(atoms.cell[:])), torch.tensor(atoms.pbc), skin=a.skin)
                    step(x)
                    bench.sync()
                    del step
                else:
                    path = path or mace_model([29], "/tmp/bench_mace_cu.model")
                    atoms.calc = mace_calculator(impl.split("-", 1)[1], path)
                    atoms.get_forces()
                    bench.sync()
                best = len(atoms)
                bench.row(part="maxsize", impl=impl, atoms=len(atoms), ok=True, s=time.perf_counter() - t0,
                          peak_MiB=bench.peak_mib())
            except Exception as e:  # out of memory (or anything else): the previous size was the largest
                oom = "out of memory" in repr(e).lower()
                bench.row(part="maxsize", impl=impl, atoms=len(atoms), ok=False, oom=oom, error=repr(e)[:200])
                break
            finally:
                atoms.calc = None
                bench.reset_peak()
        bench.row(part="maxsize_result", impl=impl, largest_atoms=best)


WARM_PARTS = ("sh", "conv0", "conv1", "sc1", "sc0")


def warm(part: str) -> None:
    """Compile (into Triton's cache) the kernels one op of the 128-channel model needs, with the gradients the
    static step asks for; run one process per part in parallel before the timed run (compiling is CPU work)."""
    import kernels
    from kernels.fixed_species import triton_contraction

    dev, c, n = torch.device("cuda"), 128, 865
    e = 256 * 160
    gen = torch.Generator(device="cpu").manual_seed(0)
    receivers = torch.sort(torch.randint(0, n, (e,), generator=gen)).values.to(dev)
    senders = torch.randint(0, n, (e,), generator=gen).to(dev)
    graph = kernels.make_graph(senders, receivers, n)
    ops = kernels.get_ops("triton")

    def randn(*shape, grad=False):
        return torch.randn(*shape, device=dev).requires_grad_(grad)

    if part == "sh":
        v = randn(e, 3, grad=True)
        torch.autograd.grad(ops.spherical_harmonics(v, 3).sum(), [v])
    elif part in ("conv0", "conv1"):
        spec = kernels.ConvSpec(int(part[-1]), 3, 3)
        h = randn(n, spec.dim_in, c, grad=part == "conv1")
        y, r = randn(e, spec.dim_sh, grad=True), randn(e, spec.num_paths, c, grad=True)
        out = ops.edge_conv(h, y, r, graph, spec)
        torch.autograd.grad(out.sum(), [y, r] + ([h] if h.requires_grad else []))
    elif part in ("sc1", "sc0"):
        spec = kernels.ContractionSpec(3, int(part[-1]), 3)
        species = torch.zeros(n, dtype=torch.int64, device=dev)
        x, w = randn(n, spec.dim_in, c, grad=True), randn(1, spec.num_weights, c)
        out = triton_contraction(species, 1, c)(x, species, w, spec)
        torch.autograd.grad(out.sum(), [x])
    torch.cuda.synchronize()
    print(f"warm {part} done", flush=True)


def warm_up(timeout: float) -> None:
    """Compile the kernels of the bench model in parallel, one worker process per op (WARM_PARTS): Triton compiles
    on the CPU, one kernel at a time per process. TUMBLER_AUTOTUNE=compile compiles every tile candidate too, so
    the timed run tunes without compiling."""
    env = {**os.environ, "TUMBLER_AUTOTUNE": os.environ.get("TUMBLER_AUTOTUNE", "compile")}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--warm", part], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for part in WARM_PARTS]
    for part, proc in zip(WARM_PARTS, procs):
        try:
            _, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            if proc.returncode:
                print(f"warm-up {part}: exit {proc.returncode}: {err[-300:]}", flush=True)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            print(f"warm-up {part}: still compiling after {timeout:.0f} s (the timed run compiles the rest)")
    print(f"warm-up: {time.perf_counter() - t0:.0f} s", flush=True)


def table(results):
    lines = [f"device: {results['device']}  torch {results['torch']}",
             f"{'part':9} {'impl':26} {'system':8} {'atoms':>7} {'ms/step':>9} {'atom-steps/s':>13} {'note'}"]
    for r in results["rows"]:
        if r.get("part") == "maxsize":
            continue
        note = r.get("error") or r.get("skipped") or ""
        if "rebuilds" in r:
            note = (f"graph {int(r['cuda_graph'])} sc {r['contraction']} rebuilds {r['rebuilds']} "
                    f"edges {r['edges']}/{r['pad_edges']} err {r['force_rel_err_vs_eager']:.1e}")
        if r.get("part") == "maxsize_result":
            lines.append(f"{'maxsize':9} {r['impl']:26} {'cu fcc':8} {str(r.get('largest_atoms')):>7}")
            continue
        ms = f"{r['ms_per_step']:9.3f}" if "ms_per_step" in r else " " * 9
        aps = f"{r['atom_steps_per_s']:13.4g}" if "atom_steps_per_s" in r else " " * 13
        lines.append(f"{r.get('part', ''):9} {r.get('impl', ''):26} {r.get('system', ''):8} "
                     f"{str(r.get('atoms', '')):>7} {ms} {aps} {note[:90]}")
    return "\n".join(lines)


def main(argv=None):
    global BPA_FILE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="engine,ase,mace,maxsize,mace_late",
                   help="comma-separated, run in this order (default %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="timed engine steps (after 10 warm-up steps)")
    p.add_argument("--ase-steps", type=int, default=20, help="timed ASE steps (after 5 warm-up steps)")
    p.add_argument("--replicas", type=int, default=64)
    p.add_argument("--skin", type=float, default=0.5, help="Verlet skin, Å (ours)")
    p.add_argument("--mace-backends", default="cueq,e3nn")
    p.add_argument("--mace-late-backends", default="oeq", help="MACE backends timed after the memory test")
    p.add_argument("--maxsize-backends", default="cueq,e3nn", help="MACE backends in the memory test")
    p.add_argument("--max-sizes", default="tumbler=40,50,60,68;cueq=34,36,38,40;e3nn=14,18,20,22;oeq=34,36,38",
                   help="fcc Cu n (n^3 x 4 atoms) tried in the memory test, per implementation")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="start no new row after this many seconds of timing (default %(default)s)")
    p.add_argument("--systems", default="", help="only these systems in the ase and mace parts (e.g. 3bpa1)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test; CPU is fine)")
    p.add_argument("--cpu", action="store_true", help="run on CPU even if CUDA is present")
    p.add_argument("--bpa", help="3BPA xyz file, e.g. train_300K.xyz (its first frame is used); "
                                 "without it the 3BPA systems are skipped")
    p.add_argument("--no-warm-up", action="store_true", help="skip the parallel compilation before timing")
    p.add_argument("--warm-timeout", type=float, default=180, help="seconds per warm-up process")
    p.add_argument("--warm", choices=WARM_PARTS, help="internal: only compile the Triton kernels of one op, then exit")
    args = p.parse_args(argv)
    if args.warm:
        warm(args.warm)
        return
    if args.bpa:
        BPA_FILE = Path(args.bpa)
        if not BPA_FILE.exists():
            p.error(f"--bpa {BPA_FILE}: no such file")
    if torch.cuda.is_available() and not args.cpu and not args.no_warm_up:
        warm_up(args.warm_timeout)
    if args.quick:
        args.max_sizes = "tumbler=2,3;cueq=2,3;e3nn=2,3;oeq=2,3"
    bench = Bench(args)
    parts = {"engine": part_engine, "mace": part_mace, "ase": part_ase, "maxsize": part_maxsize,
             "mace_late": part_mace_late}
    for name in args.parts.split(","):
        parts[name](bench)
    print(f"\n=== md bench ({bench.path})")
    print(table(bench.results))


if __name__ == "__main__":
    main()
