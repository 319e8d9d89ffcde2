"""vesin neighbor lists vs ase.neighborlist, and the Verlet list. Budget: < 5 s."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.neighborlist import neighbor_list as ase_neighbor_list

from data import VerletList, neighbor_list


def edge_set(senders, receivers, shifts):
    shifts = np.asarray(shifts)
    assert np.array_equal(shifts, np.round(shifts)), "cell shifts must be integers"
    return set(zip(np.asarray(receivers).tolist(), np.asarray(senders).tolist(), map(tuple, shifts.astype(int).tolist())))


def reference(atoms, cutoff):
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    return set(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))


def check(atoms, cutoff):
    senders, receivers, shifts = neighbor_list(atoms.positions, np.array(atoms.cell[:]), atoms.pbc, cutoff)
    assert senders.dtype == np.int64 and receivers.dtype == np.int64
    assert np.all(np.diff(receivers) >= 0), "receivers must be sorted"
    self_zero = (senders == receivers) & np.all(shifts == 0, axis=1)
    assert not self_zero.any(), "no self edge at zero shift"
    got = edge_set(senders, receivers, shifts)
    assert len(got) == len(senders), "no duplicate edges"
    assert got == reference(atoms, cutoff)
    vec = atoms.positions[senders] - atoms.positions[receivers] + shifts @ np.array(atoms.cell[:])
    assert np.all(np.linalg.norm(vec, axis=1) < cutoff)
    return senders, receivers, shifts


def random_triclinic(rng, n, scale):
    cell = np.eye(3) * scale + rng.uniform(-0.4, 0.4, (3, 3)) * scale
    return Atoms(numbers=np.full(n, 14), positions=rng.random((n, 3)) @ cell, cell=cell, pbc=True)


@pytest.mark.parametrize("seed", range(4))
def test_random_triclinic(seed):
    rng = np.random.default_rng(seed)
    check(random_triclinic(rng, 20, 7.0), 4.0)


@pytest.mark.parametrize("seed", range(3))
def test_cells_smaller_than_cutoff(seed):
    rng = np.random.default_rng(100 + seed)
    atoms = random_triclinic(rng, 3, 2.2)  # cutoff spans several images in every direction
    senders, receivers, _ = check(atoms, 5.0)
    assert np.any(senders == receivers), "self images must be present"
    check(bulk("Cu", "fcc", a=3.6), 6.0)  # one-atom cell


@pytest.mark.parametrize("pbc", [(True, True, False), (True, False, True), (False, True, False), (True, False, False)])
def test_mixed_pbc(pbc):
    rng = np.random.default_rng(7)
    atoms = random_triclinic(rng, 8, 3.0)
    atoms.pbc = pbc
    atoms.positions += rng.normal(scale=2.0, size=atoms.positions.shape)  # some atoms outside the cell
    check(atoms, 4.5)


def test_slab_with_zero_vacuum_vector():
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    slab.pbc = (True, True, False)
    slab.rattle(0.05, seed=1)
    expected = reference(slab, 5.0)
    cell = np.array(slab.cell[:])
    cell[2] = 0.0  # the non-periodic direction needs no lattice vector
    senders, receivers, shifts = neighbor_list(slab.positions, cell, slab.pbc, 5.0)
    assert edge_set(senders, receivers, shifts) == expected


def test_open_boundaries_and_zero_cell():
    rng = np.random.default_rng(3)
    atoms = Atoms(numbers=np.full(30, 6), positions=rng.random((30, 3)) * 8.0)
    check(atoms, 3.0)
    atoms.cell = np.eye(3) * 50.0  # a box but no pbc: same list
    check(atoms, 3.0)
    senders, _, shifts = neighbor_list(np.zeros((1, 3)), np.zeros((3, 3)), np.zeros(3, bool), 5.0)
    assert len(senders) == 0 and shifts.shape == (0, 3)
    senders, _, _ = neighbor_list(np.zeros((0, 3)), np.zeros((3, 3)), np.zeros(3, bool), 5.0)
    assert len(senders) == 0


def test_periodic_zero_vector_is_an_error():
    with pytest.raises(ValueError, match="zero lattice vector"):
        neighbor_list(np.zeros((2, 3)), np.diag([3.0, 3.0, 0.0]), np.ones(3, bool), 2.0)


def test_canonical_order_and_torch_cpu():
    rng = np.random.default_rng(5)
    atoms = random_triclinic(rng, 12, 4.0)
    s, r, S = neighbor_list(atoms.positions, np.array(atoms.cell[:]), atoms.pbc, 4.0)
    keys = np.c_[r, s, S]
    assert all(tuple(a) < tuple(b) for a, b in zip(keys[:-1], keys[1:])), "(receiver, sender, shift) strictly increasing"
    ts, tr, tS = neighbor_list(torch.tensor(atoms.positions, dtype=torch.float32),
                               torch.tensor(np.array(atoms.cell[:]), dtype=torch.float32), torch.tensor(atoms.pbc), 4.0)
    assert ts.dtype == torch.int64 and tr.dtype == torch.int64 and tS.dtype == torch.float32
    # float32 rounding may flip pairs exactly at the cutoff only: none here
    assert edge_set(ts.numpy(), tr.numpy(), tS.numpy()) == edge_set(s, r, S)


def test_device_sort_matches_lexsort():
    from data.neighbors import _canonical_order_torch

    rng = np.random.default_rng(9)
    n, e = 50, 2000
    r, s = rng.integers(0, n, e), rng.integers(0, n, e)
    S = rng.integers(-3, 4, (e, 3))
    expected = np.lexsort((S[:, 2], S[:, 1], S[:, 0], s, r))
    keys = np.c_[r, s, S]
    for big in (False, True):
        order = _canonical_order_torch(torch.tensor(s), torch.tensor(r), torch.tensor(S), 2**30 if big else n).numpy()
        np.testing.assert_array_equal(keys[order], keys[expected])  # packed key (small n) and stable-sort fallback


def test_verlet_list_superset_and_rebuilds():
    rng = np.random.default_rng(11)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    cutoff, skin = 4.0, 1.0
    vl = VerletList(cutoff, skin)
    pos = torch.tensor(atoms.positions)
    cell, pbc = torch.tensor(np.array(atoms.cell[:])), torch.tensor(atoms.pbc)
    expected_rebuilds = 0
    start = pos.clone()
    for step in range(30):
        pos = pos + torch.tensor(rng.normal(scale=0.05, size=pos.shape))
        s, r, S = vl.update(pos, cell, pbc)
        moved = (pos - start).norm(dim=1).max().item()
        rebuilt = step == 0 or moved > skin / 2
        if rebuilt:
            expected_rebuilds += 1
            start = pos.clone()
        assert vl.rebuilds == expected_rebuilds
        atoms.positions = pos.numpy()
        got = edge_set(s.numpy(), r.numpy(), S.numpy())
        assert reference(atoms, cutoff) <= got, "Verlet list must contain every pair within the cutoff"
        if rebuilt:
            assert got == reference(atoms, cutoff + skin)
    assert 1 < vl.rebuilds < 30, "rebuilds only when needed"
    # a cell or atom-count change forces a rebuild
    before = vl.rebuilds
    vl.update(pos, cell * 1.01, pbc)
    assert vl.rebuilds == before + 1
    vl.update(pos[:-1], cell * 1.01, pbc)
    assert vl.rebuilds == before + 2
    vl.update(pos[:-1], cell * 1.01, pbc)
    assert vl.rebuilds == before + 2


def test_ase_cell_inputs_and_switching_types():
    atoms = bulk("Cu", "fcc", a=3.6)
    expected = reference(atoms, 4.0)
    assert edge_set(*neighbor_list(atoms.positions, atoms.cell, atoms.pbc, 4.0)) == expected
    s, r, S = neighbor_list(torch.tensor(atoms.positions), atoms.cell, atoms.pbc, 4.0)
    assert edge_set(s.numpy(), r.numpy(), S.numpy()) == expected
    vl = VerletList(4.0, 0.0)
    vl.update(torch.tensor(atoms.positions), atoms.cell, atoms.pbc)
    s, r, S = vl.update(atoms.positions, atoms.cell, atoms.pbc)  # torch -> numpy: rebuilt, numpy out
    assert vl.rebuilds == 2 and isinstance(s, np.ndarray) and edge_set(s, r, S) == expected


def test_verlet_list_numpy():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    vl = VerletList(3.0, 0.5)
    out1 = vl.update(atoms.positions, atoms.cell[:], atoms.pbc)
    out2 = vl.update(atoms.positions + 0.1, atoms.cell[:], atoms.pbc)
    assert vl.rebuilds == 1 and out1 is out2
    vl.update(atoms.positions + 0.3, atoms.cell[:], atoms.pbc)
    assert vl.rebuilds == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False, False, False)])
def test_cuda_matches_cpu(pbc):
    rng = np.random.default_rng(2)
    atoms = random_triclinic(rng, 40, 6.0)
    atoms.pbc = pbc
    cell = np.array(atoms.cell[:]) if any(pbc) else np.zeros((3, 3))
    args = (torch.tensor(atoms.positions, device="cuda"), torch.tensor(cell, device="cuda"), torch.tensor(pbc, device="cuda"))
    s, r, S = neighbor_list(*args, 5.0)
    assert s.device.type == "cuda" and s.dtype == torch.int64 and S.dtype == torch.float64
    cs, cr, cS = neighbor_list(atoms.positions, cell, np.array(pbc), 5.0)
    np.testing.assert_array_equal(s.cpu().numpy(), cs)  # canonical order: identical, not just the same set
    np.testing.assert_array_equal(r.cpu().numpy(), cr)
    np.testing.assert_array_equal(S.cpu().numpy(), cS)
    vl = VerletList(5.0, 1.0)
    vl.update(*args)
    vl.update(args[0] + 0.01, args[1], args[2])
    assert vl.rebuilds == 1
