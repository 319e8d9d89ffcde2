"""The calculator's static path (StaticStep, the default on CUDA) gives the eager path's numbers: run here on
CPU, where the same padded step runs without a CUDA graph; tests/dynamics/test_gpu.py covers graph replay."""

import numpy as np
import pytest

from potential import Calculator

ELEMENTS = [1, 6, 8]
PROPS = ("energy", "forces", "energies")


def _results(atoms, calc, stress):
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "energies": atoms.get_potential_energies()}
    if stress:
        out["stress"] = atoms.get_stress()
    return out


def _assert_same(a, b):
    for key in a:
        assert np.allclose(a[key], b[key], rtol=0, atol=1e-10), key


def test_static_equals_eager_through_moves_cell_and_species_changes(model, props, rng):
    crystal = props.random_crystal(rng, 4, ELEMENTS)
    static = Calculator(model, static=True)
    assert static.static and not Calculator(model).static  # CPU default: eager
    for k in range(3):  # small moves (Verlet list kept), then a larger one (rebuilt)
        crystal.positions += rng.uniform(-0.05, 0.05, size=crystal.positions.shape) * (1 + 10 * (k == 2))
        _assert_same(_results(crystal, static, True), _results(crystal.copy(), Calculator(model), True))
    assert static.rebuilds == 2
    step = static.step
    crystal.set_cell(crystal.cell.array * 1.03, scale_atoms=True)  # NPT-like: same step, new cell
    _assert_same(_results(crystal, static, True), _results(crystal.copy(), Calculator(model), True))
    assert static.step is step
    crystal.numbers[0] = 1 if crystal.numbers[0] != 1 else 6  # new species: a new step
    _assert_same(_results(crystal, static, True), _results(crystal.copy(), Calculator(model), True))
    assert static.step is not step


def test_static_cluster_and_stress_rules(model, props, rng):
    cluster = props.random_cluster(rng, 5, ELEMENTS)
    calc = Calculator(model, static=True)
    _assert_same(_results(cluster, calc, False), _results(cluster.copy(), Calculator(model), False))
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="3D-periodic"):
        cluster.get_stress()
