"""Batched Verlet neighbour lists that stay on the device, for the GPU-resident engine.

`BatchNeighbors(ptr, cell, pbc, cutoff, skin)` keeps the edges of B structures (atoms ptr[b]:ptr[b+1] of one
concatenated positions tensor) within cutoff + skin, in the CONTRACT's convention (full list, receiver-sorted
by global index, no self edge at zero shift, vec = x[s] - x[r] + shift @ cell[b]).

- Structures with a periodic direction: `data.neighbor_list` one structure at a time (vesin; its CUDA path on
  CUDA tensors). Triclinic cells, cells smaller than the cutoff (several images) and mixed pbc are vesin's.
- Structures with no periodic direction and few atoms (molecules, clusters): one brute-force pass over all of
  them together (candidate pairs i != j of the same structure are built once; a rebuild is one distance kernel
  and one nonzero), so 64 replicas of a molecule cost one launch group, not 64 searches.
- Displacement check on the device: structure b is stale when one of its atoms moved more than skin/2 since
  its list was built (then no pair can have come within the cutoff unseen). Only stale structures are rebuilt
  (the molecule group rebuilds together). `set_cell` (NPT, strain) marks every periodic structure stale.
  Positions are never wrapped between builds, so the stored shifts stay valid.
`check(positions)` -> [B] bool flags (device, no sync); `update(positions, flags=None)` reads the flags once on
the host (the one sync of a step; or takes them already read) and rebuilds the stale structures; it returns True
when the edges changed.
"""

from __future__ import annotations

import warnings

import torch

import data

# Non-periodic structures with at most this many atoms go to the brute-force group; the group's candidate
# pair list (sum of n_b^2 over its structures) is capped so its memory stays small.
BRUTE_FORCE_MAX_ATOMS = 512
BRUTE_FORCE_MAX_PAIRS = 8_000_000


