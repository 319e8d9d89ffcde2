"""`Structure`: one labelled atomic configuration in memory (numpy, float64).

Conventions (see data/schema.py for the units table): positions Å, energy eV,
forces eV/Å, stress eV/Å^3 with ASE's sign (positive = tensile). A label that is
absent is None. `cell` rows are lattice vectors; a molecule has a zero cell and
pbc all False. `source` and `index` say where the structure came from (file, row)
and appear in every error message about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from .neighbors import neighbor_list
from .schema import DEFAULT_CONFIG_TYPE

#: Two atoms closer than this (Å, periodic images included) count as coincident.
COINCIDENT_DISTANCE = 1e-3


class DataError(ValueError):
    """Bad input data. The message names the file, the structure index and the key."""


def where(source: str, index: int, key: str | None = None) -> str:
    """Prefix for error messages: "file: structure 12: key 'forces':"."""
    text = f"{source or '<memory>'}: structure {index}"
    return text + (f": key '{key}'" if key else "")


def is_3d_periodic(structure) -> bool:
    """True when a structure (ase.Atoms or data.Structure: anything with .pbc and .cell) is periodic in all
    three directions with a cell of non-zero volume (Å^3): the structures that have a stress."""
    return bool(np.all(structure.pbc)) and abs(float(np.linalg.det(np.asarray(structure.cell, dtype=float)))) > 1e-9


def as_stress_3x3(value, context: str) -> np.ndarray:
    """Stress-like label -> (3,3). Accepts Voigt 6 (ASE order xx yy zz yz xz xy), 9 or (3,3)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 6:
        return voigt_6_to_full_3x3_stress(arr.reshape(6))
    if arr.size == 9:
        return arr.reshape(3, 3).copy()
    raise DataError(f"{context}: expected 6 (Voigt) or 9 components, got shape {arr.shape}")


