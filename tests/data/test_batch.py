"""Batch collation: offsets, receiver sorting, edge vectors, masks, dtype/device moves. Budget: < 3 s."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from data import Batch, collate
from data.batch import pack_atoms


def test_collate_offsets_and_sorting(make_structures):
    structures = make_structures(7, seed=3)
    cutoff = 4.0
    b = collate(structures, cutoff)
    counts = [len(s) for s in structures]
    assert b.num_structures == 7 and b.num_atoms == sum(counts)
    np.testing.assert_array_equal(b.ptr.numpy(), np.cumsum([0] + counts))
    np.testing.assert_array_equal(b.batch.numpy(), np.repeat(np.arange(7), counts))
    assert torch.all(b.receivers[1:] >= b.receivers[:-1])
    # edges never cross structures
    assert torch.equal(b.batch[b.senders], b.batch[b.receivers])
    # edge vectors follow the contract formula and lie within the cutoff
    cell_of_edge = b.cell[b.batch[b.receivers]]
    vec = b.positions[b.senders] - b.positions[b.receivers] + torch.einsum("ek,ekl->el", b.cell_shifts, cell_of_edge)
    assert torch.all(vec.norm(dim=1) < cutoff)
    # per structure, the same pairs and distances as ASE
    for k, s in enumerate(structures):
        atoms = s.to_atoms()
        i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
        sel = b.batch[b.receivers] == k
        got = sorted(zip((b.receivers[sel] - b.ptr[k]).tolist(), (b.senders[sel] - b.ptr[k]).tolist(),
                         np.round(vec[sel].norm(dim=1).numpy(), 9).tolist()))
        assert got == sorted(zip(i.tolist(), j.tolist(), np.round(d, 9).tolist()))


def test_labels_and_masks(make_structures):
    structures = make_structures(5)
    b = collate(structures, 3.0)
    for k, s in enumerate(structures):
        lo, hi = b.ptr[k], b.ptr[k + 1]
        assert bool(b.has_energy[k]) == (s.energy is not None)
        assert bool(b.has_forces[k]) == (s.forces is not None)
        assert bool(b.has_stress[k]) == (s.stress is not None)
        if s.energy is None:
            assert torch.isnan(b.energy[k])
        else:
            assert b.energy[k].item() == s.energy
        expected_forces = s.forces if s.forces is not None else np.zeros((len(s), 3))
        np.testing.assert_array_equal(b.forces[lo:hi].numpy(), expected_forces)
        np.testing.assert_array_equal(b.stress[k].numpy(), s.stress if s.stress is not None else np.zeros((3, 3)))
        if not s.pbc.any():
            assert torch.all(b.cell[k] == 0)
    assert b.energy.dtype == torch.float64 and b.weight.dtype == torch.float64
    np.testing.assert_array_equal(b.weight.numpy(), [s.weight for s in structures])


def test_to_dtype_keeps_energy_and_indices(make_structures):
    b = collate(make_structures(4), 3.0).to(dtype=torch.float32)
    for name in ("positions", "cell", "cell_shifts", "forces", "stress"):
        assert getattr(b, name).dtype == torch.float32, name
    assert b.energy.dtype == torch.float64 and b.weight.dtype == torch.float64
    for name in ("numbers", "batch", "ptr", "senders", "receivers", "index"):
        assert getattr(b, name).dtype == torch.int64, name
    assert b.pbc.dtype == torch.bool and b.has_forces.dtype == torch.bool
    assert b.to(device="cpu").positions.device.type == "cpu"


def test_from_atoms_ignores_attached_results():
    cu = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    water = molecule("H2O")
    b = Batch.from_atoms([cu, water], cutoff=3.0, dtype=torch.float32)
    assert b.num_structures == 2 and b.num_atoms == 5
    assert b.positions.dtype == torch.float32
    assert not b.has_energy.any() and not b.has_forces.any()
    assert torch.equal(b.index, torch.tensor([0, 1]))
    np.testing.assert_array_equal(b.numbers.numpy(), [29, 29, 8, 1, 1])
    assert b.num_edges == len(ase_neighbor_list("i", cu, 3.0)) + len(ase_neighbor_list("i", water, 3.0))


def test_pack_atoms_packs_as_from_atoms_does():
    """The device engines' packing (potential.simulation) is Batch's: same atoms, offsets and cells."""
    cu = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    cu.set_momenta(np.arange(6.0).reshape(2, 3))
    water = molecule("H2O")
    water.cell = [5.0, 5.0, 5.0]  # a cell but no periodic direction: packed as zero
    packed = pack_atoms([cu, water], device="cpu", dtype=torch.float32)
    batch = Batch.from_atoms([cu, water], cutoff=3.0, dtype=torch.float32)
    for name in ("positions", "numbers", "batch", "ptr", "cell", "pbc"):
        assert torch.equal(packed[name], getattr(batch, name)), name
    assert torch.all(packed["cell"][1] == 0)
    assert torch.equal(packed["cell"][0], torch.tensor(cu.cell[:], dtype=torch.float32))
    np.testing.assert_array_equal(packed["momenta"][:2].numpy(), cu.get_momenta())
    assert not packed["momenta"][2:].any()
    np.testing.assert_allclose(packed["masses"].numpy(), np.concatenate([cu.get_masses(), water.get_masses()]),
                               rtol=1e-7)
    assert packed["masses"].dtype == torch.float32 and packed["numbers"].dtype == torch.int64
    with pytest.raises(ValueError, match="no structures"):
        pack_atoms([], device="cpu")


def test_empty_collate():
    b = collate([], 5.0)
    assert b.num_structures == 0 and b.num_atoms == 0 and b.num_edges == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda(make_structures):
    b = collate(make_structures(4), 3.0).to(device="cuda", dtype=torch.float32)
    assert b.positions.device.type == "cuda" and b.positions.dtype == torch.float32
    assert b.energy.dtype == torch.float64 and b.senders.device.type == "cuda"
    c = Batch.from_atoms([bulk("Cu", "fcc", a=3.6)], cutoff=3.0, device="cuda")
    assert c.cell_shifts.device.type == "cuda" and c.num_edges == 12
