"""Shared fixtures for tests/data. ../shared/data is located relative to the repo
(/work/main/tests/data/conftest.py -> parents[3] = /work -> /work/shared/data)."""

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared/data absent: {SHARED} not found (reference datasets are not part of the repo)")
    return SHARED


@pytest.fixture
def make_structures():
    """Factory of small random labelled structures with a mix of present/absent labels."""
    from data import Structure

    def make(count=5, seed=0):
        rng = np.random.default_rng(seed)
        out = []
        for b in range(count):
            n = int(rng.integers(1, 7))
            periodic = b % 2 == 0
            cell = np.diag(rng.uniform(6.0, 9.0, 3)) + rng.normal(scale=0.3, size=(3, 3)) if periodic else np.zeros((3, 3))
            base = cell if periodic else np.eye(3) * 6.0
            out.append(Structure(
                positions=rng.random((n, 3)) @ base,
                numbers=rng.choice([1, 6, 8, 29], size=n),
                cell=cell,
                pbc=np.array([periodic, periodic, b % 4 == 0]),
                energy=float(rng.normal()) if b != 1 else None,
                forces=rng.normal(size=(n, 3)) if b != 2 else None,
                stress=rng.normal(size=(3, 3)) if periodic else None,
                weight=float(rng.uniform(0.5, 2.0)),
                config_type=["bulk", "IsolatedAtom", "mol", "üñí"][b % 4],
            ))
        return out

    return make
