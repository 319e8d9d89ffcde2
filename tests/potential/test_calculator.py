"""The ASE calculator: agrees with the model, caches, reuses its Verlet list, drives an optimizer."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.optimize import BFGS
from ase.stress import full_3x3_to_voigt_6_stress

from potential import Calculator, save_model

ELEMENTS = [1, 6, 8]


def test_matches_model(model, props, rng):
    crystal = props.random_crystal(rng, 4, ELEMENTS)
    ref = props.evaluate(model, [crystal], stress=True)
    crystal.calc = Calculator(model)
    assert crystal.get_potential_energy() == pytest.approx(ref["energy"][0], rel=1e-14)
    assert crystal.get_potential_energy(force_consistent=True) == crystal.get_potential_energy()
    assert np.allclose(crystal.get_forces(), ref["forces"], rtol=0, atol=1e-12)
    assert np.allclose(crystal.get_stress(), full_3x3_to_voigt_6_stress(ref["stress"][0]), rtol=0, atol=1e-12)
    energies = crystal.get_potential_energies()
    assert np.allclose(energies, ref["node_energy"], rtol=0, atol=1e-12)
    assert energies.sum() == pytest.approx(crystal.get_potential_energy(), rel=1e-13)


def test_caching_and_stress_rules(model, props, rng):
    cluster = props.random_cluster(rng, 4, ELEMENTS)
    calc = Calculator(model)
    cluster.calc = calc
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    try:
        cluster.get_potential_energy()
        cluster.get_forces()
        cluster.get_potential_energies()
        assert len(calls) == 1  # one evaluation serves every property
        cluster.positions[0, 0] += 0.01
        cluster.get_forces()
        assert len(calls) == 2
    finally:
        del model.forward
    with pytest.raises(PropertyNotImplementedError, match="3D-periodic"):
        cluster.get_stress()


def test_unknown_element(model):
    atoms = Atoms("CuO", positions=[[0, 0, 0], [1.8, 0, 0]])
    atoms.calc = Calculator(model)
    with pytest.raises(ValueError, match=r"Cu \(Z=29\).*knows only H, C, O"):
        atoms.get_potential_energy()


def test_verlet_list_reuse_gives_fresh_list_results(model, props, rng):
    crystal = props.random_crystal(rng, 4, ELEMENTS)
    calc = Calculator(model, skin=1.0)
    crystal.calc = calc
    for _ in range(4):  # 4 x 0.1 Å max displacement: below skin / 2 = 0.5 Å
        crystal.positions += rng.uniform(-0.1, 0.1, size=crystal.positions.shape) / np.sqrt(3)
        forces = crystal.get_forces()
        stress = crystal.get_stress()
        fresh = crystal.copy()
        fresh.calc = Calculator(model, skin=0.0)
        assert np.allclose(forces, fresh.get_forces(), rtol=0, atol=1e-12)
        assert np.allclose(stress, fresh.get_stress(), rtol=0, atol=1e-12)
    assert calc.neighbors.rebuilds == 1
    crystal.positions[0] += 0.6  # beyond skin / 2: rebuilt
    crystal.get_forces()
    assert calc.neighbors.rebuilds == 2


def test_optimizer_and_from_file(model, props, rng, tmp_path):
    path = tmp_path / "model.pt"
    save_model(model, path)
    cluster = props.random_cluster(rng, 4, ELEMENTS, size=2.5)
    cluster.calc = Calculator.from_file(path)
    e0 = cluster.get_potential_energy()
    opt = BFGS(cluster, maxstep=0.05, logfile=None)
    opt.run(fmax=1e-3, steps=5)
    assert cluster.get_potential_energy() < e0


def test_check_state_agrees_with_ase(model, props, rng):
    """The one-pass check_state reports what ASE's compare_atoms reports for positions, numbers, cell and pbc."""
    from ase.calculators.calculator import compare_atoms

    crystal = props.random_crystal(rng, 4, ELEMENTS)
    calc = Calculator(model)
    assert calc.check_state(crystal) == list(compare_atoms(None, crystal))  # nothing computed yet: everything
    crystal.calc = calc
    crystal.get_potential_energy()
    edits = [
        lambda a: None,
        lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-14),
        lambda a: a.positions.__setitem__((1, 2), a.positions[1, 2] + 1e-16),  # within ASE's 1e-15
        lambda a: a.positions.__setitem__((2, 1), np.nan),
        lambda a: a.set_cell(a.cell.array * 1.01),
        lambda a: a.set_pbc([True, False, True]),
        lambda a: a.numbers.__setitem__(0, 1 if a.numbers[0] != 1 else 6),
    ]
    for edit in edits:
        changed = crystal.copy()
        edit(changed)
        assert sorted(calc.check_state(changed)) == sorted(compare_atoms(calc.atoms, changed)), edit
    assert calc.check_state(crystal[:-1]) != []  # one atom fewer
