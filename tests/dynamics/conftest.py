"""Fixtures for the dynamics tests: a tiny float64 model with random weights (builders.tiny_model). The small
structures (a triclinic Cu cell smaller than the cutoff, a cubic Cu cell, molecules, a mixed-pbc case) and seeded
Maxwell-Boltzmann velocities are in tests/builders.py."""

from __future__ import annotations

import pytest
from builders import tiny_model


@pytest.fixture(scope="session")
def model():
    return tiny_model()
