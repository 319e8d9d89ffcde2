"""Watching a committee's uncertainty during MD (``md.py --model a.pt b.pt ... --uncertainty-threshold 0.2``).

After every MD step ``UncertaintyWatch`` reads the committee calculator's ``max_force_spread`` (eV/Å, the
largest per-atom force spread over the members; potential/committee.py). A step above the threshold is a
structure outside what the committee agrees on, i.e. a candidate for a new DFT label (active learning's first
step): the frame is appended to an extended-XYZ file (positions, cell, the committee's mean energy and forces,
info ``step``, ``time_fs``, ``max_force_spread``, ``energy_per_atom_std``, per-atom array ``force_spread``), and
with action "stop" the run ends there (``UncertaintyStop``, caught by potential.simulation.ase_md.run_md).
"""

from __future__ import annotations

from pathlib import Path

import ase
import ase.io
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator

ACTIONS = ("stop", "write")


class UncertaintyStop(Exception):
    """Raised by UncertaintyWatch to end an MD run: step (int), spread (eV/Å)."""

    def __init__(self, step: int, spread: float, threshold: float):
        super().__init__(f"stopped at step {step}: max force spread {spread:.4f} eV/Å > threshold {threshold} eV/Å")
        self.step, self.spread = step, spread


class UncertaintyWatch:
    """ASE dynamics observer (attach with interval=1): writes frames above ``threshold`` eV/Å to ``path``
    (a new file, frames appended) and, with action "stop", ends the run at the first one."""

    def __init__(self, dyn, atoms: ase.Atoms, threshold: float, action: str, path: str | Path):
        if action not in ACTIONS:
            raise ValueError(f"uncertainty_action={action!r} must be one of {', '.join(ACTIONS)}")
        if "max_force_spread" not in getattr(atoms.calc, "implemented_properties", ()):
            raise ValueError("uncertainty_threshold needs a committee: give several model files "
                             "(--model a.pt b.pt ...)")
        self.dyn, self.atoms, self.threshold, self.action = dyn, atoms, float(threshold), action
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # frames of this run only
        self.frames = 0  # frames written
        self.max_spread = 0.0  # eV/Å, the largest seen in this run

    def __call__(self) -> None:
        atoms, calc = self.atoms, self.atoms.calc
        spread = float(calc.get_property("max_force_spread", atoms))
        self.max_spread = max(self.max_spread, spread)
        if spread <= self.threshold:
            return
        frame = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.info.update(step=int(self.dyn.nsteps), time_fs=float(self.dyn.get_time() / units.fs),
                          max_force_spread=spread, energy_per_atom_std=float(calc.results["energy_per_atom_std"]))
        frame.arrays["force_spread"] = calc.results["force_spread"].copy()
        frame.calc = SinglePointCalculator(frame, energy=calc.results["energy"], forces=calc.results["forces"].copy())
        ase.io.write(self.path, frame, format="extxyz", append=True)
        self.frames += 1
        if self.action == "stop":
            raise UncertaintyStop(int(self.dyn.nsteps), spread, self.threshold)
