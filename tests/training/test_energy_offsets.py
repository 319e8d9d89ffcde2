"""The closed-form refit of the per-element energy offsets (potential/training/energy_offsets.py)."""

from __future__ import annotations

import torch
from ase.build import molecule
from builders import tiny_model

import data
from potential.training.energy_offsets import apply_species_shift, species_shift_correction


def test_refit_recovers_per_element_offsets_exactly():
    model = tiny_model(elements=(1, 6, 8))
    molecules = [molecule(name) for name in ("CH4", "H2O", "CH3OH", "C2H6", "CO2", "H2CO")]
    batch = data.Batch.from_atoms(molecules, model.r_max)
    offsets = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)  # eV/atom for H, C, O
    per_atom = offsets[model.species_index(batch.numbers)] * model.shift_gates(batch)  # [N]
    batch.energy = model(batch)["energy"] + torch.zeros(len(molecules), dtype=torch.float64).index_add(
        0, batch.batch, per_atom)
    batch.has_energy = torch.ones(len(molecules), dtype=torch.bool)
    delta = species_shift_correction(model, [batch])
    torch.testing.assert_close(delta, offsets, rtol=0, atol=1e-10)
    apply_species_shift(delta, model)
    torch.testing.assert_close(model(batch)["energy"], batch.energy, rtol=0, atol=1e-10)


def test_refit_ignores_unlabelled_structures_and_isolated_atoms():
    model = tiny_model(elements=(1, 6, 8))
    atoms = [molecule("CH4"), molecule("H2O")]
    lone = molecule("H2O")[:1]
    lone.center(vacuum=5.0)
    batch = data.Batch.from_atoms(atoms + [lone], model.r_max)
    batch.energy = model(batch)["energy"] + torch.tensor([1.0, 1.0, 100.0], dtype=torch.float64)
    batch.has_energy = torch.tensor([True, False, True])  # only CH4 (5 atoms, +0.2 eV/atom) is informative
    delta = species_shift_correction(model, [batch])
    gates = model.shift_gates(batch)[:5]  # CH4's atoms
    fitted = float(delta[model.species_index(batch.numbers[:5])].mul(gates).sum())
    assert abs(fitted - 1.0) < 1e-10  # the H2O row (unlabelled) and the lone O (no neighbours) are ignored
