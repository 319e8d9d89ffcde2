"""Label lookup and stress / virial conventions in Structure.from_atoms and the ASE reader. Budget: < 2 s."""

import numpy as np
import pytest
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from data import DataError, Structure
from data.convert import read_structures


def periodic_atoms():
    return Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=[[3.6, 0, 0], [0.2, 3.6, 0], [0, 0.1, 3.6]], pbc=True)


def test_lookup_order_info_arrays_calc():
    atoms = periodic_atoms()
    atoms.info["e_dft"] = -3.0
    atoms.arrays["f_dft"] = np.ones((2, 3))
    s = Structure.from_atoms(atoms, energy_key="e_dft", forces_key="f_dft")
    assert s.energy == -3.0 and np.all(s.forces == 1.0) and s.stress is None
    assert Structure.from_atoms(atoms).energy is None


def test_stress_voigt_and_full():
    sym = np.array([[1.0, 0.4, 0.5], [0.4, 2.0, 0.6], [0.5, 0.6, 3.0]]) * 1e-3
    atoms = periodic_atoms()
    atoms.info["s6"] = full_3x3_to_voigt_6_stress(sym)  # ASE order xx yy zz yz xz xy
    atoms.info["s9"] = sym.ravel()
    np.testing.assert_allclose(Structure.from_atoms(atoms, stress_key="s6").stress, sym)
    np.testing.assert_array_equal(Structure.from_atoms(atoms, stress_key="s9").stress, sym)
    atoms.info["bad"] = np.ones(4)
    with pytest.raises(DataError, match="key 'bad': expected 6 .* or 9 components"):
        Structure.from_atoms(atoms, stress_key="bad", source="f.xyz", index=3)


def test_virial_to_stress_sign_and_volume():
    atoms = periodic_atoms()
    virial = np.diag([0.3, 0.2, 0.1])
    atoms.info["virial"] = virial.ravel()
    s = Structure.from_atoms(atoms)
    np.testing.assert_allclose(s.stress, -virial / atoms.get_volume())
    atoms.info["stress"] = np.zeros(6)  # an explicit stress wins over the virial
    assert np.all(Structure.from_atoms(atoms).stress == 0)
    molecule = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    molecule.info["virial"] = np.ones(9)
    with pytest.raises(DataError, match="key 'virial': virial given but the cell has zero volume"):
        Structure.from_atoms(molecule)


def test_extxyz_stress_key_and_config_type(tmp_path):
    text = (
        "2\n"
        'Lattice="3.6 0 0 0 3.6 0 0 0 3.6" Properties=species:S:1:pos:R:3:f:R:3 e=-7.5 '
        's="0.001 0 0 0 0.002 0 0 0 0.003" config_type=bulk pbc="T T T"\n'
        "Cu 0 0 0 0.1 0 0\nCu 1.8 1.8 0 -0.1 0 0\n"
    )
    src = tmp_path / "in.extxyz"
    src.write_text(text)
    (s,) = read_structures(src, energy_key="e", forces_key="f", stress_key="s", require=("energy", "forces"))
    assert s.energy == -7.5 and s.config_type == "bulk"
    np.testing.assert_array_equal(s.stress, np.diag([0.001, 0.002, 0.003]))
    assert s.source == str(src) and s.index == 0


def write_deepmd_system(root, periodic, frames=2, with_map=True):
    rng = np.random.default_rng(0)
    (root / "set.000").mkdir(parents=True)
    (root / "type.raw").write_text("0 1 1\n")
    if with_map:
        (root / "type_map.raw").write_text("O H\n")
    if not periodic:
        (root / "nopbc").write_text("")
    coord = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], float).ravel() + rng.normal(scale=0.01, size=(frames, 9))
    np.save(root / "set.000/coord.npy", coord)
    np.save(root / "set.000/energy.npy", rng.normal(size=frames))
    np.save(root / "set.000/force.npy", rng.normal(size=(frames, 9)))
    if periodic:
        np.save(root / "set.000/box.npy", np.tile((np.eye(3) * 5.0).ravel(), (frames, 1)))
        np.save(root / "set.000/virial.npy", np.tile(np.diag([1.0, 2.0, 3.0]).ravel(), (frames, 1)))


def test_deepmd_virial_nopbc_and_type_map(tmp_path):
    write_deepmd_system(tmp_path / "all" / "bulk", periodic=True)
    write_deepmd_system(tmp_path / "all" / "mol", periodic=False, with_map=False)
    with pytest.raises(DataError, match="mol: type_map.raw missing .* --type-map O,H"):
        read_structures(tmp_path / "all")
    structures = read_structures(tmp_path / "all", type_map=["O", "H"])
    assert [s.config_type for s in structures] == ["bulk", "bulk", "mol", "mol"]
    bulk, mol = structures[0], structures[2]
    assert bulk.pbc.all() and not mol.pbc.any() and np.all(mol.cell == 0)
    np.testing.assert_allclose(bulk.stress, -np.diag([1.0, 2.0, 3.0]) / 125.0)
    assert mol.stress is None
    np.testing.assert_array_equal(mol.numbers, [8, 1, 1])
