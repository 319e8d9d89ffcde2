"""The embedded EMT copper set. Budget: < 5 s (12 structures)."""

import numpy as np
from ase.calculators.emt import EMT

from data import open_dataset, stats
from data.synthetic import ensure_cu_dataset, generate_cu_structures, make_cu_dataset


def test_contents_and_determinism(tmp_path):
    path = make_cu_dataset(tmp_path / "cu.h5", n_structures=12, seed=0)
    ds = open_dataset(path)
    assert len(ds) == 12
    types = [s.config_type for s in ds]
    assert set(types) == {"IsolatedAtom", "bulk", "vacancy", "surface", "strained", "md"}
    for s in ds:
        assert len(s) <= 32 and np.all(s.numbers == 29)
        assert s.energy is not None and s.forces is not None
        assert (s.stress is not None) == bool(s.pbc.all())  # slabs (T, T, F) and the free atom carry no stress
    again = generate_cu_structures(12, seed=0)
    for a, b in zip(ds, again):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.energy == b.energy
    other = generate_cu_structures(12, seed=1)
    assert not np.array_equal(other[1].positions, again[1].positions)


def test_labels_are_emt(tmp_path):
    ds = open_dataset(make_cu_dataset(tmp_path / "cu.h5", n_structures=8, seed=3))
    s = ds[len(ds) - 1]  # an MD snapshot
    atoms = s.to_atoms()
    atoms.calc = EMT()
    assert np.isclose(atoms.get_potential_energy(), s.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), s.forces, atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), s.stress, atol=1e-12)
    e0 = stats.reference_energies(ds, [29])
    assert e0[29] == ds[0].energy  # from the IsolatedAtom entry


def test_ensure_is_cached(tmp_path):
    path = tmp_path / "sub" / "cu.h5"
    assert ensure_cu_dataset(path, n_structures=6, seed=0) == path
    stamp = path.stat().st_mtime_ns
    ensure_cu_dataset(path, n_structures=6, seed=0)
    assert path.stat().st_mtime_ns == stamp
    ensure_cu_dataset(path, n_structures=7, seed=0)  # other parameters: regenerated
    assert len(open_dataset(path)) == 7
    assert [p.name for p in path.parent.iterdir()] == ["cu.h5"]