@dataclass
class Structure:
    positions: np.ndarray  # (n, 3) float64, Å
    numbers: np.ndarray  # (n,) int64, atomic numbers
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))  # (3, 3) Å, rows = lattice vectors
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))  # (3,) bool
    energy: float | None = None  # eV
    forces: np.ndarray | None = None  # (n, 3) eV/Å
    stress: np.ndarray | None = None  # (3, 3) eV/Å^3, ASE sign
    weight: float = 1.0
    config_type: str = DEFAULT_CONFIG_TYPE
    source: str = ""
    index: int = -1

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.cell = np.asarray(self.cell, dtype=np.float64)
        self.pbc = np.asarray(self.pbc, dtype=bool)
        if self.pbc.shape == ():
            self.pbc = np.repeat(self.pbc, 3)
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
        if self.stress is not None:
            self.stress = np.asarray(self.stress, dtype=np.float64)
        self.weight = float(self.weight)
        self.config_type = str(self.config_type)

    def __len__(self) -> int:
        return len(self.numbers)

    # ------------------------------------------------------------------ ASE
    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        virial_key: str = "virial",
        weight_key: str = "weight",
        config_type_key: str = "config_type",
        source: str = "",
        index: int = -1,
    ) -> "Structure":
        """Labels are looked up in atoms.info / atoms.arrays, then in atoms.calc.results.

        A virial (eV, 6 or 9 comps) becomes stress = -virial / volume. Stress wins
        when both are present. Missing labels become None (no error here: callers
        that require labels check with `require_labels`).
        """
        ctx = where(source, index)
        energy = _lookup(atoms, energy_key)
        forces = _lookup(atoms, forces_key)
        stress = _lookup(atoms, stress_key)
        virial = _lookup(atoms, virial_key) if stress is None else None
        cell = np.array(atoms.cell[:], dtype=np.float64)
        if stress is not None:
            stress = as_stress_3x3(stress, f"{ctx}: key '{stress_key}'")
        elif virial is not None:
            volume = abs(np.linalg.det(cell))
            if not volume > 0:
                raise DataError(f"{ctx}: key '{virial_key}': virial given but the cell has zero volume")
            stress = -as_stress_3x3(virial, f"{ctx}: key '{virial_key}'") / volume
        if energy is not None:
            energy = np.asarray(energy, dtype=np.float64)
            if energy.size != 1:
                raise DataError(f"{ctx}: key '{energy_key}': expected a scalar energy, got shape {energy.shape}")
            energy = float(energy.reshape(()))
        weight = atoms.info.get(weight_key, 1.0)
        config_type = atoms.info.get(config_type_key, DEFAULT_CONFIG_TYPE)
        return cls(
            positions=atoms.positions.copy(),
            numbers=atoms.numbers.copy(),
            cell=cell,
            pbc=np.array(atoms.pbc, dtype=bool),
            energy=energy,
            forces=None if forces is None else np.array(forces, dtype=np.float64),
            stress=stress,
            weight=weight,
            config_type=config_type,
            source=source,
            index=index,
        )

    def to_atoms(self) -> Atoms:
        """ASE Atoms with a SinglePointCalculator holding the labels present."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info["config_type"] = self.config_type
        atoms.info["weight"] = self.weight
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
            results["free_energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces.copy()
        if self.stress is not None:
            results["stress"] = self.stress.copy()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    # ------------------------------------------------------------ validation
    def validate(self) -> "Structure":
        """Raise DataError (naming source, index, key) on any inconsistency; return self."""
        n = len(self.numbers)
        ctx = lambda key: where(self.source, self.index, key)  # noqa: E731
        if self.numbers.ndim != 1 or n == 0:
            raise DataError(f"{ctx('numbers')}: empty structure (no atoms)")
        _check_array(self.positions, (n, 3), ctx("positions"))
        if np.any(self.numbers < 1) or np.any(self.numbers > 118):
            bad = self.numbers[(self.numbers < 1) | (self.numbers > 118)][0]
            raise DataError(f"{ctx('numbers')}: atomic number {bad} outside 1..118")
        _check_array(self.cell, (3, 3), ctx("cell"))
        if self.pbc.shape != (3,):
            raise DataError(f"{ctx('pbc')}: expected shape (3,), got {self.pbc.shape}")
        if self.pbc.any():
            periodic_cell = self.cell[self.pbc]
            if np.any(np.linalg.norm(periodic_cell, axis=1) == 0) or np.linalg.matrix_rank(periodic_cell) < len(periodic_cell):
                raise DataError(f"{ctx('cell')}: periodic lattice vectors are zero or linearly dependent: {self.cell.tolist()}")
        if self.energy is not None and not np.isfinite(self.energy):
            raise DataError(f"{ctx('energy')}: non-finite value {self.energy}")
        if self.forces is not None:
            _check_array(self.forces, (n, 3), ctx("forces"))
        if self.stress is not None:
            _check_array(self.stress, (3, 3), ctx("stress"))
        if not np.isfinite(self.weight) or self.weight < 0:
            raise DataError(f"{ctx('weight')}: weight must be finite and >= 0, got {self.weight}")
        self._check_coincident(ctx("positions"))
        return self

    def _check_coincident(self, context: str) -> None:
        if len(self.numbers) < 2 and not self.pbc.any():
            return
        senders, receivers, shifts = neighbor_list(self.positions, self.cell, self.pbc, COINCIDENT_DISTANCE)
        if len(senders):
            vec = self.positions[senders[0]] - self.positions[receivers[0]] + shifts[0] @ self.cell
            raise DataError(
                f"{context}: atoms {receivers[0]} and {senders[0]} are at the same position "
                f"(distance {np.linalg.norm(vec):.2e} Å, cell shift {shifts[0].astype(int).tolist()})"
            )


def _lookup(atoms: Atoms, key: str | None):
    """Label `key` from atoms.info, atoms.arrays, then the calculator's results (or None)."""
    if not key:
        return None
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def available_keys(atoms: Atoms) -> list[str]:
    """All label names an Atoms object carries (for 'key not found' messages)."""
    keys = set(atoms.info) | (set(atoms.arrays) - {"numbers", "positions"})
    if atoms.calc is not None:
        keys |= set(getattr(atoms.calc, "results", {}))
    return sorted(keys)


def _check_array(arr: np.ndarray, shape: tuple, context: str) -> None:
    if arr.shape != shape:
        raise DataError(f"{context}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        row = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise DataError(f"{context}: non-finite value {arr[tuple(row)]} at {row}")
