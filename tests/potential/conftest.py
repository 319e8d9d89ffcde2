"""Fixtures for the potential tests: a model factory over small configs and the property checks.

``make_model(**overrides)`` builds a float64 Potential with random weights and non-trivial E0s, scale and
shift, seeded, so every check sees a model that is not accidentally symmetric. ``CONFIGS`` are the model
shapes the symmetry tests sweep (hidden lmax 0..3, 1..3 interactions, correlation 1..3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from builders import load_module, tiny_config

ELEMENTS = [1, 6, 8]  # H, C, O
R_MAX = 3.0  # Å: small, so the tiny test structures have few edges

BASE = dict(num_interactions=2, r_max=R_MAX, avg_num_neighbors=6.0, atomic_energies=[-13.6, -1029.5, -2041.3],
            scale=0.7, shift=-1.25)  # changed from builders.TINY

CONFIGS = {
    "l1-2layers": {},
    "l0-3layers": dict(lmax=0, lmax_sh=1, num_interactions=3, correlation=3),
    "l2-1layer": dict(lmax=2, lmax_sh=2, num_interactions=1, correlation=3),
    "l3-2layers": dict(lmax=3, lmax_sh=3, num_interactions=2, correlation=1, channels=4),
}


def load_properties():
    """tests/potential/properties.py as a module (importlib mode gives tests no package path)."""
    return load_module("tumbler_potential_properties", Path(__file__).with_name("properties.py"))


def build_model(seed: int = 0, **overrides):
    from potential import Potential

    torch.manual_seed(seed)
    settings = {**BASE, **overrides}
    return Potential(tiny_config(settings.pop("elements", ELEMENTS), **settings))


@pytest.fixture(scope="session")
def props():
    return load_properties()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def make_model():
    return build_model


@pytest.fixture(scope="module")
def model():
    """The default small model (l1-2layers), shared within a test module; tests must not train it."""
    return build_model()


@pytest.fixture(params=list(CONFIGS), scope="module")
def config_model(request):
    """One model per entry of CONFIGS (parametrised), for the sweeps over model shapes."""
    return build_model(**CONFIGS[request.param])
