"""Every file in ../shared/data converts and reads back exactly. Budget: < 25 s.

Reference values are taken straight from the raw files (ase.io.read, h5py, numpy,
json) and compared bitwise with what comes back from the converted HDF5 file. Large
files are converted in part (--limit) to keep CI fast.
"""

import json

import ase.io
import h5py
import numpy as np
import pytest
from ase.units import GPa, Bohr, Hartree

from data import DataError, open_dataset
from data.convert import main

pytestmark = pytest.mark.shared_data

# file (relative to shared/data) -> (CLI options, limit)
XYZ_CASES = {
    "3BPA/iso_atoms.xyz": ([], None),
    "3BPA/train_300K.xyz": ([], 60),
    "3BPA/train_mixedT.xyz": ([], 30),
    "AcAc/isolated_atoms.xyz": ([], None),
    "AcAc/train_300K.xyz": ([], 60),
    "Si_tiny/Si_tiny.xyz": (["--energy-key", "dft_energy", "--forces-key", "dft_force", "--virial-key", "dft_virial"], None),
    "TiAl/TiAl_tutorial.xyz": (["--forces-key", "force"], None),
    "aspirin/rmd17_aspirin_train.xyz": ([], 60),
    "ethanol/isolated_atoms.xyz": ([], None),
    "ethanol/train.xyz": ([], 60),
    "solvent_xtb/solvent_xtb_train_20.xyz": (["--energy-key", "energy_xtb", "--forces-key", "forces_xtb"], None),
    "solvent_xtb/solvent_xtb_train_50.xyz": (["--energy-key", "energy_xtb", "--forces-key", "forces_xtb"], None),
    "solvent_xtb/solvent_xtb_train_200.xyz": (["--energy-key", "energy_xtb", "--forces-key", "forces_xtb"], 40),
    "zuo2020/Cu_train.xyz": (["--forces-key", "force"], 20),
    "zuo2020/Mo_train.xyz": (["--forces-key", "force"], 20),
    "zuo2020/Si_train.xyz": (["--forces-key", "force"], 20),
}
OTHER_CASES = {
    "zuo2020/Si_training_with_stress.json",
    "water_deepmd/data",
    "alkane_ani_h5/C2H6_DFT+Force_NMS.h5",
    "alkane_ani_h5/gdb_HC_s01.h5",
}


def convert(src, out, options=(), limit=None):
    argv = [str(src), str(out), *options] + ([] if limit is None else ["--limit", str(limit)])
    assert main(argv) == 0
    return open_dataset(out)


def raw_label(atoms, key):
    for store in (atoms.info, atoms.arrays, atoms.calc.results if atoms.calc else {}):
        if key in store:
            return store[key]
    return None


def test_every_shared_file_is_covered(shared_dir):
    found = {str(p.relative_to(shared_dir)) for ext in ("xyz", "h5", "json") for p in shared_dir.rglob(f"*.{ext}")}
    found |= {str(p.relative_to(shared_dir).parent.parent) for p in shared_dir.rglob("type.raw")}
    found = {f for f in found if not f.startswith("water_deepmd/data/")}
    assert found == set(XYZ_CASES) | OTHER_CASES


@pytest.mark.parametrize("name", sorted(XYZ_CASES))
def test_extxyz_round_trip(shared_dir, tmp_path, name):
    options, limit = XYZ_CASES[name]
    ds = convert(shared_dir / name, tmp_path / "out.h5", options, limit)
    keys = dict(zip(options[::2], options[1::2]))
    frames = ase.io.read(shared_dir / name, index=":" if limit is None else f":{limit}")
    assert len(ds) == len(frames)
    for k, atoms in enumerate(frames):
        s = ds[k]
        np.testing.assert_array_equal(s.positions, atoms.positions)
        np.testing.assert_array_equal(s.numbers, atoms.numbers)
        np.testing.assert_array_equal(s.pbc, atoms.pbc)
        np.testing.assert_array_equal(s.cell, np.array(atoms.cell[:]))
        assert s.energy == raw_label(atoms, keys.get("--energy-key", "energy"))
        forces = raw_label(atoms, keys.get("--forces-key", "forces"))
        if forces is None:
            assert len(atoms) == 1 and s.forces is None
        else:
            np.testing.assert_array_equal(s.forces, forces)
        virial = raw_label(atoms, keys.get("--virial-key", "virial"))
        if virial is None:
            assert s.stress is None
        else:  # virial (eV) -> stress = -virial / V
            np.testing.assert_array_equal(s.stress, -np.reshape(virial, (3, 3)) / abs(np.linalg.det(atoms.cell[:])))
        assert s.config_type == atoms.info.get("config_type", "Default")


def test_isolated_atom_config_type_kept(shared_dir, tmp_path):
    ds = convert(shared_dir / "solvent_xtb/solvent_xtb_train_20.xyz", tmp_path / "out.h5",
                 ["--energy-key", "energy_xtb", "--forces-key", "forces_xtb"])
    isolated = [s for s in ds if s.config_type == "IsolatedAtom"]
    assert len(isolated) == 5 and all(len(s) == 1 and s.energy is not None for s in isolated)


