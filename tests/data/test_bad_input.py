"""Bad input gives a DataError naming file, structure index and key; nothing is written. Budget: < 3 s."""

import re

import h5py
import numpy as np
import pytest

from data import DataError, Structure, write_dataset
from data.convert import convert, main

GOOD = """2
Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 pbc="F F F"
H 0.0 0.0 0.0 0.1 0.0 0.0
H 0.0 0.0 0.74 -0.1 0.0 0.0
"""


def frame(energy="-1.0", forces=("0.1 0 0", "-0.1 0 0"), positions=("0 0 0", "0 0 0.74"), lattice=None):
    props = "species:S:1:pos:R:3" + (":forces:R:3" if forces else "")
    head = f"Properties={props}" + (f" energy={energy}" if energy is not None else "")
    head += f' Lattice="{lattice}" pbc="T T T"' if lattice else ' pbc="F F F"'
    rows = [f"H {p}" + (f" {f}" if forces else "") for p, f in zip(positions, forces or [""] * len(positions))]
    return f"{len(rows)}\n{head}\n" + "".join(r + "\n" for r in rows)


def run_bad(tmp_path, text, pattern, name="in.xyz", **kwargs):
    src = tmp_path / name
    src.write_text(text)
    out = tmp_path / "out" / "train.h5"
    with pytest.raises(DataError, match=pattern) as info:
        convert(src, out, **kwargs)
    assert str(src) in str(info.value)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temporary file left
    return str(info.value)


def test_missing_energy(tmp_path):
    msg = run_bad(tmp_path, GOOD + frame(energy=None), r"structure 1: key 'energy': energy not found")
    assert "available keys" in msg and "forces" in msg


def test_missing_forces_user_key(tmp_path):
    text = GOOD.replace("forces", "forces_dft") + frame()
    run_bad(tmp_path, text, r"structure 1: key 'forces_dft': forces not found", forces_key="forces_dft")


def test_missing_forces_but_allowed(tmp_path):
    src = tmp_path / "in.xyz"
    src.write_text(GOOD + frame(forces=None))
    structures = convert(src, tmp_path / "out.h5", allow_missing=["forces"])
    assert structures[1].forces is None


@pytest.mark.parametrize("energy, forces, key", [
    ("nan", ("0.1 0 0", "-0.1 0 0"), "energy"),
    ("-1.0", ("inf 0 0", "-0.1 0 0"), "forces"),
    ("-1.0", ("0.1 0 0", "-0.1 nan 0"), "forces"),
])
def test_non_finite(tmp_path, energy, forces, key):
    run_bad(tmp_path, GOOD + frame(energy=energy, forces=forces), rf"structure 1: key '{key}': non-finite")


def test_non_finite_position(tmp_path):
    run_bad(tmp_path, GOOD + frame(positions=("0 0 0", "0 nan 0.74")), r"structure 1: key 'positions': non-finite")


def test_coincident_atoms(tmp_path):
    run_bad(tmp_path, GOOD + frame(positions=("0.3 0.3 0.3", "0.3 0.3 0.3")),
            r"structure 1: key 'positions': atoms 0 and 1 are at the same position")


def test_coincident_periodic_image(tmp_path):
    text = frame(positions=("0 0 0", "3 0 0"), lattice="3 0 0 0 3 0 0 0 3")
    run_bad(tmp_path, text, r"structure 0: key 'positions': atoms 0 and 1 are at the same position .*cell shift")


def test_empty_structure(tmp_path):
    empty = '0\nProperties=species:S:1:pos:R:3 energy=0.0 pbc="F F F"\n'
    run_bad(tmp_path, GOOD + empty, r"structure 1: key 'numbers': empty structure")


def test_forces_shape_mismatch_ani(tmp_path):
    src = tmp_path / "ani.h5"
    with h5py.File(src, "w") as f:
        g = f.create_group("set/mol-0")
        g["coordinates"] = np.random.default_rng(0).random((4, 3, 3)) * 3
        g["species"] = np.array([b"C", b"H", b"H"])
        g["energies"] = np.zeros(4)
        g["forces"] = np.zeros((4, 2, 3))
    out = tmp_path / "out.h5"
    with pytest.raises(DataError, match=rf"{re.escape(str(src))}: molecule 'set/mol-0': key 'forces': shape \(4, 2, 3\)"):
        convert(src, out)
    assert list(tmp_path.iterdir()) == [src]


def test_forces_shape_mismatch_deepmd(tmp_path):
    system = tmp_path / "sys"
    (system / "set.000").mkdir(parents=True)
    (system / "type.raw").write_text("0\n1\n1\n")
    (system / "type_map.raw").write_text("O\nH\n")
    np.save(system / "set.000/coord.npy", np.random.default_rng(0).random((2, 9)) * 5)
    np.save(system / "set.000/box.npy", np.tile(np.eye(3).ravel() * 10, (2, 1)))
    np.save(system / "set.000/energy.npy", np.zeros(2))
    np.save(system / "set.000/force.npy", np.zeros((2, 6)))
    with pytest.raises(DataError, match=r"set.000: force.npy has shape \(2, 6\), expected \(2, 9\)"):
        convert(system, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_forces_shape_mismatch_structure(tmp_path):
    s = Structure(positions=np.zeros((2, 3)) + [[0, 0, 0], [0, 0, 1]], numbers=[1, 1], energy=0.0,
                  forces=np.zeros((3, 3)), source="mine.xyz", index=7)
    with pytest.raises(DataError, match=r"mine.xyz: structure 7: key 'forces': expected shape \(2, 3\), got \(3, 3\)"):
        write_dataset(tmp_path / "out.h5", [s])
    assert list(tmp_path.iterdir()) == []


def test_not_hdf5_given_as_hdf5(tmp_path, capsys):
    src = tmp_path / "data.h5"
    src.write_text(GOOD)
    with pytest.raises(DataError, match=rf"{re.escape(str(src))}: not an HDF5 file"):
        convert(src, tmp_path / "out.h5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        convert(src, tmp_path / "out.h5", format="ani")
    # the CLI reports the same message and exits with status 2
    assert main([str(src), str(tmp_path / "out.h5")]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]


def test_unreadable_text(tmp_path):
    run_bad(tmp_path, "this is not a structure file\n", r"ASE could not read the file")
