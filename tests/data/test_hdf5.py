"""HDF5 round trip, lazy fork-safe reading, atomic writes, format checks. Budget: < 5 s."""

import multiprocessing as mp
import os
import pickle

import h5py
import numpy as np
import pytest

from data import DataError, Structure, open_dataset, schema, write_dataset


def assert_same(a: Structure, b: Structure):
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.cell, b.cell)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert a.energy == b.energy
    for key in ("forces", "stress"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert a.weight == b.weight
    assert a.config_type == b.config_type


def test_round_trip(tmp_path, make_structures):
    structures = make_structures(9)
    path = write_dataset(tmp_path / "x.h5", structures, source="unit test")
    ds = open_dataset(path)
    assert len(ds) == len(structures)
    for i, s in enumerate(structures):
        got = ds[i]
        assert_same(s, got)
        assert got.source == str(path) and got.index == i
    assert_same(ds[-1], structures[-1])
    assert [s.config_type for s in ds[2:5]] == [s.config_type for s in structures[2:5]]
    with pytest.raises(IndexError, match="out of range"):
        ds[len(structures)]
    np.testing.assert_array_equal(ds.num_atoms, [len(s) for s in structures])


def test_layout_matches_schema(tmp_path, make_structures):
    structures = make_structures(4)
    path = write_dataset(tmp_path / "x.h5", structures)
    total = sum(len(s) for s in structures)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == schema.FORMAT
        assert f.attrs["format_version"] == schema.FORMAT_VERSION
        assert f.attrs["unit_energy"] == "eV" and f.attrs["unit_length"] == "Å"
        for field in schema.FIELDS:
            assert f[field.key].shape == schema.expected_shape(field.key, len(structures), total), field.key
            if field.dtype != "str":
                assert f[field.key].dtype == np.dtype(field.dtype), field.key
        np.testing.assert_array_equal(f["ptr"][()], np.cumsum([0] + [len(s) for s in structures]))
        # absent labels: mask False and NaN fill
        assert not f["has_energy"][1] and np.isnan(f["energy"][1])
        assert not f["has_forces"][2]


def _read_in_child(args):
    ds, index = args
    s = ds[index]
    return os.getpid(), s.positions.sum(), s.numbers.tolist()


def test_fork_safe_and_picklable(tmp_path, make_structures):
    structures = make_structures(8)
    ds = open_dataset(write_dataset(tmp_path / "x.h5", structures))
    ds[0]  # the parent opens its handle before forking
    parent_handle = ds._file
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(_read_in_child, [(ds, i) for i in range(len(structures))])
    for i, (pid, total, numbers) in enumerate(results):
        assert pid != os.getpid()
        assert total == structures[i].positions.sum() and numbers == structures[i].numbers.tolist()
    assert ds._file is parent_handle and ds._file.id.valid  # parent's handle untouched
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    assert_same(clone[3], structures[3])


def test_not_hdf5_names_file(tmp_path):
    bad = tmp_path / "text.h5"
    bad.write_text("this is not HDF5\n")
    with pytest.raises(DataError, match=f"{bad}.*not an HDF5 file"):
        open_dataset(bad)
    with pytest.raises(DataError, match="file not found"):
        open_dataset(tmp_path / "missing.h5")


def test_foreign_and_newer_files(tmp_path, make_structures):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not a tumbler dataset"):
        open_dataset(foreign)
    newer = write_dataset(tmp_path / "newer.h5", make_structures(2))
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = schema.FORMAT_VERSION + 1
    with pytest.raises(DataError, match="newer"):
        open_dataset(newer)


def test_failed_write_leaves_nothing(tmp_path, make_structures):
    structures = make_structures(3)
    structures[2].positions[0, 1] = np.nan
    with pytest.raises(DataError, match="structure -1: key 'positions': non-finite"):
        write_dataset(tmp_path / "out.h5", structures)
    assert list(tmp_path.iterdir()) == []
    # an existing file survives a failed overwrite untouched
    good = write_dataset(tmp_path / "out.h5", make_structures(2))
    before = good.read_bytes()
    with pytest.raises(DataError):
        write_dataset(good, structures)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_empty_dataset_round_trip(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "empty.h5", []))
    assert len(ds) == 0 and list(ds) == []


def test_to_atoms_carries_labels(make_structures):
    s = make_structures(1)[0]
    atoms = s.to_atoms()
    assert atoms.get_potential_energy() == s.energy
    np.testing.assert_array_equal(atoms.get_forces(), s.forces)
    back = Structure.from_atoms(atoms)
    assert_same(s, back)


def test_dataloader_workers(tmp_path, make_structures):
    import functools

    import torch

    from data import collate

    structures = make_structures(8, seed=4)
    ds = open_dataset(write_dataset(tmp_path / "x.h5", structures))
    ds[0]  # handle opened in the parent before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork",
                                         collate_fn=functools.partial(collate, cutoff=3.0))
    batches = list(loader)
    assert [b.num_structures for b in batches] == [3, 3, 2]
    assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(8))
    positions = torch.cat([b.positions for b in batches]).numpy()
    np.testing.assert_array_equal(positions, np.concatenate([s.positions for s in structures]))


def test_streamed_blocks(tmp_path, make_structures, monkeypatch):
    import data.hdf5

    monkeypatch.setattr(data.hdf5, "_BLOCK", 3)  # 8 structures -> blocks of 3, 3, 2
    structures = make_structures(8, seed=5)
    ds = open_dataset(write_dataset(tmp_path / "x.h5", (s for s in structures)))  # a generator streams
    assert len(ds) == 8
    for a, b in zip(structures, ds):
        assert_same(a, b)
    with h5py.File(ds.path, "r") as f:
        assert f.attrs["num_structures"] == 8 and f.attrs["num_atoms"] == sum(len(s) for s in structures)
    # an error in a later block still leaves nothing behind
    structures[7].energy = float("inf")
    with pytest.raises(DataError, match="key 'energy': non-finite"):
        write_dataset(tmp_path / "y.h5", iter(structures))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
