"""The training set's graphs, built once, kept on the training device, and cached on disk.

A training set does not move: its neighbour lists are the same in every epoch. `GraphSet.build(structures,
r_max, device)` computes every structure's full, receiver-sorted neighbour list once (data.neighbors, vesin;
on CUDA tensors when the device is CUDA) and keeps, on `device`, everything `data.collate` would put in a
batch: positions, atomic numbers, cells, periodicity, edges (local atom indices), cell shifts and the labels.
`graphs.batch(rows)` then gathers the data.Batch of those rows on the device: the same tensors, in the same
order, as `data.collate([structures[r] for r in rows], r_max)` (float64; tests/training/test_graph_cache.py).
`graphs.batches(order, batch_size)` cuts an order (e.g. `list(sampler)`) into such batches, as a DataLoader
with drop_last=False does, so the data order of a run (and of its restart) is unchanged.

Disk cache: the neighbour lists of the structures read from a file (Structure.source) are written beside it,
as `<file>.graphs-<key>.pt`, where key = sha256(file content, r_max, FORMAT_VERSION)[:16]. A second run, a
restart, or another split of the same file loads them instead of building them; rows missing from the cache are
built and the cache is rewritten (atomically: a temporary name, then a rename). A folder that cannot be written
only costs the cache (a log line says so). Labels are not cached: they come from the structures just read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

import data
from data.hdf5 import atomic_path

__all__ = ["FORMAT_VERSION", "GraphSet", "cache_path", "file_digest", "neighbor_lists"]

FORMAT_VERSION = 1  # bump when the cached content or its meaning changes: old caches are then ignored


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_path(source: str | Path, r_max: float, digest: str | None = None) -> Path:
    """Where the graphs of `source` at cutoff `r_max` (Å) are cached: beside the file, keyed by its content."""
    source = Path(source)
    digest = digest or file_digest(source)
    key = hashlib.sha256(f"{digest} {float(r_max)!r} {FORMAT_VERSION}".encode()).hexdigest()[:16]
    return source.with_name(f"{source.name}.graphs-{key}.pt")


def neighbor_lists(structures: Sequence, r_max: float, device) -> list:
    """[(senders [E] int64, receivers [E] int64, shifts [E, 3] int64)] per structure, on the CPU, computed on
    `device` (vesin's CUDA path for a CUDA device; the canonical (receiver, sender, shift) order either way)."""
    device = torch.device(device)
    out = []
    for s in structures:
        cell = s.cell if s.pbc.any() else np.zeros((3, 3))  # as data.collate
        if device.type == "cuda":
            snd, rcv, sh = data.neighbor_list(torch.as_tensor(s.positions, device=device),
                                              torch.as_tensor(cell, device=device), torch.as_tensor(s.pbc), r_max)
            out.append((snd.cpu(), rcv.cpu(), sh.to(torch.int64).cpu()))
        else:
            snd, rcv, sh = data.neighbor_list(s.positions, cell, s.pbc, r_max)
            out.append((torch.from_numpy(snd), torch.from_numpy(rcv), torch.from_numpy(sh.astype(np.int64))))
    return out


def _load_cache(path: Path, log) -> dict:
    """{row: (senders, receivers, shifts)} from a cache file; {} when absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("format_version") != FORMAT_VERSION:
            return {}
        ptr = saved["edge_ptr"].tolist()
        return {int(r): (saved["senders"][ptr[i]:ptr[i + 1]], saved["receivers"][ptr[i]:ptr[i + 1]],
                         saved["shifts"][ptr[i]:ptr[i + 1]].to(torch.int64))
                for i, r in enumerate(saved["rows"].tolist())}
    except Exception as exc:  # a damaged or foreign file: rebuild (and overwrite it)
        log(f"graph cache '{path}' is unreadable ({type(exc).__name__}: {exc}); rebuilding it")
        return {}


def _save_cache(path: Path, lists: dict, r_max: float, digest: str, log) -> None:
    rows = sorted(lists)
    counts = [lists[r][0].shape[0] for r in rows]
    saved = {
        "format_version": FORMAT_VERSION, "r_max": float(r_max), "source_sha256": digest,
        "rows": torch.tensor(rows, dtype=torch.int64),
        "edge_ptr": torch.tensor(np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]), dtype=torch.int64),
        "senders": torch.cat([lists[r][0] for r in rows]) if rows else torch.zeros(0, dtype=torch.int64),
        "receivers": torch.cat([lists[r][1] for r in rows]) if rows else torch.zeros(0, dtype=torch.int64),
        "shifts": (torch.cat([lists[r][2] for r in rows]) if rows else torch.zeros(0, 3, dtype=torch.int64)
                   ).to(torch.int32),  # lattice-vector multiples: small integers
    }
    try:
        with atomic_path(path, suffix=".pt.tmp") as tmp:
            torch.save(saved, tmp)
    except OSError as exc:
        log(f"graph cache: cannot write '{path}' ({exc}); the graphs will be built again next time")


def _cached_lists(structures: Sequence, r_max: float, device, log) -> list:
    """neighbor_lists(structures), through the disk cache of each structure's source file."""
    result: list = [None] * len(structures)
    by_source: dict = {}
    for i, s in enumerate(structures):
        source = getattr(s, "source", "")
        key = source if source and Path(source).is_file() else None
        by_source.setdefault(key, []).append(i)
    for source, positions in by_source.items():
        if source is None:  # structures made in memory: nothing to key a cache on
            for i, lists in zip(positions, neighbor_lists([structures[i] for i in positions], r_max, device)):
                result[i] = lists
            continue
        digest = file_digest(source)
        path = cache_path(source, r_max, digest)
        cached = _load_cache(path, log)
        missing = sorted({structures[i].index for i in positions} - set(cached))
        if missing:
            todo = {structures[i].index: structures[i] for i in positions}
            log(f"graphs: building {len(missing)} neighbour lists of '{source}' (r_max {r_max} Å), cached in '{path}'")
            for r, lists in zip(missing, neighbor_lists([todo[r] for r in missing], r_max, device)):
                cached[r] = lists
            _save_cache(path, cached, r_max, digest, log)
        for i in positions:
            result[i] = cached[structures[i].index]
    return result


class GraphSet:
    """Structures as device-resident graphs, gathered into data.Batch objects (see the module docstring).

    Per structure s (S of them): atoms atom_ptr[s]:atom_ptr[s+1] and edges edge_ptr[s]:edge_ptr[s+1] of the
    concatenated arrays below; edge indices are local to their structure. A batch is gathered by device ops from
    the rows on the device; host copies of the two pointers give its sizes, so it costs no device-to-host read
    (and `batches` copies an epoch's order to the device once)."""

    def __init__(self, structures: Sequence, lists: Sequence, device):
        self.device = device = torch.device(device)
        self.num_structures = num = len(structures)
        atoms = np.array([len(s) for s in structures], dtype=np.int64)
        edges = np.array([snd.shape[0] for snd, _, _ in lists], dtype=np.int64)
        self.atom_ptr = np.concatenate([[0], np.cumsum(atoms)]).astype(np.int64)  # [S+1] host
        self.edge_ptr = np.concatenate([[0], np.cumsum(edges)]).astype(np.int64)  # [S+1] host
        self.atom_ptr_device = torch.from_numpy(self.atom_ptr).to(device)  # [S+1]
        self.edge_ptr_device = torch.from_numpy(self.edge_ptr).to(device)  # [S+1]
        n = int(self.atom_ptr[-1])

        def t(array, dtype):
            return torch.as_tensor(np.asarray(array), dtype=dtype).to(device)

        def cat(arrays, shape, dtype):
            return t(np.concatenate(arrays) if arrays else np.zeros(shape), dtype)

        forces = np.zeros((n, 3))
        for s, lo in zip(structures, self.atom_ptr[:-1]):
            if s.forces is not None:
                forces[lo:lo + len(s)] = s.forces
        self.positions = cat([s.positions for s in structures], (0, 3), torch.float64)  # [N, 3] Å
        self.numbers = cat([s.numbers for s in structures], (0,), torch.int64)  # [N]
        self.forces = t(forces, torch.float64)  # [N, 3] eV/Å, 0 where absent
        self.cell = t(np.array([s.cell if s.pbc.any() else np.zeros((3, 3)) for s in structures]).reshape(num, 3, 3),
                      torch.float64)  # [S, 3, 3] Å, zeros without periodicity (as data.collate)
        self.pbc = t(np.array([s.pbc for s in structures], dtype=bool).reshape(num, 3), torch.bool)  # [S, 3]
        self.energy = t([np.nan if s.energy is None else s.energy for s in structures], torch.float64)  # [S] eV
        self.stress = t(np.array([np.zeros((3, 3)) if s.stress is None else s.stress for s in structures]
                                 ).reshape(num, 3, 3), torch.float64)  # [S, 3, 3] eV/Å^3, 0 where absent
        for label in ("energy", "forces", "stress"):  # [S] bool
            setattr(self, f"has_{label}", t([getattr(s, label) is not None for s in structures], torch.bool))
        self.weight = t([s.weight for s in structures], torch.float64)  # [S]
        self.index = t([s.index for s in structures], torch.int64)  # [S] row in the source file
        self.senders = torch.cat([snd for snd, _, _ in lists] or [torch.zeros(0, dtype=torch.int64)]).to(device)
        self.receivers = torch.cat([rcv for _, rcv, _ in lists] or [torch.zeros(0, dtype=torch.int64)]).to(device)
        self.shifts = torch.cat([sh for _, _, sh in lists] or [torch.zeros(0, 3, dtype=torch.int64)]
                                ).to(device=device, dtype=torch.float64)  # [E, 3] lattice-vector multiples

    @classmethod
    def build(cls, structures: Sequence, r_max: float, device, cache: bool = True, log=print) -> "GraphSet":
        """Graphs of `structures` within `r_max` (Å) on `device`; neighbour lists from the disk cache when
        `cache` (see the module docstring), else built here."""
        structures = list(structures)
        lists = (_cached_lists(structures, r_max, device, log) if cache
                 else neighbor_lists(structures, r_max, device))
        return cls(structures, lists, device)

    def __len__(self) -> int:
        return self.num_structures

    @property
    def max_atoms(self) -> int:
        return int(np.diff(self.atom_ptr).max(initial=0))

    def sizes(self, rows) -> tuple[int, int]:
        """(atoms, edges) of a batch of `rows`, from the host pointers."""
        rows = np.asarray(rows, dtype=np.int64)
        return (int((self.atom_ptr[rows + 1] - self.atom_ptr[rows]).sum()),
                int((self.edge_ptr[rows + 1] - self.edge_ptr[rows]).sum()))

    def batch(self, rows: Sequence[int], rows_device: torch.Tensor | None = None) -> data.Batch:
        """data.Batch of structures `rows` (positions in this set), in that order, on the device, float64.
        `rows_device`: the same rows as an int64 tensor on the device, if the caller has them there."""
        num = len(rows)
        n, e = self.sizes(rows)  # host: the output sizes of the gathers below
        dev = self.device
        r = torch.as_tensor(np.asarray(rows, dtype=np.int64)).to(dev) if rows_device is None else rows_device  # [B]
        atom_start, edge_start = self.atom_ptr_device[r], self.edge_ptr_device[r]  # [B]
        atoms, edges = self.atom_ptr_device[r + 1] - atom_start, self.edge_ptr_device[r + 1] - edge_start  # [B]
        ptr = torch.cat([atoms.new_zeros(1), torch.cumsum(atoms, 0)])  # [B+1] atom offsets in the batch
        edge_ptr = torch.cat([edges.new_zeros(1), torch.cumsum(edges, 0)])  # [B+1]
        # concatenated ranges start_b + (0 .. count_b - 1): [N] atoms and [E] edges of this set
        atom_index = torch.repeat_interleave(atom_start - ptr[:-1], atoms, output_size=n) + torch.arange(n, device=dev)
        edge_index = (torch.repeat_interleave(edge_start - edge_ptr[:-1], edges, output_size=e)
                      + torch.arange(e, device=dev))
        offset = torch.repeat_interleave(ptr[:-1], edges, output_size=e)  # [E] first atom of the edge's structure
        return data.Batch(
            positions=self.positions.index_select(0, atom_index),
            numbers=self.numbers.index_select(0, atom_index),
            batch=torch.repeat_interleave(torch.arange(num, device=dev), atoms, output_size=n),
            ptr=ptr,
            cell=self.cell.index_select(0, r),
            pbc=self.pbc.index_select(0, r),
            senders=self.senders.index_select(0, edge_index) + offset,
            receivers=self.receivers.index_select(0, edge_index) + offset,
            cell_shifts=self.shifts.index_select(0, edge_index),
            energy=self.energy.index_select(0, r),
            has_energy=self.has_energy.index_select(0, r),
            forces=self.forces.index_select(0, atom_index),
            has_forces=self.has_forces.index_select(0, r),
            stress=self.stress.index_select(0, r),
            has_stress=self.has_stress.index_select(0, r),
            weight=self.weight.index_select(0, r),
            index=self.index.index_select(0, r),
        )

    def batches(self, order: Sequence[int] | None, batch_size: int) -> Iterator[data.Batch]:
        """Batches of `batch_size` structures in `order` (default: as stored), the last one possibly smaller."""
        order = list(range(self.num_structures)) if order is None else [int(i) for i in order]
        on_device = torch.tensor(order, dtype=torch.int64).to(self.device)  # one copy per pass
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size], on_device[start:start + batch_size])
