"""Reference energies, neighbor counts and scales. Budget: < 2 s."""

import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from data import Structure, stats

TRUE_E0 = {1: -13.6, 6: -1029.5, 8: -2042.0}


def molecules(seed=0, count=40, noise=0.0):
    rng = np.random.default_rng(seed)
    out = []
    for b in range(count):
        numbers = rng.choice(list(TRUE_E0), size=int(rng.integers(2, 9)))
        positions = rng.random((len(numbers), 3)) * 5.0
        energy = sum(TRUE_E0[int(z)] for z in numbers) + noise * rng.normal() + 0.05 * len(numbers)
        out.append(Structure(positions=positions, numbers=numbers, energy=energy, forces=rng.normal(size=(len(numbers), 3)), index=b))
    return out


def test_least_squares_recovers_known_e0s():
    # energies = sum E0 + 0.05 eV/atom: least squares absorbs the constant per-atom term
    e0 = stats.reference_energies(molecules(), [1, 6, 8])
    for z, value in TRUE_E0.items():
        assert e0[z] == pytest.approx(value + 0.05, abs=1e-9)


def test_isolated_atoms_take_precedence():
    isolated = [
        Structure(positions=np.zeros((1, 3)), numbers=[6], energy=-1000.0, config_type="IsolatedAtom"),
        Structure(positions=np.zeros((1, 3)), numbers=[8], energy=-2000.0, config_type="whatever"),  # single atom, no pbc
    ]
    e0 = stats.reference_energies(isolated + molecules(), [1, 6, 8])
    assert e0[6] == -1000.0 and e0[8] == -2000.0
    # H is fitted given the fixed C and O references
    assert np.isfinite(e0[1])
    # a single periodic atom that is not labelled isolated is bulk, not a reference
    bulk_atom = Structure(positions=np.zeros((1, 3)), numbers=[6], energy=-5.0, cell=np.eye(3) * 2.0, pbc=[True] * 3)
    assert not stats.is_isolated_atom(bulk_atom)


def test_unknown_element_is_an_error():
    with pytest.raises(ValueError, match="not in"):
        stats.reference_energies(molecules(), [1, 6])


def test_shift_scale_and_force_rms():
    structures = molecules(noise=0.0)
    e0 = {z: v + 0.05 for z, v in TRUE_E0.items()}
    shift, scale = stats.energy_shift_scale(structures, e0)
    assert shift == pytest.approx(0.0, abs=1e-9)
    all_forces = np.concatenate([s.forces for s in structures])
    assert scale == pytest.approx(np.sqrt(np.mean(all_forces**2)))
    assert stats.force_rms(structures) == scale
    shift, _ = stats.energy_shift_scale(structures, TRUE_E0)
    assert shift == pytest.approx(0.05)


def test_mean_num_neighbors_matches_ase():
    structures = molecules(count=10)
    expected = sum(len(ase_neighbor_list("i", s.to_atoms(), 2.5)) for s in structures) / sum(len(s) for s in structures)
    assert stats.mean_num_neighbors(structures, 2.5) == pytest.approx(expected)


def test_element_counts():
    structures = molecules(count=5)
    counts = stats.element_counts(structures)
    assert sum(counts.values()) == sum(len(s) for s in structures)
