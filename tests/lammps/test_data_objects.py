"""LAMMPSPotential.compute_forces against stand-ins for the data object of each LAMMPS build, in-process.

No LAMMPS is needed (so CI runs these): each stand-in copies, from the LAMMPS 4Feb2025 sources, what
compute_forces may touch of the object that its build hands over on the host, and adds the pair forces the way
that build does. Where the two builds differ:
  plain  (src/ML-IAP/mliap_unified_couple.pyx): ``eatoms`` and ``energy`` have setters only, which copy;
  Kokkos (src/KOKKOS/mliap_unified_couple_kokkos.pyx, data.dev == 0, i.e. a Serial or OpenMP backend): every
         array is a numpy view of LAMMPS's memory and ``eatoms`` has a getter only (lines 226-230), so it must
         be filled in place; the class lives in the Cython module ``mliap_unified_couple_kokkos``.
Both take the pair gradients as a C-contiguous float64 [npairs, 3] array (``double[:, ::1]``) and add +f_ij to
atom i and -f_ij to atom j (mliap_unified.cpp, mliap_unified_kokkos.cpp:295-323). The real builds are run by
test_lammps.py; a Kokkos LAMMPS could not be built here (tools/build_lammps.sh says why), so this is what
exercises the Kokkos branch of compute_forces on the CPU.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from ase.build import molecule

from potential import Calculator
from potential.lammps import KOKKOS_MODULE, is_kokkos

R_MAX = 4.0  # Å, as in conftest.py
ELEMENTS = ["H", "C", "O", "Cu"]


class PlainData:
    """The plain build's data object for a finite system: every atom owned, no ghosts."""

    def __init__(self, atoms, r_max: float):
        pos = atoms.positions
        rij = pos[None, :, :] - pos[:, None, :]  # [N, N, 3] x_j - x_i, Å
        dist = np.linalg.norm(rij, axis=-1)
        i, j = np.nonzero((dist < r_max) & ~np.eye(len(atoms), dtype=bool))
        n = len(atoms)
        self.ntotal = self.nlocal = self.nlistatoms = self.natomneigh = n
        self.npairs = len(i)
        self._elems = (atoms.numbers - 1).astype(np.int32)  # element index = Z - 1 (our element list)
        self._iatoms = np.arange(n, dtype=np.int32)
        self._pair_i, self._pair_j = i.astype(np.int32), j.astype(np.int32)
        self._rij = np.ascontiguousarray(rij[i, j])  # [P, 3] float64
        self.f = np.zeros((n, 3))  # eV/Å
        self.eatoms_buffer = np.full(n, np.nan)  # eV
        self.energy_value = None

    elems = property(lambda self: self._elems)
    iatoms = property(lambda self: self._iatoms)
    pair_i = property(lambda self: self._pair_i)
    pair_j = property(lambda self: self._pair_j)
    rij = property(lambda self: self._rij)

    def _set_energy(self, value):
        self.energy_value = float(value)

    energy = property(fset=_set_energy)

    def _set_eatoms(self, value):
        self.eatoms_buffer[:] = value

    eatoms = property(fset=_set_eatoms)

    def update_pair_forces(self, fij):
        assert isinstance(fij, np.ndarray) and fij.dtype == np.float64 and fij.flags.c_contiguous, type(fij)
        assert fij.shape == (self.npairs, 3), fij.shape
        np.add.at(self.f, self._pair_i, fij)
        np.add.at(self.f, self._pair_j, -fij)


class KokkosHostData(PlainData):
    """mliap/kk's data object with a host backend: eatoms is a getter-only view of LAMMPS's array."""

    __module__ = KOKKOS_MODULE
    eatoms = property(lambda self: self.eatoms_buffer)


@pytest.fixture(scope="module")
def unified(models):
    """The two-layer model as LAMMPS loads it (the exported pickle), and the Potential it came from."""
    model, exported = models[2]
    with open(exported, "rb") as f:
        return pickle.load(f), model


@pytest.mark.parametrize("data_class", [PlainData, KokkosHostData], ids=["plain", "kokkos-host"])
def test_compute_forces_fills_each_builds_data_object(unified, data_class, monkeypatch):
    monkeypatch.setenv("TUMBLER_LAMMPS_DEVICE", "cpu")
    lammps_model, model = unified
    atoms = molecule("CH3CH2OH")
    atoms.positions += 0.05 * np.random.default_rng(4).standard_normal(atoms.positions.shape)
    data = data_class(atoms, R_MAX)
    assert is_kokkos(data) == (data_class is KokkosHostData)
    eatoms_memory = data.eatoms_buffer  # the Kokkos object's eatoms must be filled where it lies

    lammps_model.compute_forces(data)

    atoms.calc = Calculator(model)
    energies = atoms.get_potential_energies()
    assert data.eatoms_buffer is eatoms_memory
    np.testing.assert_allclose(data.eatoms_buffer, energies, rtol=0, atol=1e-10)
    assert data.energy_value == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(data.f, atoms.get_forces(), rtol=0, atol=1e-10)
    assert np.abs(data.f).max() > 1e-3 and np.ptp(energies) > 1e-6  # a case that could go wrong

