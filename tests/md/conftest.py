"""Fixtures for the MD / screening tests: small models built from potential.ModelConfig.

``cu_model`` is a tiny float64 model (8 channels, lmax 1, correlation 2, one interaction,
r_max 4.5 Å) fitted for ~100 Adam epochs (5-30 s) to ASE's EMT Cu over -5%..+8% strain and
rattles, with E0 = EMT's isolated atom, shift = mean binding energy and scale = force RMS, so that
MD on it is physical: fcc Cu is bound near EMT's lattice constant, atoms repel at short range and
300-600 K dynamics stay on the lattice (force RMSE ~0.15 eV/Å on the fit set).
``random_model`` has random weights, for tests where only the plumbing matters.

The session fixtures run on one torch thread (builders.one_torch_thread): the per-test autouse fixture does not
cover a session fixture's setup.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from builders import one_torch_thread, tiny_config

R_MAX = 4.5
CU_A = 3.59  # EMT's fcc Cu lattice constant (Å)
FIT_EPOCHS = 100  # full-batch Adam epochs of the EMT fit (~0.1 s each on one core)


def small_config(elements=(29,), r_max=R_MAX, **overrides):
    """builders.tiny_config with a wider radial MLP (16, 16), r_max 4.5 Å and 40 neighbours on average."""
    return tiny_config(elements, **{"radial_hidden": [16, 16], "r_max": r_max, "avg_num_neighbors": 40.0, **overrides})


def emt_structures(n: int = 16, seed: int = 0):
    """32-atom fcc Cu cells, lattice constant -5%..+8% around EMT's, rattled; EMT energy and forces."""
    from data import Structure

    rng = np.random.default_rng(seed)
    out = []
    for k, strain in enumerate(np.linspace(-0.05, 0.08, n)):
        atoms = bulk("Cu", "fcc", a=CU_A * (1.0 + strain), cubic=True).repeat(2)
        atoms.positions += rng.normal(0.0, [0.03, 0.08, 0.15][k % 3], atoms.positions.shape)
        atoms.calc = EMT()
        out.append(Structure(positions=atoms.positions.copy(), numbers=atoms.numbers, cell=np.asarray(atoms.cell),
                             pbc=atoms.pbc, energy=float(atoms.get_potential_energy()), forces=atoms.get_forces()))
    return out


def fit_to_emt(model, structures, epochs: int) -> float:
    """Full-batch Adam on per-atom energy + forces. Returns the final force RMSE (eV/Å)."""
    from data import collate

    batch = collate(structures, model.r_max).to(dtype=torch.float64)
    n_atoms = torch.bincount(batch.batch).to(torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.99)
    for _ in range(epochs):
        out = model(batch, forces=True, training=True)
        e_loss = (((out["energy"] - batch.energy) / n_atoms) ** 2).mean()
        f_err = out["forces"] - batch.forces
        loss = 10.0 * e_loss + (f_err**2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return float((f_err.detach() ** 2).mean().sqrt())


@pytest.fixture(scope="session")
def cu_model():
    """Tiny Cu model fitted to EMT; ``model.fit_force_rmse`` (eV/Å) says how well."""
    from ase import Atoms

    from potential import Potential

    train = emt_structures()
    e_iso = float(Atoms("Cu", calculator=EMT()).get_potential_energy())  # 3.51 eV: EMT's zero is the crystal
    shift = float(np.mean([s.energy / len(s) for s in train])) - e_iso  # eV/atom, binding
    scale = float(np.sqrt(np.mean([(s.forces**2).mean() for s in train])))  # eV/Å ~ eV per readout unit
    with one_torch_thread():
        torch.manual_seed(0)
        model = Potential(small_config(atomic_energies=[e_iso], shift=shift, scale=scale))
        model.fit_force_rmse = fit_to_emt(model, train, FIT_EPOCHS)
    return model.eval()


@pytest.fixture(scope="session")
def random_model():
    """Random small-weight model knowing Cu and O (for plumbing tests)."""
    from potential import Potential

    torch.manual_seed(1)
    model = Potential(small_config(elements=(8, 29), atomic_energies=[-2.0, -3.5]))
    model.eval()
    return model


@pytest.fixture(scope="session")
def cu_model_file(cu_model, tmp_path_factory):
    from potential import save_model

    path = tmp_path_factory.mktemp("models") / "cu.pt"
    save_model(cu_model, path)
    return path


@pytest.fixture(scope="session")
def random_model_file(random_model, tmp_path_factory):
    from potential import save_model

    path = tmp_path_factory.mktemp("models") / "cu_o.pt"
    save_model(random_model, path)
    return path


@pytest.fixture
def make_cu():
    """``make_cu(repeat=2, rattle=0.0, seed=0, a=CU_A)`` -> fcc Cu cubic cell repeated (32 atoms at 2)."""

    def make(repeat=2, rattle=0.0, seed=0, a=CU_A):
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
        if rattle:
            atoms.rattle(rattle, seed=seed)
        return atoms

    return make
