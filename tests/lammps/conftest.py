"""Fixtures of the LAMMPS tests: tiny float64 models (1 and 2 interaction layers) saved and exported once,
and the helpers of lmp.py (loaded with importlib: the importlib import mode gives tests no package path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders import load_module

from potential import ModelConfig, Potential, save_model
from potential.lammps import export

ELEMENTS = ["H", "C", "O", "Cu"]
R_MAX = 4.0  # Å
SKIN = 1.0  # Å, the neighbour skin the tests give LAMMPS


def _helpers():
    return load_module("tumbler_tests_lammps_lmp", Path(__file__).with_name("lmp.py"))


@pytest.fixture(scope="session", params=["plain", "kokkos"])
def lmp(request):
    """Each LAMMPS build in turn (lmp.Build: its ``run``), after checking that it loads (else the test skips,
    saying how to build it): every LAMMPS test runs on the plain build and on the host-Kokkos one."""
    helpers = _helpers()
    helpers.require_lammps(request.param)
    return helpers.Build(request.param)


def make_model(num_interactions: int) -> Potential:
    """Random float64 weights, seeded, with non-trivial E0s, scale, shift and per-element shifts."""
    torch.manual_seed(7 + num_interactions)
    config = ModelConfig(elements=[1, 6, 8, 29], channels=8, lmax=1, lmax_sh=2, correlation=2,
                         num_interactions=num_interactions, r_max=R_MAX, num_bessel=6, radial_hidden=(8, 8),
                         readout_hidden=8, avg_num_neighbors=8.0, atomic_energies=[-13.6, -1029.5, -2041.3, -1.7],
                         scale=0.7, shift=-1.25, dtype="float64", backend="reference")
    model = Potential(config)
    with torch.no_grad():
        model.species_shift.copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
    return model.eval()


@pytest.fixture
def model_file(tmp_path):
    """(two-layer Potential, its model file)."""
    model = make_model(2)
    save_model(model, tmp_path / "model.pt")
    return model, tmp_path / "model.pt"


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """{num_interactions: (Potential, exported file for LAMMPS)} for 1 and 2 layers."""
    folder = tmp_path_factory.mktemp("lammps-models")
    out = {}
    for t in (1, 2):
        model = make_model(t)
        save_model(model, folder / f"model{t}.pt")
        export(folder / f"model{t}.pt", folder / f"model{t}-lammps.pkl", device="cpu")
        out[t] = (model, folder / f"model{t}-lammps.pkl")
    return out
