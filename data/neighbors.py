"""Neighbor lists through vesin (CPU and CUDA), and a Verlet list with a skin for MD.

Conventions (CONTRACT.md): full list (each pair in both directions), no self edge at
zero shift (an atom's own periodic images are edges), int64 indices, edges sorted by
receiver. Within one receiver, edges are ordered by (sender, shift) so the list is
canonical and results are bitwise reproducible.

    vec[e] = positions[senders[e]] - positions[receivers[e]] + cell_shifts[e] @ cell

cell_shifts are integer-valued and returned in the floating dtype of `positions`.
vesin 0.6.2 takes one periodic flag per direction, so mixed pbc (slabs, wires) and
cells smaller than the cutoff (several images) are handled natively; a non-periodic
direction may have a zero lattice vector, and a molecule may have an all-zero cell.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import vesin

# Below this many atoms vesin runs single-threaded: thread start-up costs more than
# the search itself (measured: 27 atoms 0.17 ms on 1 thread vs 0.86 ms on 2).
_SINGLE_THREAD_MAX_ATOMS = 5000
# vesin's CPU cell list allocates bins of the cutoff's size, so tiny cutoffs are slow
# (27 atoms in a periodic 50 Å box: 18 ms at 1 Å, 0.6 ms at 3 Å). Shorter cutoffs
# search within this radius and keep the pairs closer than the cutoff.
_MIN_SEARCH_CUTOFF = 3.0


def _check_inputs(positions_shape, cell_shape, pbc_shape, cutoff: float) -> None:
    if len(positions_shape) != 2 or positions_shape[1] != 3:
        raise ValueError(f"neighbor_list: positions must have shape (n, 3), got {tuple(positions_shape)}")
    if tuple(cell_shape) != (3, 3):
        raise ValueError(f"neighbor_list: cell must have shape (3, 3), got {tuple(cell_shape)}")
    if tuple(pbc_shape) != (3,):
        raise ValueError(f"neighbor_list: pbc must have shape (3,), got {tuple(pbc_shape)}")
    if not cutoff > 0:
        raise ValueError(f"neighbor_list: cutoff must be > 0, got {cutoff}")


def _check_periodic_cell(cell: np.ndarray, pbc: np.ndarray) -> None:
    if pbc.any():
        lengths = np.linalg.norm(cell[pbc], axis=1)
        if np.any(lengths == 0):
            raise ValueError(f"neighbor_list: periodic direction with a zero lattice vector: cell={cell.tolist()}, pbc={pbc.tolist()}")


def _vesin(cutoff: float, num_atoms: int) -> vesin.NeighborList:
    threads = 1 if num_atoms <= _SINGLE_THREAD_MAX_ATOMS else 0
    return vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=False, n_threads=threads)


def _neighbor_list_numpy(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    _check_periodic_cell(cell, pbc)
    if len(positions) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float64)
    search = max(cutoff, _MIN_SEARCH_CUTOFF)
    i, j, shifts, dist = _vesin(search, len(positions)).compute(positions, cell, pbc, "ijSd")
    if search > cutoff:
        keep = dist < cutoff
        i, j, shifts = i[keep], j[keep], shifts[keep]
    receivers = i.astype(np.int64)
    senders = j.astype(np.int64)
    shifts = shifts.astype(np.int64)
    # lexsort: last key is the primary one -> (receiver, sender, shift) order.
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], senders, receivers))
    return senders[order], receivers[order], shifts[order]


def _canonical_order_torch(senders, receivers, shifts, num_atoms: int):
    """Permutation sorting edges by (receiver, sender, shift), computed on the device.

    One sort on a packed int64 key when it fits (one host sync for the shift range),
    else five stable sorts from the least to the most significant key.
    """
    lo = shifts.min(dim=0).values
    span = shifts.max(dim=0).values - lo + 1
    spans = span.tolist()  # the only host sync
    if num_atoms * num_atoms * spans[0] * spans[1] * spans[2] < 2**62:
        code = ((shifts[:, 0] - lo[0]) * spans[1] + (shifts[:, 1] - lo[1])) * spans[2] + (shifts[:, 2] - lo[2])
        key = (receivers * num_atoms + senders) * (spans[0] * spans[1] * spans[2]) + code
        return torch.sort(key).indices  # keys are unique: stability is irrelevant
    order = torch.arange(receivers.shape[0], device=receivers.device)
    for key in (shifts[:, 2], shifts[:, 1], shifts[:, 0], senders, receivers):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


_CUDA_CALCULATORS = threading.local()


def _cuda_calculator(cutoff: float, device: torch.device) -> vesin.NeighborList:
    """One vesin calculator per (thread, cutoff, device): it keeps its device buffers between
    calls (a fresh one costs ~0.9 ms of allocations per call on an H200)."""
    cache = _CUDA_CALCULATORS.__dict__.setdefault("cache", {})
    key = (float(cutoff), device.index)
    if key not in cache:
        if len(cache) >= 8:
            cache.clear()
        cache[key] = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=False)
    return cache[key]


def _neighbor_list_cuda(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float):
    """vesin's CUDA path on device tensors; the canonical sort runs on the device too."""
    device = positions.device
    points = positions.detach().to(torch.float64).contiguous()
    box = cell.detach().to(device=device, dtype=torch.float64).contiguous()
    periodic = pbc.detach().to(device=device, dtype=torch.bool).contiguous()
    if bool(((box.norm(dim=1) == 0) & periodic).any()):
        raise ValueError(f"neighbor_list: periodic direction with a zero lattice vector: cell={box.tolist()}, pbc={periodic.tolist()}")
    if points.shape[0] == 0:
        i = j = torch.zeros(0, dtype=torch.int64, device=device)
        shifts = torch.zeros((0, 3), dtype=torch.int64, device=device)
    else:
        i, j, shifts = _cuda_calculator(cutoff, device).compute(points, box, periodic, "ijS")
    receivers = i.to(torch.int64)
    senders = j.to(torch.int64)
    shifts = shifts.to(torch.int64)
    if receivers.shape[0] == 0:
        return senders, receivers, shifts
    order = _canonical_order_torch(senders, receivers, shifts, points.shape[0])
    return senders[order], receivers[order], shifts[order]


