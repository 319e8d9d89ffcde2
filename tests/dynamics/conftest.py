"""Fixtures for the dynamics tests: tiny float64 models (8 channels, lmax 1, correlation 2, one interaction)
with random weights, and small structures (a triclinic Cu cell smaller than the cutoff, a cubic Cu cell,
molecules, a slab-like mixed-pbc case). Velocities are seeded Maxwell-Boltzmann draws."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

SMALL = dict(channels=8, lmax=1, lmax_sh=2, correlation=2, num_interactions=1, num_bessel=6, radial_hidden=[8, 8],
             readout_hidden=8, avg_num_neighbors=10.0, dtype="float64", backend="reference")


def make_model(seed=0, elements=(1, 6, 8, 29), r_max=4.0, scale=2.0, **overrides):
    from potential import ModelConfig, Potential

    torch.manual_seed(seed)
    d = dict(SMALL, elements=list(elements), r_max=r_max, scale=scale, shift=-0.5,
             atomic_energies=[-1.0 - k for k in range(len(elements))])
    d.update(overrides)
    return Potential(ModelConfig.from_dict(d)).eval()


@pytest.fixture(scope="session")
def model():
    return make_model()


def with_velocities(atoms: Atoms, temperature: float, seed: int) -> Atoms:
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    return atoms


def cu_cubic(rattle=0.05, seed=1) -> Atoms:
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.rattle(rattle, seed=seed)
    return a


def cu_triclinic(seed=2) -> Atoms:
    """2-atom triclinic cell, much smaller than the 4 Å cutoff (many periodic images)."""
    a = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    a.set_cell(a.cell[:] + np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.2, -0.4, 0.0]]), scale_atoms=True)
    a.rattle(0.05, seed=seed)
    return a


def water_wire() -> Atoms:
    """A water molecule periodic along x only (mixed pbc)."""
    a = molecule("H2O")
    a.set_cell([4.0, 0.0, 0.0])
    a.pbc = [True, False, False]
    return a


def structures() -> list[Atoms]:
    return [cu_cubic(), cu_triclinic(), molecule("CH3CH2OH"), water_wire()]


# pytest's importlib mode gives test files no package path: they import these helpers under this name
sys.modules.setdefault("tumbler_dynamics_helpers", sys.modules[__name__])
