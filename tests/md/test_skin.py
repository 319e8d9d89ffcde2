"""During MD with the calculator's skin Verlet list, forces equal a fresh-list evaluation every step (~10 s)."""

import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet

from potential.evaluate import evaluate
from potential.simulation.md_output import init_velocities


def test_skin_list_forces_match_fresh_list(cu_model, make_cu):
    from potential import Calculator

    atoms = make_cu(2, rattle=0.02)
    atoms.calc = calc = Calculator(cu_model, skin=0.4)
    init_velocities(atoms, 1500.0, seed=1)  # hot: some atom crosses skin/2 every few tens of steps
    dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    worst = []

    def compare():
        fresh = evaluate([atoms], cu_model, stress=False)[0]  # new neighbor list from scratch
        f = atoms.get_forces()
        worst.append(np.abs(f - fresh["forces"]).max())
        assert abs(atoms.get_potential_energy() - fresh["energy"]) < 1e-9
        np.testing.assert_allclose(f, fresh["forces"], rtol=0, atol=1e-9)

    dyn.attach(compare, interval=1)
    dyn.run(120)
    assert len(worst) == 121
    rebuilds = calc.neighbors.rebuilds  # data.VerletList: first build + one per atom moving > skin/2
    print(f"skin list: {rebuilds} builds in 121 evaluations, max |dF| {max(worst):.2e} eV/Å")
    assert 2 <= rebuilds < 60
