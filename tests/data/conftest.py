"""Shared fixtures for tests/data (the `shared_dir` fixture of ../shared/data is in tests/conftest.py)."""

import numpy as np
import pytest


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