class BatchNeighbors:
    """Verlet lists of a batch of structures on one device (see the module docstring)."""

    def __init__(self, ptr, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float, skin: float):
        if not cutoff > 0 or not skin >= 0:
            raise ValueError(f"BatchNeighbors: need cutoff > 0 and skin >= 0, got cutoff={cutoff}, skin={skin}")
        self.ptr = [int(p) for p in ptr]  # host copy of the atom offsets [B+1]
        self.num_structures = len(self.ptr) - 1
        self.device = cell.device
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.radius = self.cutoff + self.skin  # Å, list radius
        self.cell = cell.detach().to(torch.float64).clone()  # [B, 3, 3] Å
        self.pbc = pbc.detach().to(torch.bool).clone()  # [B, 3]
        num_atoms = self.ptr[-1]
        sizes = [self.ptr[b + 1] - self.ptr[b] for b in range(self.num_structures)]
        self.structure = torch.repeat_interleave(
            torch.arange(self.num_structures, device=self.device), torch.tensor(sizes, device=self.device))  # [N]
        periodic = self.pbc.any(dim=1).tolist()
        small = [not periodic[b] and sizes[b] <= BRUTE_FORCE_MAX_ATOMS for b in range(self.num_structures)]
        group, pairs = [], 0
        for b in range(self.num_structures):
            if small[b] and pairs + sizes[b] ** 2 <= BRUTE_FORCE_MAX_PAIRS:
                group.append(b)
                pairs += sizes[b] ** 2
        self.group = group  # structures handled by the brute-force pass
        self.single = [b for b in range(self.num_structures) if b not in set(group)]  # one search each
        self._pairs = self._candidate_pairs(group, sizes)  # (receivers, senders) [P], receiver-sorted
        self._pieces: dict = {}  # "group" or structure index -> (senders, receivers, shifts int64), global indices
        self.ref_positions = torch.zeros(num_atoms, 3, dtype=torch.float64, device=self.device)
        self.stale = torch.ones(self.num_structures, dtype=torch.bool, device=self.device)
        self.rebuilds = 0  # number of update() calls that rebuilt something
        self.host_search = False  # set when vesin's device path fails: search on the CPU instead
        self.edges = None  # (senders [E], receivers [E], shifts [E, 3] float64) of the whole batch

    def _candidate_pairs(self, group, sizes):
        rec, snd = [], []
        for b in group:
            n, off = sizes[b], self.ptr[b]
            local = torch.arange(n, device=self.device)
            r = local.repeat_interleave(n)  # [n*n] receiver-major
            s = local.repeat(n)
            keep = r != s
            rec.append(r[keep] + off)
            snd.append(s[keep] + off)
        if not rec:
            return None
        return torch.cat(rec), torch.cat(snd)

    def set_cell(self, cell: torch.Tensor) -> None:
        """New cells [B, 3, 3] (Å): every periodic structure is rebuilt at the next update."""
        self.cell.copy_(cell.detach().to(torch.float64))
        self.stale |= self.pbc.any(dim=1)

    def displacement2(self, positions: torch.Tensor) -> torch.Tensor:
        """[B] Å^2: per structure, the largest squared displacement of an atom since its list was built."""
        d2 = (positions.detach().to(torch.float64) - self.ref_positions).square().sum(dim=1)  # [N] Å^2
        worst = torch.zeros(self.num_structures, dtype=torch.float64, device=self.device)
        return worst.scatter_reduce(0, self.structure, d2, reduce="amax", include_self=True)

    def check(self, positions: torch.Tensor, displacement2: torch.Tensor | None = None) -> torch.Tensor:
        """[B] bool: structures whose list no longer covers the cutoff (device computation, no sync)."""
        if displacement2 is None:
            displacement2 = self.displacement2(positions)
        return self.stale | (displacement2 > (0.5 * self.skin) ** 2)

    def update(self, positions: torch.Tensor, flags=None) -> bool:
        """Rebuild the stale structures (flags [B] from `check`, a tensor or already read into a list; computed
        here if None). True if edges changed."""
        if flags is None:
            flags = self.check(positions)
        stale = [bool(x) for x in (flags.tolist() if isinstance(flags, torch.Tensor) else flags)]  # a host sync
        if not any(stale):
            return False
        positions = positions.detach().to(torch.float64)
        if self.group and any(stale[b] for b in self.group):
            self._pieces["group"] = self._build_group(positions)
            for b in self.group:
                stale[b] = True
        for b in self.single:
            if stale[b]:
                self._pieces[b] = self._build_single(positions, b)
        mask = torch.tensor(stale, device=self.device)[self.structure]  # [N] atoms whose reference moves
        # in place: a captured CUDA graph that runs check() keeps reading these same buffers
        self.ref_positions.copy_(torch.where(mask[:, None], positions, self.ref_positions))
        self.stale.zero_()
        self.edges = self._concatenate()
        self.rebuilds += 1
        return True

    def _build_group(self, positions):
        receivers, senders = self._pairs
        d2 = (positions[senders] - positions[receivers]).square().sum(dim=1)  # [P] Å^2
        keep = torch.nonzero(d2 < self.radius**2).squeeze(1)
        shifts = torch.zeros(keep.shape[0], 3, dtype=torch.int64, device=self.device)
        return senders[keep], receivers[keep], shifts

    def _build_single(self, positions, b):
        lo, hi = self.ptr[b], self.ptr[b + 1]
        cell = self.cell[b] if bool(self.pbc[b].any()) else torch.zeros_like(self.cell[b])
        if not self.host_search:
            try:
                s, r, sh = data.neighbor_list(positions[lo:hi], cell, self.pbc[b], self.radius)
                return s + lo, r + lo, sh.to(torch.int64)
            except (RuntimeError, TypeError, OSError) as exc:  # vesin's device path unusable here: search on the host
                if self.device.type == "cpu":
                    raise
                warnings.warn(f"BatchNeighbors: vesin on {self.device} failed ({exc}); neighbour lists are searched "
                              "on the CPU from now on", RuntimeWarning, stacklevel=2)
                self.host_search = True
        s, r, sh = data.neighbor_list(positions[lo:hi].cpu(), cell.cpu(), self.pbc[b].cpu(), self.radius)
        return s.to(self.device) + lo, r.to(self.device) + lo, sh.to(device=self.device, dtype=torch.int64)

    def _concatenate(self):
        pieces = [self._pieces[k] for k in (["group"] if self.group else []) + self.single]
        senders = torch.cat([p[0] for p in pieces])
        receivers = torch.cat([p[1] for p in pieces])
        shifts = torch.cat([p[2] for p in pieces])
        # each piece is (receiver, sender, shift)-sorted and owns whole receivers: a stable sort by receiver
        # merges them into the canonical order of the whole batch
        order = torch.sort(receivers, stable=True).indices
        return senders[order], receivers[order], shifts[order].to(torch.float64)
