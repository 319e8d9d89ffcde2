"""The device-resident MD engine (potential/simulation/dynamics.py) against ASE's integrators with potential.Calculator,
float64, on CPU (eager padded step).

NVE and ASE-scheme Langevin are compared step for step (Langevin fed ASE's own numpy normals); Bussi too,
with noise arranged so that its rescaling factor equals ASE's; BAOAB and batched Bussi by their temperature
statistics. Budget: ~40 s on 2 CPU cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet

from potential import Calculator
from potential.simulation.dynamics import Dynamics

from builders import cu_cubic, cu_triclinic, with_velocities

DT = 2.0  # fs
SKIN = 0.3  # Å: small, so 100 steps at 600 K rebuild the lists several times


def ase_copy(atoms, model):
    a = atoms.copy()
    a.calc = Calculator(model, skin=SKIN)
    return a


def state(dyn, b=0):
    lo, hi = dyn.ptr[b], dyn.ptr[b + 1]
    return dyn.positions[lo:hi].numpy(), dyn.momenta[lo:hi].numpy()


def test_nve_matches_ase_velocity_verlet(model):
    atoms = with_velocities(cu_cubic() * (2, 1, 1), 600, seed=0)
    dyn = Dynamics(model, atoms, timestep=DT, skin=SKIN)
    ref = ase_copy(atoms, model)
    energies = []
    for _ in range(10):
        dyn.run(10)
        VelocityVerlet(ref, DT * units.fs).run(10)
        x, p = state(dyn)
        np.testing.assert_allclose(x, ref.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(p, ref.get_momenta(), rtol=0, atol=1e-10)
        obs = dyn.observables()
        assert obs["epot"][0] == pytest.approx(ref.get_potential_energy(), abs=1e-9)
        assert obs["temperature"][0] == pytest.approx(ref.get_temperature(), rel=1e-9)
        energies.append(obs["etot"][0])
    assert dyn.nsteps == 100 and dyn.rebuilds > 1
    assert np.ptp(energies) < 1e-2 * abs(dyn.observables()["ekin"][0])  # NVE conserves energy


def test_batch_of_structures_equals_each_alone(model):
    """Replicas and different structures in one batch do not see each other."""
    a = with_velocities(cu_cubic(), 500, seed=1)
    b = with_velocities(cu_triclinic(), 300, seed=2)
    c = with_velocities(molecule("CH3CH2OH"), 300, seed=3)
    batch = Dynamics(model, [a, b, c, a], timestep=DT, skin=SKIN)
    batch.run(30)
    for k, atoms in enumerate([a, b, c, a]):
        alone = Dynamics(model, atoms, timestep=DT, skin=SKIN)
        alone.run(30)
        x, p = state(batch, k)
        np.testing.assert_allclose(x, alone.positions.numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(p, alone.momenta.numpy(), rtol=0, atol=1e-10)
    frames = batch.get_atoms()
    assert len(frames) == 4 and frames[2].get_chemical_formula() == c.get_chemical_formula()
    assert frames[0].get_potential_energy() == pytest.approx(batch.observables()["epot"][0])


def test_langevin_matches_ase_with_the_same_random_numbers(model):
    atoms = with_velocities(cu_triclinic() * (2, 1, 1), 400, seed=4)
    draws = np.random.default_rng(7)

    def noise(shape):  # ASE draws xi then eta, each (natoms, 3)
        return torch.from_numpy(np.stack([draws.standard_normal(shape[1:]), draws.standard_normal(shape[1:])]))

    dyn = Dynamics(model, atoms, timestep=DT, thermostat="langevin", temperature=700, friction=0.05, noise=noise,
                   skin=SKIN)
    ref = ase_copy(atoms, model)
    integ = Langevin(ref, DT * units.fs, temperature_K=700, friction=0.05 / units.fs, fixcm=False,
                     rng=np.random.default_rng(7))
    dyn.run(60)
    integ.run(60)
    x, p = state(dyn)
    np.testing.assert_allclose(x, ref.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(p, ref.get_momenta(), rtol=0, atol=1e-9)


def test_bussi_matches_ase_with_the_same_random_numbers(model):
    atoms = with_velocities(cu_cubic(), 400, seed=5)
    n = len(atoms)
    draws = np.random.default_rng(11)

    def noise(shape):
        """ASE draws R1 = normal, S = 2 gamma((3n-1)/2); we give R1 as the first entry and 3n-1 equal entries
        whose squares sum to S, so the engine's rescaling factor is ASE's."""
        r1 = draws.standard_normal()
        s = 2.0 * draws.standard_gamma(0.5 * (3 * n - 1))
        out = np.full(shape, np.sqrt(s / (3 * n - 1)))
        out[0, 0] = r1
        return torch.from_numpy(out)

    dyn = Dynamics(model, atoms, timestep=DT, thermostat="bussi", temperature=800, tdamp=20.0, noise=noise,
                   skin=SKIN)
    ref = ase_copy(atoms, model)
    Bussi(ref, DT * units.fs, temperature_K=800, taut=20.0 * units.fs, rng=np.random.default_rng(11)).run(50)
    dyn.run(50)
    x, p = state(dyn)
    np.testing.assert_allclose(x, ref.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(p, ref.get_momenta(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("thermostat", ["baoab", "bussi", "langevin"])
def test_thermostats_reach_per_replica_temperatures(thermostat):
    """16 replicas of a small molecule at 200 K and 600 K: the mean kinetic temperature of each group over the
    second half of the run is its target (statistical tolerance)."""
    from builders import tiny_model

    model = tiny_model(elements=(1, 8), scale=0.5, num_bessel=4, radial_hidden=[4])
    water = molecule("H2O")
    targets = np.array([200.0] * 8 + [600.0] * 8)
    replicas = [with_velocities(water.copy(), t, seed=k) for k, t in enumerate(targets)]
    dyn = Dynamics(model, replicas, timestep=1.0, thermostat=thermostat, temperature=targets, friction=0.1,
                   tdamp=10.0, seed=3)
    samples = []
    dyn.run(240, interval=4, callback=lambda d: samples.append(d.observables()["temperature"]))
    mean = np.mean(samples[len(samples) // 2:], axis=0)
    for t in (200.0, 600.0):
        assert np.mean(mean[targets == t]) == pytest.approx(t, rel=0.2)


def test_bad_arguments(model):
    atoms = molecule("H2O")
    with pytest.raises(ValueError, match="thermostat"):
        Dynamics(model, atoms, thermostat="nose")
    with pytest.raises(ValueError, match="temperature"):
        Dynamics(model, atoms, thermostat="langevin")


def test_observables_pressure_and_volume_match_ase(model):
    atoms = with_velocities(cu_triclinic() * (2, 1, 1), 500, seed=6)
    dyn = Dynamics(model, [atoms, molecule("H2O")], stress=True, skin=SKIN)
    obs = dyn.observables()
    ref = ase_copy(atoms, model)
    pressure = -np.mean(ref.get_stress(include_ideal_gas=True)[:3]) / units.GPa
    assert obs["pressure"][0] == pytest.approx(pressure, rel=1e-9)
    assert obs["volume"][0] == pytest.approx(ref.get_volume(), rel=1e-12)
    assert np.isnan(obs["pressure"][1]) and np.isnan(obs["volume"][1])
    np.testing.assert_allclose(obs["stress"][0], ref.get_stress(voigt=False), rtol=0, atol=1e-10)


def test_bussi_needs_velocities_and_constraints_are_refused(model):
    from ase.constraints import FixAtoms

    with pytest.raises(ValueError, match="non-zero initial velocities"):
        Dynamics(model, molecule("H2O"), thermostat="bussi", temperature=300)
    fixed = molecule("H2O")
    fixed.set_constraint(FixAtoms([0]))
    with pytest.raises(ValueError, match="constraints"):
        Dynamics(model, fixed)
