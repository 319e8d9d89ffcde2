"""Helpers of the LAMMPS tests: find the build (tools/build_lammps.sh), write data files, run the driver.

The build lives in ${TUMBLER_LAMMPS_PREFIX:-~/.cache/tumbler-lammps} (or $TUMBLER_LAMMPS); without it the tests
skip and say how to build it. LAMMPS always runs in a child process (tests/lammps/driver.py), under mpirun for
several ranks, so that a LAMMPS error or crash fails one test instead of the test session.
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


def prefix() -> Path:
    return Path(os.environ.get("TUMBLER_LAMMPS") or os.environ.get("TUMBLER_LAMMPS_PREFIX")
                or Path.home() / ".cache" / "tumbler-lammps")


def environment() -> dict:
    """The child's environment: liblammps and this Python's libpython on the loader path (the lammps module's
    ML-IAP check opens libpython by name), our checkout first on PYTHONPATH, one thread, OpenMPI as root,
    the model on the CPU (``run`` may ask for CUDA)."""
    env = dict(os.environ)
    libs = [str(prefix() / "lib"), str(prefix() / "lib64"), sysconfig.get_config_var("LIBDIR") or ""]
    env["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1",
               TUMBLER_LAMMPS_DEVICE="cpu")
    return env


_available: str | None = None


def require_lammps() -> None:
    """Skip (with the reason) unless the LAMMPS build with ML-IAP's Python coupling imports in a child."""
    global _available
    if _available is None:
        if not (prefix() / ".built").exists():
            _available = f"no LAMMPS build in {prefix()}: run `bash tools/build_lammps.sh`"
        else:
            check = ("import lammps, lammps.mliap; "
                     "l = lammps.lammps(cmdargs=['-log', 'none', '-screen', 'none']); "
                     "assert l.has_package('ML-IAP') and l.has_package('PYTHON'), l.installed_packages; "
                     "lammps.mliap.activate_mliappy(l)")
            run = subprocess.run([sys.executable, "-c", check], env=environment(), capture_output=True, text=True,
                                 timeout=120)
            _available = "" if run.returncode == 0 else \
                f"the LAMMPS build in {prefix()} does not load: {run.stderr.strip()[-400:]}"
    if _available:
        pytest.skip(_available)


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
        nve_steps: int = 0, timestep_ps: float = 0.001, device: str = "cpu", expect_failure: bool = False):
    """Run the driver on ``atoms``; returns its results (dict of arrays), or with expect_failure the finished
    process (its output) after checking that LAMMPS stopped with an error."""
    tag = f"run{len(list(tmp.glob('spec*.json')))}"
    data, spec_file, out = tmp / f"{tag}.data", tmp / f"spec-{tag}.json", tmp / f"{tag}.npz"
    write_data(atoms, data, elements)
    boundary = "p p p" if atoms.pbc.all() else "f f f"
    spec = {"data": str(data), "model": str(model_file), "elements": elements, "ghostneigh": ghostneigh,
            "comm_cutoff": comm_cutoff, "skin": skin, "boundary": boundary, "processors": processors,
            "nve_steps": nve_steps, "timestep": timestep_ps, "out": str(out)}
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(DRIVER), str(spec_file)]
    if nprocs > 1:
        mpirun = shutil.which("mpirun") or str(prefix() / "bin" / "mpirun")
        if not Path(mpirun).exists():
            pytest.skip("mpirun not found (tools/build_lammps.sh installs OpenMPI)")
        command = [mpirun, "-np", str(nprocs)] + command
    env = environment()
    env["TUMBLER_LAMMPS_DEVICE"] = device
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if expect_failure:
        assert proc.returncode != 0, f"LAMMPS should have failed:\n{proc.stdout[-2000:]}"
        return proc
    if proc.returncode != 0:
        raise AssertionError(f"LAMMPS failed ({' '.join(command)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with np.load(out) as results:
        return {k: results[k] for k in results.files}
