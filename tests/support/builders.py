"""Builders every test package shares: tiny models, small structures, the shared datasets' folder.

tests/conftest.py puts this folder (tests/support) on sys.path, so any test file or conftest can `from builders import ...`
(pytest's importlib mode gives test files no package path of their own).

Tiny models are float64 on the reference ops (8 channels, lmax 1, harmonics l <= 2, correlation 2, one
interaction): every test package starts from TINY and states only what it changes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

TINY = dict(channels=8, lmax=1, lmax_sh=2, correlation=2, num_interactions=1, num_bessel=6, radial_hidden=[8, 8],
            readout_hidden=8, dtype="float64", backend="reference")

# ../shared/data beside the checkout (a developer's /work/shared, CI's copy beside its clone): never committed
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_data_dir() -> Path:
    """../shared/data, or a skip that says it is absent (the reference datasets are not part of the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data absent: {SHARED_DATA} not found (reference datasets are not part of the repo)")
    return SHARED_DATA


def load_module(name: str, path: Path):
    """The Python file `path` as module `name`, loaded once (a test folder's helper file: pytest's importlib mode
    gives test folders no package path)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def tiny_config(elements=(29,), **overrides):
    """potential.ModelConfig of TINY with `elements` (atomic numbers) and `overrides`; E0s default to 0 eV."""
    from potential import ModelConfig

    d = dict(TINY, elements=list(elements), atomic_energies=[0.0] * len(elements))
    d.update(overrides)
    return ModelConfig.from_dict(d)


def tiny_model(seed: int = 0, elements=(1, 6, 8, 29), r_max: float = 4.0, scale: float = 2.0, **overrides):
    """A tiny Potential with seeded random weights, avg_num_neighbors 10, E0 = -1, -2, ... eV and shift -0.5 eV,
    in eval mode: the model of the dynamics and calculator tests."""
    from potential import Potential

    torch.manual_seed(seed)
    defaults = dict(avg_num_neighbors=10.0, r_max=r_max, scale=scale, shift=-0.5,
                    atomic_energies=[-1.0 - k for k in range(len(elements))])
    return Potential(tiny_config(elements, **{**defaults, **overrides})).eval()


@contextlib.contextmanager
def one_torch_thread():
    """Torch on one intra-op thread inside the block: test graphs are tiny, and on a busy 2-core runner OpenMP
    threads spin-wait for each other (10-80x slower steps seen)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def with_velocities(atoms: Atoms, temperature: float, seed: int) -> Atoms:
    """Seeded Maxwell-Boltzmann momenta at `temperature` K."""
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    return atoms


def cu_cubic(rattle=0.05, seed=1) -> Atoms:
    """4-atom cubic fcc Cu cell (a = 3.6 Å), rattled."""
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.rattle(rattle, seed=seed)
    return a


def cu_triclinic(seed=2) -> Atoms:
    """2-atom triclinic cell, much smaller than a 4 Å cutoff (many periodic images)."""
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


def mixed_structures() -> list[Atoms]:
    """A cubic and a small triclinic Cu cell, ethanol, and a mixed-pbc water wire."""
    return [cu_cubic(), cu_triclinic(), molecule("CH3CH2OH"), water_wire()]
