"""The embedded demo dataset: copper with ASE's EMT potential (no downloads, CPU seconds).

`make_cu_dataset(path, n_structures, seed)` writes (atomically) a deterministic mix of
small cells (<= 32 atoms):

| config_type  | share | what                                                         | stress |
|--------------|-------|--------------------------------------------------------------|--------|
| IsolatedAtom | 1     | one Cu atom, no cell: EMT's reference energy (E0)            | no     |
| bulk         | 20%   | fcc 2x2x2 cubic (32 atoms), a = 3.45..3.80 Å, rattled         | yes    |
| vacancy      | 15%   | the same cell with one atom removed (31 atoms), rattled      | yes    |
| surface      | 15%   | fcc(111) or fcc(100) slab, 2x2x4, 6 Å vacuum, pbc (T, T, F)    | no     |
| strained     | 25%   | fcc 3x3x3 primitive (27 atoms), random symmetric strain 3%   | yes    |
| md           | rest  | Langevin MD snapshots, 300..1200 K, from bulk cells          | yes    |

Slabs keep pbc (T, T, F) and carry no stress: with vacuum in the cell the stress
depends on the arbitrary vacuum height, so it is marked absent (has_stress False).
Energies eV, forces eV/Å, stress eV/Å^3 (ASE sign), exactly as EMT returns them.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md import velocitydistribution

from .hdf5 import is_tumbler_file, write_dataset
from .structure import Structure

# ASE >= 3.29 renamed MaxwellBoltzmannDistribution (same arguments); support both.
_thermalize = getattr(velocitydistribution, "thermalize_momenta", None) or velocitydistribution.MaxwellBoltzmannDistribution


def _label(atoms: Atoms, config_type: str, index: int, with_stress: bool) -> Structure:
    atoms = atoms.copy()
    atoms.set_constraint()  # labels are raw EMT forces, never constraint-projected
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False) if with_stress else None
    return Structure(positions=atoms.positions, numbers=atoms.numbers, cell=np.array(atoms.cell[:]), pbc=atoms.pbc,
                     energy=energy, forces=forces, stress=stress, config_type=config_type,
                     source="synthetic:cu-emt", index=index)


def _bulk(rng, a: float) -> Atoms:
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def _vacancy(rng, a: float) -> Atoms:
    atoms = _bulk(rng, a)
    del atoms[int(rng.integers(len(atoms)))]
    return atoms


def _surface(rng, kind: int) -> Atoms:
    build = fcc111 if kind == 0 else fcc100
    atoms = build("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0)
    atoms.pbc = (True, True, False)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def _strained(rng) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61).repeat((3, 3, 3))
    eps = rng.normal(scale=0.03, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(np.array(atoms.cell[:]) @ (np.eye(3) + eps), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def _md_snapshots(rng, count: int, index0: int) -> list[Structure]:
    """`count` snapshots from Langevin runs (20 steps of 2 fs apart), 4 per trajectory."""
    out = []
    while len(out) < count:
        atoms = bulk("Cu", "fcc", a=float(rng.uniform(3.55, 3.70)), cubic=True).repeat((2, 2, 2))
        atoms.calc = EMT()
        atoms.set_constraint(FixCom())
        temperature = float(rng.uniform(300.0, 1200.0))
        seed = int(rng.integers(2**31))
        _thermalize(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
        dyn = Langevin(atoms, timestep=2.0 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False,
                       rng=np.random.default_rng(seed + 1))
        for _ in range(min(4, count - len(out))):
            dyn.run(20)
            out.append(_label(atoms, "md", index0 + len(out), with_stress=True))
    return out


def generate_cu_structures(n_structures: int = 200, seed: int = 0) -> list[Structure]:
    """The structures of `make_cu_dataset`, in memory. Deterministic given `seed`."""
    if n_structures < 6:
        raise ValueError(f"n_structures must be >= 6 (one of each kind), got {n_structures}")
    rng = np.random.default_rng(seed)
    rest = n_structures - 1
    n_bulk, n_vac, n_surf, n_strain = (max(1, int(f * rest)) for f in (0.20, 0.15, 0.15, 0.25))
    n_md = rest - n_bulk - n_vac - n_surf - n_strain
    out = [_label(Atoms("Cu", pbc=False), "IsolatedAtom", 0, with_stress=False)]
    for a in np.linspace(3.45, 3.80, n_bulk):
        out.append(_label(_bulk(rng, float(a)), "bulk", len(out), with_stress=True))
    for _ in range(n_vac):
        out.append(_label(_vacancy(rng, float(rng.uniform(3.55, 3.70))), "vacancy", len(out), with_stress=True))
    for k in range(n_surf):
        out.append(_label(_surface(rng, k % 2), "surface", len(out), with_stress=False))
    for _ in range(n_strain):
        out.append(_label(_strained(rng), "strained", len(out), with_stress=True))
    out.extend(_md_snapshots(rng, n_md, len(out)))
    return out


def _source_tag(n_structures: int, seed: int) -> str:
    return f"synthetic:cu-emt n_structures={n_structures} seed={seed}"


def make_cu_dataset(path, n_structures: int = 200, seed: int = 0) -> Path:
    """Generate the EMT copper set and write it atomically to `path` (tumbler HDF5)."""
    structures = generate_cu_structures(n_structures, seed)
    return write_dataset(path, structures, source=_source_tag(n_structures, seed))


def ensure_cu_dataset(path, n_structures: int = 200, seed: int = 0) -> Path:
    """Return `path`, generating the set only if no file made with the same parameters is there."""
    path = Path(path)
    if is_tumbler_file(path):
        with h5py.File(path, "r") as f:
            if f.attrs.get("source") == _source_tag(n_structures, seed):
                return path
    os.makedirs(path.parent, exist_ok=True)
    return make_cu_dataset(path, n_structures, seed)