def test_mlearn_json_stress(shared_dir, tmp_path):
    src = shared_dir / "zuo2020/Si_training_with_stress.json"
    ds = convert(src, tmp_path / "out.h5")
    records = json.loads(src.read_text())
    assert len(ds) == len(records) == 214
    for k in (0, 100, 213):
        s, rec = ds[k], records[k]
        np.testing.assert_array_equal(s.positions, [site["xyz"] for site in rec["structure"]["sites"]])
        np.testing.assert_array_equal(s.cell, rec["structure"]["lattice"]["matrix"])
        assert s.energy == rec["outputs"]["energy"] and s.config_type == rec["group"]
        np.testing.assert_array_equal(s.forces, rec["outputs"]["forces"])
        xx, yy, zz, xy, yz, zx = rec["outputs"]["virial_stress"]
        np.testing.assert_array_equal(s.stress, -np.array([[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]]) * 0.1 * GPa)
    # sign: a cell compressed along x is under compression, negative stress in ASE's convention
    compressed = [s for s, r in zip(ds, records) if r["description"] == "Si 2x2x2 cell, mode 0, strain -0.1"][0]
    assert compressed.stress[0, 0] < 0


def test_deepmd(shared_dir, tmp_path):
    src = shared_dir / "water_deepmd/data"
    ds = convert(src, tmp_path / "out.h5")
    assert len(ds) == 400
    k = 0
    for system in sorted(p.parent for p in src.rglob("type.raw")):
        types = np.loadtxt(system / "type.raw", dtype=int)
        expected_numbers = np.where(types == 0, 8, 1)  # type_map: O H
        for set_dir in sorted(system.glob("set.*")):
            coord = np.load(set_dir / "coord.npy").astype(np.float64)
            energy = np.load(set_dir / "energy.npy").astype(np.float64)
            force = np.load(set_dir / "force.npy").astype(np.float64)
            box = np.load(set_dir / "box.npy").astype(np.float64)
            for f in (0, len(coord) - 1):
                s = ds[k + f]
                np.testing.assert_array_equal(s.positions, coord[f].reshape(-1, 3))
                np.testing.assert_array_equal(s.numbers, expected_numbers)
                np.testing.assert_array_equal(s.forces, force[f].reshape(-1, 3))
                np.testing.assert_array_equal(s.cell, box[f].reshape(3, 3))
                assert s.energy == energy[f] and s.pbc.all() and s.stress is None
                assert s.config_type == system.name
            k += len(coord)
    assert k == 400


def test_ani_units(shared_dir, tmp_path):
    src = shared_dir / "alkane_ani_h5/C2H6_DFT+Force_NMS.h5"
    ds = convert(src, tmp_path / "out.h5", limit=300)
    assert len(ds) == 300
    with h5py.File(src, "r") as f:
        names = sorted(f["gdb11_s02"])
        first = f["gdb11_s02"][names[0]]
        count = first["coordinates"].shape[0]
        for k in (0, 1, count - 1, count):
            group = f["gdb11_s02"][names[k // count]]
            s = ds[k]
            np.testing.assert_array_equal(s.positions, group["coordinates"][k % count])
            assert s.energy == group["energies"][k % count] * Hartree
            np.testing.assert_array_equal(s.forces, group["forces"][k % count] * (Hartree / Bohr))
            np.testing.assert_array_equal(s.numbers, [6, 6, 1, 1, 1, 1, 1, 1])
            assert not s.pbc.any() and s.config_type == "gdb11_s02"


def test_ani_forces_are_hartree_per_bohr(shared_dir, tmp_path):
    """Finite-difference check behind the unit choice: dE ~ -F . dx between near conformers (eV, Å)."""
    ds = convert(shared_dir / "alkane_ani_h5/C2H6_DFT+Force_NMS.h5", tmp_path / "out.h5", limit=252)
    x = np.stack([s.positions for s in ds])
    e = np.array([s.energy for s in ds])
    f = np.stack([s.forces for s in ds])
    d = np.linalg.norm((x[:, None] - x[None]).reshape(len(x), len(x), -1), axis=-1)
    i, j = np.nonzero(np.triu((d > 1e-6) & (d < 0.1), 1))
    assert len(i) > 50
    predicted = -(0.5 * (f[i] + f[j]) * (x[j] - x[i])).sum(axis=(1, 2))
    slope = (predicted * (e[j] - e[i])).sum() / (predicted**2).sum()
    assert slope == pytest.approx(1.0, abs=0.05)  # Hartree/Å would give 1/1.89


def test_ani_without_forces(shared_dir, tmp_path):
    src = shared_dir / "alkane_ani_h5/gdb_HC_s01.h5"
    with pytest.raises(DataError, match=r"gdb_HC_s01.h5: structure 0: key 'forces': forces not found"):
        from data.convert import convert as run
        run(src, tmp_path / "out.h5", limit=10)
    assert not (tmp_path / "out.h5").exists()
    ds = convert(src, tmp_path / "out.h5", ["--allow-missing", "forces"], limit=200)
    with h5py.File(src, "r") as f:
        group = f["gdb11_s01/gdb11_s01-0"]
        np.testing.assert_array_equal(ds[199].positions, group["coordinates"][199].astype(np.float64))
        assert ds[199].energy == group["energies"][199] * Hartree
    assert ds[0].forces is None and ds[0].config_type == "gdb11_s01"
