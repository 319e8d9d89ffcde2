"""The training graphs built once (potential/training/graph_cache.py): batches equal data.collate's, in the sampler's
order; the disk cache is keyed by content and r_max, written atomically, reused, and survives bad files."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from ase.build import molecule

import data
from potential.training.graph_cache import GraphSet, cache_path

R_MAX = 3.0


def _mixed(emt):
    """Periodic cells with and without stress, a molecule without labels, a different size."""
    cells = emt(6, seed=3, stress_every=2)
    h2o = molecule("H2O")
    mol = data.Structure(positions=h2o.positions, numbers=h2o.numbers, cell=np.zeros((3, 3)), pbc=np.zeros(3, bool),
                         energy=None, forces=None, index=6, weight=2.0)
    return cells[:3] + [mol] + cells[3:]


def assert_batches_equal(got: data.Batch, want: data.Batch) -> None:
    for f in dataclasses.fields(data.Batch):
        a, b = getattr(got, f.name), getattr(want, f.name)
        assert a.dtype == b.dtype and a.shape == b.shape, f.name
        assert torch.equal(a.cpu(), b) or (a.dtype.is_floating_point and torch.allclose(a.cpu(), b, equal_nan=True,
                                                                                       rtol=0, atol=0)), f.name


def test_batches_equal_collate_in_sampler_order(emt):
    structures = _mixed(emt)
    graphs = GraphSet.build(structures, R_MAX, "cpu", cache=False)
    generator = torch.Generator().manual_seed(5)
    sampler = torch.utils.data.RandomSampler(structures, generator=generator)
    order = list(sampler)
    generator.manual_seed(5)  # what a DataLoader over the same sampler gives, batch by batch
    loader = torch.utils.data.DataLoader(structures, batch_size=3, sampler=sampler,
                                         collate_fn=lambda b: data.collate(b, R_MAX))
    got = list(graphs.batches(order, 3))
    want = list(loader)
    assert len(got) == len(want) == 3 and got[-1].num_structures == 1
    for g, w in zip(got, want):
        assert_batches_equal(g, w)
        assert g.num_edges > 0
    assert graphs.sizes(order[:3]) == (want[0].num_atoms, want[0].num_edges)


def test_disk_cache_is_reused_extended_and_keyed(emt, tmp_path, monkeypatch):
    structures = emt(5, seed=1)
    path = tmp_path / "set.h5"
    data.write_dataset(path, structures)
    read = list(data.read_structures(str(path)))
    log = []
    first = GraphSet.build(read[:3], R_MAX, "cpu", log=log.append)
    cached = cache_path(path, R_MAX)
    assert cached.is_file() and len(log) == 1 and "building 3" in log[0]
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # the temporary file was renamed

    import potential.training.graph_cache as gc
    calls = []
    real = gc.neighbor_lists
    monkeypatch.setattr(gc, "neighbor_lists", lambda s, r, d: calls.append(len(s)) or real(s, r, d))
    again = GraphSet.build(read[:3], R_MAX, "cpu", log=log.append)  # all rows cached: nothing built
    assert calls == [] and len(log) == 1
    assert_batches_equal(again.batch([2, 0, 1]), first.batch([2, 0, 1]))
    more = GraphSet.build(read, R_MAX, "cpu", log=log.append)  # two rows missing: built, cache rewritten
    assert calls == [2]
    assert_batches_equal(more.batch([4, 1, 3]), data.collate([read[4], read[1], read[3]], R_MAX))
    GraphSet.build(read, R_MAX, "cpu", log=log.append)
    assert calls == [2]

    assert cache_path(path, 2.5) != cached  # another cutoff: another cache
    data.write_dataset(path, emt(5, seed=2))  # new content: another key
    assert cache_path(path, R_MAX) != cached


def test_bad_cache_file_is_rebuilt(emt, tmp_path):
    path = tmp_path / "set.h5"
    data.write_dataset(path, emt(3, seed=4))
    read = list(data.read_structures(str(path)))
    cache_path(path, R_MAX).write_bytes(b"not a torch file")
    log = []
    graphs = GraphSet.build(read, R_MAX, "cpu", log=log.append)
    assert "unreadable" in log[0] and "building 3" in log[1]
    assert_batches_equal(graphs.batch([0, 1, 2]), data.collate(read, R_MAX))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_folder_costs_only_the_cache(emt, tmp_path):
    path = tmp_path / "ro" / "set.h5"
    path.parent.mkdir()
    data.write_dataset(path, emt(2, seed=6))
    read = list(data.read_structures(str(path)))
    path.parent.chmod(0o555)
    try:
        log = []
        graphs = GraphSet.build(read, R_MAX, "cpu", log=log.append)
        assert any("cannot write" in m for m in log)
        assert_batches_equal(graphs.batch([1, 0]), data.collate([read[1], read[0]], R_MAX))
    finally:
        path.parent.chmod(0o755)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_equal_cpu_collate(emt):
    structures = _mixed(emt)
    graphs = GraphSet.build(structures, R_MAX, "cuda", cache=False)
    rows = [4, 0, 3, 6]
    assert graphs.positions.is_cuda
    assert_batches_equal(graphs.batch(rows), data.collate([structures[r] for r in rows], R_MAX))
