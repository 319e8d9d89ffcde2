"""Closed-form refit of the per-element energy offsets, so no model trains with a constant energy offset.

Forces carry no information about a constant per-element energy, and with the usual loss weights (forces 100,
energies 1) the energy offset is learned slowly: MACE after 5 minutes on AcAc was still off by a constant
0.75 eV. The model's trainable `species_shift` b (eV/atom, one per element, see potential/model.py) enters the
energy linearly, E = ... + sum_i b[s_i] tanh(n_i) (Potential.shift_gates). So the b that minimises the per-atom
energy loss for the current weights is a linear least-squares problem:

    delta = argmin_d  sum_k ((E_ref_k - E_model_k) / N_k - sum_s g_ks d_s / N_k)^2,
    g_ks = sum of tanh(n_i) over the atoms i of element s in structure k

(the minimum-norm solution: for a training set of one composition only the total is determined). The trainer
adds delta to b after each epoch (and to the EMA copy), and logs it. Isolated atoms (tanh(0) = 0) are not
affected; structures without an energy label do not count.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["species_shift_correction", "apply_species_shift"]

RCOND = 1e-3  # relative singular-value cutoff of the least-squares fit


@torch.no_grad()
def species_shift_correction(model, batches: Iterable) -> torch.Tensor:
    """delta [S] float64 (eV/atom, CPU): the least-squares change of `model.species_shift` over `batches`
    (data.Batch on the model's device, or any object with the same fields). Zeros without energy labels."""
    num_species = int(model.species_shift.shape[0])
    rows, residuals = [], []
    for batch in batches:
        energy = model(batch, forces=False, stress=False)["energy"]  # [B] float64, eV
        species = model.species_index(batch.numbers)  # [N]
        b = energy.shape[0]
        gates = torch.zeros(b, num_species, dtype=torch.float64, device=energy.device)  # [B, S]
        gates.index_put_((batch.batch, species), model.shift_gates(batch), accumulate=True)
        atoms = torch.bincount(batch.batch, minlength=b).to(torch.float64)  # [B]
        keep = batch.has_energy & (gates.sum(dim=1) > 0)  # [B]; isolated atoms have no shift (tanh(0) = 0)
        rows.append((gates / atoms[:, None])[keep].cpu())  # [B', S]
        residuals.append(((batch.energy.to(energy) - energy) / atoms)[keep].cpu())  # [B'] eV/atom
    if not rows or sum(r.shape[0] for r in rows) == 0:
        return torch.zeros(num_species, dtype=torch.float64)
    a, y = torch.cat(rows), torch.cat(residuals)
    # SVD-based and minimum norm: a training set of one composition (a molecule's MD) determines only the
    # composition-weighted total, and the gates' tiny variation (tanh(n) = 1 - 1e-6 ...) must not be read as
    # information about the single elements. Directions below RCOND of the largest singular value are dropped.
    return torch.linalg.lstsq(a, y.unsqueeze(1), rcond=RCOND, driver="gelsd").solution.squeeze(1)  # [S] eV/atom


@torch.no_grad()
def apply_species_shift(delta: torch.Tensor, *models) -> None:
    """Add delta [S] (eV/atom) to the species_shift of each model (the trained model and its EMA copy)."""
    for model in models:
        model.species_shift.add_(delta.to(model.species_shift))
