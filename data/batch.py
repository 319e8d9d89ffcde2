"""`Batch`: several structures as one disconnected graph of torch tensors, and the packer that builds it.

`pack_nodes` concatenates structures (data.Structure or ase.Atoms) into atom and cell arrays; `collate` (HDF5
rows, training) and `Batch.from_atoms` (inference) add the neighbor lists and labels to them; `pack_atoms` puts
them on a device with momenta and masses for the device-resident engines, which keep their own neighbor lists.

Atoms of structure b are rows ptr[b]:ptr[b+1]; edges carry global atom indices and
are sorted by receiver (stable; within a receiver by sender, then shift), so the
whole batch is receiver-sorted. For edge e of structure s = batch[receivers[e]]:

    vec[e] = positions[senders[e]] - positions[receivers[e]] + cell_shifts[e] @ cell[s]

Absent labels: energy NaN, forces 0, stress 0, with has_energy / has_forces /
has_stress False. The cell of a structure with no periodic direction is zero.
Units: Å, eV, eV/Å, eV/Å^3 (ASE sign).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from .neighbors import neighbor_list
from .structure import Structure


@dataclass
class Batch:
    positions: torch.Tensor  # [N, 3] float, Å
    numbers: torch.Tensor  # [N] int64, atomic numbers
    batch: torch.Tensor  # [N] int64, structure of each atom
    ptr: torch.Tensor  # [B+1] int64, atom offsets
    cell: torch.Tensor  # [B, 3, 3] float, Å (zeros when not periodic)
    pbc: torch.Tensor  # [B, 3] bool
    senders: torch.Tensor  # [E] int64
    receivers: torch.Tensor  # [E] int64, sorted ascending
    cell_shifts: torch.Tensor  # [E, 3] float, integer-valued
    energy: torch.Tensor  # [B] float64, eV (NaN where absent)
    has_energy: torch.Tensor  # [B] bool
    forces: torch.Tensor  # [N, 3] float, eV/Å (0 where absent)
    has_forces: torch.Tensor  # [B] bool
    stress: torch.Tensor  # [B, 3, 3] float, eV/Å^3 (0 where absent)
    has_stress: torch.Tensor  # [B] bool
    weight: torch.Tensor  # [B] float64
    index: torch.Tensor  # [B] int64, row of each structure in its dataset

    # Tensors that follow the model dtype in `.to(dtype=...)`.
    _FLOAT_FIELDS = ("positions", "cell", "cell_shifts", "forces", "stress")

    @property
    def num_structures(self) -> int:
        return int(self.ptr.shape[0] - 1)

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.senders.shape[0])

    def to(self, device=None, dtype=None) -> "Batch":
        """Copy to `device`; `dtype` applies to positions, cell, cell_shifts, forces, stress.

        energy and weight stay float64, index tensors stay int64, masks stay bool.
        """
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if dtype is not None and f.name in self._FLOAT_FIELDS:
                value = value.to(device=device, dtype=dtype)
            elif device is not None:
                value = value.to(device=device)
            out[f.name] = value
        return Batch(**out)

    @classmethod
    def from_atoms(cls, atoms_list, cutoff: float, device=None, dtype=None) -> "Batch":
        """Batch of ASE Atoms for inference (labels are not read: attached results are ignored)."""
        structures = [
            Structure(positions=a.positions, numbers=a.numbers, cell=np.array(a.cell[:]), pbc=a.pbc, index=i)
            for i, a in enumerate(atoms_list)
        ]
        batch = collate(structures, cutoff)
        if device is not None or dtype is not None:
            batch = batch.to(device=device, dtype=dtype)
        return batch


def pack_nodes(items: Sequence) -> dict[str, np.ndarray]:
    """The atoms and cells of `items` concatenated in order: the one packer behind `collate`, `Batch.from_atoms`
    and `pack_atoms`.

    items: data.Structure or ase.Atoms (anything with positions [n, 3] Å, numbers [n], cell [3, 3] Å, pbc [3]).
    Returns numpy arrays: positions [N, 3] float64 Å, numbers [N] int64, batch [N] int64 (structure of each atom),
    ptr [B+1] int64 (atom offsets), cell [B, 3, 3] float64 Å (zero for a structure with no periodic direction),
    pbc [B, 3] bool.
    """
    items = list(items)
    num = len(items)
    counts = np.array([len(s) for s in items], dtype=np.int64)
    ptr = np.zeros(num + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    pbc = np.array([np.asarray(s.pbc, dtype=bool) for s in items], dtype=bool).reshape(num, 3)
    cells = np.zeros((num, 3, 3))
    for b, s in enumerate(items):
        if pbc[b].any():
            cells[b] = np.asarray(s.cell, dtype=np.float64)
    return dict(
        positions=_cat([np.asarray(s.positions) for s in items], (0, 3), np.float64),
        numbers=_cat([np.asarray(s.numbers) for s in items], (0,), np.int64),
        batch=np.repeat(np.arange(num, dtype=np.int64), counts),
        ptr=ptr,
        cell=cells,
        pbc=pbc,
    )


def pack_atoms(atoms_list: Sequence[Atoms], device=None, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """ASE Atoms as tensors on `device` for the device-resident engines (potential.simulation), which build their
    own neighbor lists: `pack_nodes`'s arrays plus momenta [N, 3] (amu Å / ASE time) and masses [N] (amu).
    positions, cell, momenta and masses are in `dtype`; numbers, batch, ptr int64; pbc bool."""
    if len(atoms_list) == 0:
        raise ValueError("no structures given")
    arrays = pack_nodes(atoms_list)
    arrays["momenta"] = _cat([a.get_momenta() for a in atoms_list], (0, 3), np.float64)
    arrays["masses"] = _cat([a.get_masses() for a in atoms_list], (0,), np.float64)
    return {k: torch.tensor(v, dtype=dtype if v.dtype == np.float64 else None, device=device)
            for k, v in arrays.items()}


def _cat(arrays, shape, dtype) -> np.ndarray:
    """np.concatenate(arrays) as `dtype`; an empty array of `shape` when there are none."""
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)


def collate(structures: Sequence[Structure], cutoff: float) -> Batch:
    """Batch of `structures` with vesin neighbor lists (CPU) within `cutoff` (Å). float64."""
    structures = list(structures)
    num = len(structures)
    nodes = pack_nodes(structures)
    ptr, cells = nodes["ptr"], nodes["cell"]
    total = int(ptr[-1])

    senders, receivers, shifts = [], [], []
    for b, s in enumerate(structures):
        snd, rcv, sh = neighbor_list(s.positions, cells[b], s.pbc, cutoff)
        # Structures are concatenated in order, so per-structure receiver-sorted lists stay sorted.
        senders.append(snd + ptr[b])
        receivers.append(rcv + ptr[b])
        shifts.append(sh)

    forces = np.zeros((total, 3))
    stress = np.zeros((num, 3, 3))
    energy = np.full(num, np.nan)
    for b, s in enumerate(structures):
        if s.forces is not None:
            forces[ptr[b] : ptr[b + 1]] = s.forces
        if s.stress is not None:
            stress[b] = s.stress
        if s.energy is not None:
            energy[b] = s.energy

    t = torch.from_numpy
    return Batch(
        **{k: t(v) for k, v in nodes.items()},
        senders=t(_cat(senders, (0,), np.int64)),
        receivers=t(_cat(receivers, (0,), np.int64)),
        cell_shifts=t(_cat(shifts, (0, 3), np.float64)),
        energy=t(energy),
        has_energy=t(np.array([s.energy is not None for s in structures], dtype=bool)),
        forces=t(forces),
        has_forces=t(np.array([s.forces is not None for s in structures], dtype=bool)),
        stress=t(stress),
        has_stress=t(np.array([s.stress is not None for s in structures], dtype=bool)),
        weight=t(np.array([s.weight for s in structures], dtype=np.float64)),
        index=t(np.array([s.index for s in structures], dtype=np.int64)),
    )
