"""Batched FIRE (potential/simulation/fire.py) against ase.optimize.FIRE with potential.Calculator, float64.

Budget: ~10 s on 2 CPU cores."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.optimize import FIRE

from potential import Calculator
from potential.simulation.fire import relax_batch

from builders import tiny_model


def candidates():
    out = []
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.rattle(0.15, seed=1)
    out.append(a)
    a = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    a.rattle(0.15, seed=2)
    out.append(a)
    a = molecule("H2O")
    a.rattle(0.15, seed=3)
    out.append(a)
    out.append(molecule("CH3OH"))  # does not converge within the step limit: stops with converged False
    return out


@pytest.fixture(scope="module")
def fire_model():
    return tiny_model(scale=5.0)


def test_batched_fire_matches_ase_fire(fire_model):
    fmax, max_steps = 0.01, 120
    structures = candidates()
    reference = []
    for atoms in structures:
        a = atoms.copy()
        a.calc = Calculator(fire_model, skin=1.0)
        opt = FIRE(a, logfile=None)
        converged = opt.run(fmax=fmax, steps=max_steps)
        reference.append((a, opt.nsteps, converged))
    relaxed = [a.copy() for a in structures]
    results = relax_batch(fire_model, relaxed, fmax=fmax, max_steps=max_steps)
    assert [r["converged"] for r in results] == [True, True, True, False]
    for result, atoms, (ref, nsteps, converged) in zip(results, relaxed, reference):
        assert result["converged"] == converged
        assert result["steps"] == nsteps
        assert result["energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(atoms.positions, ref.positions, rtol=0, atol=1e-8)  # updated in place
        np.testing.assert_allclose(result["forces"], ref.get_forces(), rtol=0, atol=1e-8)
        if converged:
            assert result["max_force"] < fmax
    assert results[0]["stress"].shape == (3, 3) and results[2]["stress"] is None
    np.testing.assert_allclose(results[0]["stress"], reference[0][0].get_stress(voigt=False), atol=1e-9)


def test_relax_batch_argument_errors(fire_model):
    with pytest.raises(ValueError, match="unknown FIRE parameter"):
        relax_batch(fire_model, [molecule("H2O")], dtstart=0.2)
    with pytest.raises(ValueError, match="fmax"):
        relax_batch(fire_model, [molecule("H2O")], fmax=0.0)


def test_compaction_and_chunks_do_not_change_results(fire_model):
    structures = candidates()[:3]
    runs = [relax_batch(fire_model, [a.copy() for a in structures], fmax=0.01, max_steps=60, **kw)
            for kw in (dict(compact=False), dict(compact=True), dict(batch_atoms=8))]
    for other in runs[1:]:
        for r0, r1 in zip(runs[0], other):
            assert r0["steps"] == r1["steps"] and r0["converged"] == r1["converged"]
            assert r0["energy"] == pytest.approx(r1["energy"], abs=1e-10)
            np.testing.assert_allclose(r0["forces"], r1["forces"], rtol=0, atol=1e-10)
    unmoved = relax_batch(fire_model, [a.copy() for a in structures], fmax=0.01, max_steps=0)
    assert [r["steps"] for r in unmoved] == [0, 0, 0]
