"""Dataset statistics for model set-up: E0s, neighbor counts, force and energy scales.

Units: eV, Å, eV/Å. Isolated-atom structures (config_type "IsolatedAtom" in any
spelling, see schema.is_isolated_atom_label, or a single non-periodic atom) give
reference energies directly and are left out of the fits and scales below.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .hdf5 import Dataset
from .neighbors import neighbor_list
from .schema import is_isolated_atom_label
from .structure import Structure


def is_isolated_atom(s: Structure) -> bool:
    """An isolated-atom reference: labelled as such, or one atom with no periodic direction."""
    return len(s) == 1 and (is_isolated_atom_label(s.config_type) or not s.pbc.any())


def _iter(structures, max_structures=None):
    n = len(structures) if max_structures is None else min(len(structures), max_structures)
    if max_structures is not None and n < len(structures):
        # Evenly spaced, deterministic subset.
        picks = np.linspace(0, len(structures) - 1, n).round().astype(int)
    else:
        picks = range(n)
    for i in picks:
        yield structures[int(i)]


def reference_energies(structures: Sequence[Structure], elements) -> dict[int, float]:
    """Per-element reference energies E0 (eV), keyed by atomic number.

    Isolated-atom entries give E0 for their element (the mean if there are several).
    Elements without one are fitted by least squares, E_s - sum(known E0) ~= sum_Z
    count_sZ * E0_Z, over all other structures that have an energy. If the
    compositions do not determine the E0s (e.g. a single molecule), numpy's
    minimum-norm solution is used: it still reproduces the mean energy exactly.
    """
    elements = sorted(int(z) for z in elements)
    index = {z: k for k, z in enumerate(elements)}
    isolated = {z: [] for z in elements}
    rows, energies = [], []
    for s in structures:
        if s.energy is None:
            continue
        unknown = set(np.unique(s.numbers).tolist()) - set(index)
        if unknown:
            raise ValueError(f"{s.source}: structure {s.index}: elements {sorted(unknown)} not in {elements}")
        if is_isolated_atom(s):
            isolated[int(s.numbers[0])].append(s.energy)
            continue
        rows.append(np.bincount([index[int(z)] for z in s.numbers], minlength=len(elements)))
        energies.append(s.energy)
    e0 = {z: float(np.mean(v)) for z, v in isolated.items() if v}
    free = [z for z in elements if z not in e0]
    if free:
        if not rows:
            raise ValueError(f"no structures with an energy to fit reference energies for elements {free}")
        counts = np.array(rows, dtype=np.float64)
        target = np.array(energies) - counts[:, [index[z] for z in e0]] @ np.array(list(e0.values()))
        solution, *_ = np.linalg.lstsq(counts[:, [index[z] for z in free]], target, rcond=None)
        e0.update({z: float(v) for z, v in zip(free, solution)})
    return {z: e0[z] for z in elements}


def mean_num_neighbors(structures: Sequence[Structure], cutoff: float, max_structures: int | None = 1000) -> float:
    """Mean number of neighbors within `cutoff` (Å) per atom (edges / atoms), over an even subset."""
    edges = atoms = 0
    for s in _iter(structures, max_structures):
        senders, _, _ = neighbor_list(s.positions, s.cell, s.pbc, cutoff)
        edges += len(senders)
        atoms += len(s)
    return edges / atoms if atoms else 0.0


def force_rms(structures: Sequence[Structure]) -> float:
    """Root mean square of all force components (eV/Å) over structures with forces."""
    total = count = 0.0
    for s in structures:
        if s.forces is not None and not is_isolated_atom(s):
            total += float(np.square(s.forces).sum())
            count += s.forces.size
    return float(np.sqrt(total / count)) if count else 0.0


def energy_shift_scale(structures: Sequence[Structure], reference: dict[int, float]) -> tuple[float, float]:
    """(shift, scale) for the model's energy readout.

    shift (eV/atom): mean over structures of (E - sum_i E0[Z_i]) / n_atoms.
    scale (eV): the force RMS (eV/Å over 1 Å), the usual choice for force-trained
    models; if no forces are present, the standard deviation of the per-atom residual.
    Isolated atoms are left out of both.
    """
    residuals = []
    for s in structures:
        if s.energy is None or is_isolated_atom(s):
            continue
        e0 = sum(reference[int(z)] for z in s.numbers)
        residuals.append((s.energy - e0) / len(s))
    shift = float(np.mean(residuals)) if residuals else 0.0
    scale = force_rms(structures)
    if scale == 0.0:
        scale = float(np.std(residuals)) if len(residuals) > 1 else 1.0
    return shift, (scale if scale > 0 else 1.0)


def element_counts(structures: Sequence[Structure]) -> dict[int, int]:
    """Atoms per element over the dataset (reads only atomic numbers from a Dataset)."""
    counts: dict[int, int] = {}
    if isinstance(structures, Dataset):
        arrays = (structures.numbers_of(i) for i in range(len(structures)))
    else:
        arrays = (s.numbers for s in structures)
    for numbers in arrays:
        for z, c in zip(*np.unique(numbers, return_counts=True)):
            counts[int(z)] = counts.get(int(z), 0) + int(c)
    return dict(sorted(counts.items()))
