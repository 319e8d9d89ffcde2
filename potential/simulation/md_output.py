"""What both MD engines share: the CSV log, trajectory frames, initial velocities, element checks and the
result record. ``ase_md`` (ASE integrators) and ``engine_md`` (the device-resident engine) both import from here,
so neither imports the other.

The log is CSV text, one line every ``interval`` steps (step 0 included):
    step,time_fs,epot_eV,ekin_eV,etot_eV,temperature_K,pressure_GPa,volume_A3,steps_per_s
pressure_GPa includes the kinetic (ideal-gas) term, as ASE's barostats see it; it is nan for
non-periodic structures. steps_per_s is measured over the steps since the previous line.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import IO

import ase
import ase.data
import ase.io
import numpy as np
from ase import units
from ase.md.velocitydistribution import Stationary

from data.structure import is_3d_periodic

from ..calculator import Calculator
from ..committee import Committee
from ..evaluate import load_model_file

LOG_COLUMNS = (
    "step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K", "pressure_GPa", "volume_A3", "steps_per_s",
)


@dataclasses.dataclass
class MDResult:
    atoms: ase.Atoms  # final state (positions, momenta, cell)
    rows: list[dict[str, float]]  # the log lines, as numbers
    steps: int
    wall_s: float  # time inside the integrator loop
    ms_per_step: float
    stopped: str | None = None  # why the run ended early (the committee's uncertainty threshold), else None
    uncertain_frames: int = 0  # frames written above the uncertainty threshold


def load_calculator(model_path: str | Path | list, device: str = "cpu", skin: float = 1.0):
    """``potential.Calculator`` around the model file (errors as ``potential.evaluate.load_model_file``), or
    around a ``potential.Committee`` of a list of two or more model files."""
    paths = model_path if isinstance(model_path, (list, tuple)) else [model_path]
    models = [load_model_file(p, device=device) for p in paths]
    model = models[0] if len(models) == 1 else Committee(models, names=[str(p) for p in paths])
    return Calculator(model, device=device, skin=skin)


def check_elements(atoms: ase.Atoms, elements, name: str = "structure") -> None:
    """ValueError naming the elements of ``atoms`` that the model does not know."""
    known = {int(z) for z in elements}
    unknown = sorted({int(z) for z in atoms.numbers} - known)
    if unknown:
        sym = ", ".join(f"{ase.data.chemical_symbols[z]} (Z={z})" for z in unknown)
        have = ", ".join(ase.data.chemical_symbols[z] for z in sorted(known))
        raise ValueError(f"{name}: element(s) {sym} unknown to the model; the model knows {have}")


def open_log(path: str | None, columns=LOG_COLUMNS) -> tuple[IO[str] | None, bool]:
    """The CSV log target for ``path`` (None: no log, "-": stdout, else a new file) with the header written,
    and whether the caller must close it."""
    if path is None:
        return None, False
    if path == "-":
        out, close = sys.stdout, False
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        out, close = open(path, "w"), True
    out.write(",".join(columns) + "\n")
    out.flush()
    return out, close


def run_and_close(run, *outputs) -> float:
    """Wall seconds of run(); each output (progress bar, trajectory writer, log file; None = absent) is closed
    afterwards, also when run() raises, so no file is left half-written and open."""
    t0 = time.perf_counter()
    try:
        run()
    finally:
        wall = time.perf_counter() - t0
        for out in outputs:
            if out is not None:
                out.close()
    return wall


def format_row(row: dict[str, float]) -> str:
    """One CSV log line (LOG_COLUMNS order, newline included)."""
    return (f"{row['step']:d},{row['time_fs']:.3f},{row['epot_eV']:.6f},{row['ekin_eV']:.6f},{row['etot_eV']:.6f},"
            f"{row['temperature_K']:.2f},{row['pressure_GPa']:.5f},{row['volume_A3']:.4f},{row['steps_per_s']:.2f}"
            + (f",{row['max_force_spread_eVA']:.5f}" if "max_force_spread_eVA" in row else "") + "\n")


class CSVLogger:
    """Observer writing one CSV line per call; keeps the rows in memory too (``.rows``)."""

    def __init__(self, dyn, atoms: ase.Atoms, out: IO[str] | None):
        self.dyn, self.atoms, self.out = dyn, atoms, out
        self.rows: list[dict[str, float]] = []
        self.periodic = is_3d_periodic(atoms)
        self._last = None  # (wall time, step) of the previous line

    def __call__(self) -> None:
        atoms, now, step = self.atoms, time.perf_counter(), self.dyn.nsteps
        epot = float(atoms.get_potential_energy())
        ekin = float(atoms.get_kinetic_energy())
        pressure = math.nan
        if self.periodic:  # -trace(stress)/3 with the ideal-gas term, eV/Å^3 -> GPa
            pressure = -float(np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True))) / 3.0 / units.GPa
        rate = math.nan
        if self._last is not None and step > self._last[1] and now > self._last[0]:
            rate = (step - self._last[1]) / (now - self._last[0])
        self._last = (now, step)
        row = {
            "step": step,
            "time_fs": self.dyn.get_time() / units.fs,
            "epot_eV": epot,
            "ekin_eV": ekin,
            "etot_eV": epot + ekin,
            "temperature_K": float(atoms.get_temperature()),
            "pressure_GPa": pressure,
            "volume_A3": float(atoms.get_volume()) if self.periodic else math.nan,
            "steps_per_s": rate,
        }
        if "max_force_spread" in getattr(atoms.calc, "implemented_properties", ()):  # a committee
            row["max_force_spread_eVA"] = float(atoms.calc.get_property("max_force_spread", atoms))
        self.rows.append(row)
        if self.out is not None:
            self.out.write(format_row(row))
            self.out.flush()


class TrajectoryWriter:
    """Writes frames as ASE .traj (ase.io.Trajectory) or extended XYZ (appended), by suffix."""

    def __init__(self, path: str | Path, atoms: ase.Atoms):
        self.path, self.atoms = Path(path), atoms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() == ".traj":
            from ase.io.trajectory import Trajectory

            self._traj = Trajectory(str(self.path), "w", atoms)
            self._file = None
        else:
            self._traj = None
            self._file = open(self.path, "w")

    def __call__(self) -> None:
        if self._traj is not None:
            self._traj.write(self.atoms)
        else:
            ase.io.write(self._file, self.atoms, format="extxyz")
            self._file.flush()

    def close(self) -> None:
        if self._traj is not None:
            self._traj.close()
        if self._file is not None:
            self._file.close()


def init_velocities(atoms: ase.Atoms, temperature: float, seed: int) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` K, seeded, then zero net momentum (temperature kept)."""
    rng = np.random.default_rng([seed, 0])
    try:  # ASE >= 3.29; MaxwellBoltzmannDistribution is its deprecated alias
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    else:
        thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)

