"""The tumbler dataset file: HDF5 layout, key names, shapes, dtypes and units.

This module is the single source of truth for the on-disk format; `data.hdf5` reads
and writes exactly what is listed here (the README points here).

A file holds B structures with N atoms in total. Per-atom arrays are concatenated
over structures; structure b owns rows ``ptr[b]:ptr[b+1]``. All datasets live in the
root group, uncompressed, in chunks of 1024 rows (resizable: writers append block by
block), so that reading one structure is one small slice per array.

| key          | shape      | dtype   | unit     | meaning                                                  |
|--------------|------------|---------|----------|----------------------------------------------------------|
| ptr          | (B+1,)     | int64   | -        | offsets into per-atom arrays; ptr[0]=0, ptr[B]=N         |
| positions    | (N, 3)     | float64 | Å        | Cartesian positions                                      |
| numbers      | (N,)       | int64   | -        | atomic numbers (1..118)                                  |
| forces       | (N, 3)     | float64 | eV/Å     | forces; NaN rows where has_forces is False               |
| energy       | (B,)       | float64 | eV       | total energy; NaN where has_energy is False              |
| stress       | (B, 3, 3)  | float64 | eV/Å^3   | stress, ASE sign (positive = tensile); NaN where absent  |
| cell         | (B, 3, 3)  | float64 | Å        | rows are lattice vectors; zeros for a molecule            |
| pbc          | (B, 3)     | bool    | -        | periodic along each lattice vector                       |
| weight       | (B,)       | float64 | -        | per-structure loss weight                                |
| config_type  | (B,)       | str     | -        | variable-length UTF-8 label, e.g. "IsolatedAtom"         |
| has_energy   | (B,)       | bool    | -        | presence mask for energy                                 |
| has_forces   | (B,)       | bool    | -        | presence mask for forces                                 |
| has_stress   | (B,)       | bool    | -        | presence mask for stress                                 |

Root attributes: ``format = "tumbler-dataset"``, ``format_version = 1``, one
``unit_<quantity>`` string per unit (see `UNITS`), ``num_structures``, ``num_atoms``
and ``source`` (free text: where the data came from, e.g. the converted file).
The masks are authoritative: a reader never looks at a NaN fill value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT = "tumbler-dataset"
FORMAT_VERSION = 1

#: Units of every physical quantity in a file (and in `data.Structure`).
UNITS = {
    "length": "Å",
    "energy": "eV",
    "forces": "eV/Å",
    "stress": "eV/Å^3 (ASE sign: positive = tensile, stress = (1/V) dE/dstrain)",
}

DEFAULT_CONFIG_TYPE = "Default"


@dataclass(frozen=True)
class Field:
    """One dataset in the file. `shape` uses "B" (structures) and "N" (atoms)."""

    key: str
    shape: tuple
    dtype: str
    unit: str
    per_atom: bool
    description: str


FIELDS: tuple[Field, ...] = (
    Field("ptr", ("B+1",), "int64", "-", False, "offsets into per-atom arrays"),
    Field("positions", ("N", 3), "float64", "Å", True, "Cartesian positions"),
    Field("numbers", ("N",), "int64", "-", True, "atomic numbers"),
    Field("forces", ("N", 3), "float64", "eV/Å", True, "forces, NaN where absent"),
    Field("energy", ("B",), "float64", "eV", False, "total energy, NaN where absent"),
    Field("stress", ("B", 3, 3), "float64", "eV/Å^3", False, "stress (ASE sign), NaN where absent"),
    Field("cell", ("B", 3, 3), "float64", "Å", False, "lattice vectors as rows"),
    Field("pbc", ("B", 3), "bool", "-", False, "periodic directions"),
    Field("weight", ("B",), "float64", "-", False, "loss weight"),
    Field("config_type", ("B",), "str", "-", False, "configuration label"),
    Field("has_energy", ("B",), "bool", "-", False, "energy present"),
    Field("has_forces", ("B",), "bool", "-", False, "forces present"),
    Field("has_stress", ("B",), "bool", "-", False, "stress present"),
)

FIELD_BY_KEY = {f.key: f for f in FIELDS}
PER_ATOM_KEYS = tuple(f.key for f in FIELDS if f.per_atom)
PER_STRUCTURE_KEYS = tuple(f.key for f in FIELDS if not f.per_atom and f.key != "ptr")

#: Config types that mark an isolated-atom reference energy (compared case- and
#: separator-insensitively: "IsolatedAtom", "isolated_atom", "isolated atom").
ISOLATED_ATOM_CONFIG_TYPES = ("isolatedatom",)


def is_isolated_atom_label(config_type: str) -> bool:
    """True for the config_type spellings used for isolated-atom reference energies."""
    norm = config_type.lower().replace("_", "").replace("-", "").replace(" ", "")
    return norm in ISOLATED_ATOM_CONFIG_TYPES


def expected_shape(key: str, num_structures: int, num_atoms: int) -> tuple[int, ...]:
    """Concrete shape of dataset `key` for a file of B structures and N atoms."""
    sizes = {"B+1": num_structures + 1, "B": num_structures, "N": num_atoms}
    return tuple(sizes.get(s, s) for s in FIELD_BY_KEY[key].shape)


def numpy_dtype(key: str):
    """numpy dtype of dataset `key` (strings are handled by h5py as vlen UTF-8)."""
    dtype = FIELD_BY_KEY[key].dtype
    return object if dtype == "str" else np.dtype(dtype)
