"""Shared fixtures for the training tests: tiny EMT data sets and a tiny-model config factory.

Budget: all of tests/training under 180 s on 2 CPU cores. Models are tiny (8 channels, lmax 1, correlation 2,
one interaction), the data are 4-atom Cu cells (r_max 3 Å: 12 neighbors each).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from potential.training.config import parse_config


def emt_structures(n: int, seed: int = 0, element: str = "Cu", stress_every: int = 1):
    """`n` rattled, strained 4-atom fcc cells labelled by EMT, as data.Structure.
    Stress is kept on every `stress_every`-th structure (None elsewhere; 0: never)."""
    import data

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk(element, "fcc", a=3.6, cubic=True)
        atoms.set_cell(atoms.cell * (1 + 0.02 * rng.normal()), scale_atoms=True)
        atoms.positions += 0.08 * rng.normal(size=atoms.positions.shape)
        atoms.calc = EMT()
        stress = atoms.get_stress(voigt=False) if stress_every and i % stress_every == 0 else None
        out.append(data.Structure(positions=atoms.positions, numbers=atoms.numbers, cell=np.array(atoms.cell),
                                  pbc=atoms.pbc, energy=atoms.get_potential_energy(),
                                  forces=atoms.get_forces(), stress=stress, index=i))
    return out


@pytest.fixture(scope="session")
def emt():
    """The `emt_structures` factory."""
    return emt_structures


@pytest.fixture(scope="session")
def cu_h5(tmp_path_factory):
    """24 Cu structures with energy, forces and stress, in our HDF5 format."""
    import data

    path = tmp_path_factory.mktemp("data") / "cu.h5"
    data.write_dataset(path, emt_structures(24))
    return str(path)


@pytest.fixture
def make_config(tmp_path):
    """make_config(train_path, **sections) -> TrainConfig for a tiny CPU run in tmp_path/run."""

    def make(train: str, **overrides):
        raw = {
            "data": {"train": train, "valid_fraction": 0.25},
            "model": {"channels": 8, "lmax": 1, "lmax_sh": 2, "correlation": 2, "num_interactions": 1,
                      "r_max": 3.0, "num_bessel": 4, "radial_hidden": [8], "readout_hidden": 4},
            "training": {"batch_size": 4, "max_epochs": 2, "lr": 0.01, "ema_decay": 0.9, "forces_weight": 10.0,
                         "scheduler": "plateau", "patience": 1},
            "output_dir": str(tmp_path / "run"), "device": "cpu", "dtype": "float64", "seed": 1,
        }
        for section, values in overrides.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        return parse_config(raw)

    return make
