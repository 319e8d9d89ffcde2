"""Cutoff smoothness, exact zeros beyond r_max, isolated atoms, empty graphs, batch invariance, extensivity."""

import numpy as np
from ase import Atoms

ELEMENTS = [1, 6, 8]


def test_cutoff_continuity(model, props):
    props.check_cutoff_continuity(model, element=6)


def test_isolated_atoms_give_reference_energies(config_model, props):
    props.check_isolated_atoms(config_model)


def test_zero_edge_batch_and_training(make_model, props):
    model = make_model(seed=2)
    gas = Atoms(numbers=[1, 8], positions=[[0, 0, 0], [10, 0, 0]])
    batch = props.to_batch(model, [gas, Atoms(numbers=[6], positions=[[0, 0, 0]])])
    assert batch.num_edges == 0
    out = model(batch, forces=True, training=True)
    assert out["energy"].tolist() == [-13.6 - 2041.3, -1029.5]
    assert (out["forces"] == 0).all()
    out["energy"].sum().backward()  # no graph problem with zero edges


def test_batch_invariance(model, props, rng):
    clusters = [props.random_cluster(rng, n, ELEMENTS) for n in (1, 4, 6)]
    props.check_batch_invariance(model, clusters)
    crystals = [props.random_crystal(rng, n, ELEMENTS) for n in (2, 3)]
    props.check_batch_invariance(model, crystals)


def test_extensivity(model, props, rng):
    props.check_extensivity(model, props.random_crystal(rng, 2, ELEMENTS))


def test_node_energies_sum_to_energy(model, props, rng):
    out = props.evaluate(model, [props.random_cluster(rng, 5, ELEMENTS), props.random_crystal(rng, 3, ELEMENTS)])
    assert np.allclose(out["energy"], [out["node_energy"][:5].sum(), out["node_energy"][5:].sum()], rtol=0, atol=1e-9)