def _to_tensor(x, device=None) -> torch.Tensor:
    """x (a tensor, a numpy array, an ase.cell.Cell or a list) as a tensor, optionally on `device`."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))
    return t if device is None else t.to(device)


def neighbor_list(positions, cell, pbc, cutoff: float):
    """Full, receiver-sorted neighbor list of one structure within `cutoff` (Å).

    positions (n, 3), cell (3, 3) (rows = lattice vectors; zeros for a molecule),
    pbc (3,) bool. numpy in -> numpy out; torch in -> torch out on the same device
    (CUDA tensors use vesin's CUDA path, CPU tensors go through numpy).
    Returns (senders [E] int64, receivers [E] int64, cell_shifts [E, 3] integer-valued,
    in the dtype of positions).
    """
    cutoff = float(cutoff)
    if isinstance(positions, torch.Tensor):
        cell, pbc = _to_tensor(cell), _to_tensor(pbc)
        _check_inputs(positions.shape, tuple(cell.shape), tuple(pbc.shape), cutoff)
        dtype, device = positions.dtype, positions.device
        if device.type == "cuda":
            senders, receivers, shifts = _neighbor_list_cuda(positions, cell, pbc, cutoff)
            return senders, receivers, shifts.to(dtype)
        senders, receivers, shifts = _neighbor_list_numpy(
            positions.detach().cpu().numpy(), cell.detach().cpu().numpy(), pbc.detach().cpu().numpy(), cutoff
        )
        return (
            torch.from_numpy(senders).to(device),
            torch.from_numpy(receivers).to(device),
            torch.from_numpy(shifts).to(device=device, dtype=dtype),
        )
    positions = np.asarray(positions)
    _check_inputs(positions.shape, np.shape(cell), np.shape(pbc), cutoff)
    dtype = positions.dtype if np.issubdtype(positions.dtype, np.floating) else np.float64
    senders, receivers, shifts = _neighbor_list_numpy(positions, np.asarray(cell), np.asarray(pbc), cutoff)
    return senders, receivers, shifts.astype(dtype)


class VerletList:
    """Neighbor list with a skin, reused between MD steps.

    `update(positions, cell, pbc)` returns all edges within cutoff + skin (a superset
    of the true list within `cutoff`). It rebuilds only when some atom moved more than
    skin/2 since the last build, or the cell, pbc or number of atoms changed; the
    displacement check runs on the device of `positions`. `rebuilds` counts builds.
    Callers must drop (or weight to zero) edges longer than `cutoff`; tumbler's model
    does this through its radial envelope.
    """

    def __init__(self, cutoff: float, skin: float):
        if not cutoff > 0:
            raise ValueError(f"VerletList: cutoff must be > 0, got {cutoff}")
        if not skin >= 0:
            raise ValueError(f"VerletList: skin must be >= 0, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.rebuilds = 0
        self._ref_positions = None
        self._ref_cell = None
        self._ref_pbc = None
        self._edges = None

    def reset(self) -> None:
        """Forget the cached list; the next update rebuilds."""
        self._ref_positions = None
        self._edges = None

    def _needs_rebuild(self, positions, cell, pbc) -> bool:
        ref = self._ref_positions
        if ref is None or self._edges is None:
            return True
        if isinstance(positions, torch.Tensor) != isinstance(ref, torch.Tensor):
            return True
        if isinstance(positions, torch.Tensor):
            if ref.shape != positions.shape or ref.device != positions.device or ref.dtype != positions.dtype:
                return True
            if cell.shape != self._ref_cell.shape or pbc.shape != self._ref_pbc.shape:
                return True
            # One device-side flag, one host sync per step.
            max_sq = (positions.detach() - ref).square().sum(dim=1).max()
            flag = (max_sq > (0.5 * self.skin) ** 2) | (cell != self._ref_cell).any() | (pbc != self._ref_pbc).any()
            return bool(flag)
        if ref.shape != positions.shape:
            return True
        if not np.array_equal(self._ref_pbc, pbc) or not np.array_equal(self._ref_cell, cell):
            return True
        max_sq = np.square(positions - ref).sum(axis=1).max()
        return bool(max_sq > (0.5 * self.skin) ** 2)

    def update(self, positions, cell, pbc):
        """(senders, receivers, cell_shifts) within cutoff + skin, on the device of positions."""
        if isinstance(positions, torch.Tensor):
            positions = positions.detach()
            cell = _to_tensor(cell, positions.device).detach().to(positions.dtype)
            pbc = _to_tensor(pbc, positions.device).to(torch.bool)
        else:
            positions = np.asarray(positions, dtype=np.float64)
            cell = np.asarray(cell, dtype=np.float64)
            pbc = np.asarray(pbc, dtype=bool)
        if positions.shape[0] == 0 or self._needs_rebuild(positions, cell, pbc):
            self._edges = neighbor_list(positions, cell, pbc, self.cutoff + self.skin)
            self._ref_positions = positions.clone() if isinstance(positions, torch.Tensor) else positions.copy()
            self._ref_cell = cell.clone() if isinstance(cell, torch.Tensor) else cell.copy()
            self._ref_pbc = pbc.clone() if isinstance(pbc, torch.Tensor) else pbc.copy()
            self.rebuilds += 1
        return self._edges
