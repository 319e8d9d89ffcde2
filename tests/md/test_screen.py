"""screen.py and potential.evaluate: batching, bad structures, relaxation, output formats (~30 s)."""

import csv

import ase
import ase.io
import h5py
import numpy as np
import pytest
from ase.build import bulk, molecule

import screen
from potential.evaluate import evaluate
from potential.simulation.screening import screen as run_screen


def mixed_structures():
    """Periodic and molecular Cu/O structures of different sizes (all valid for random_model)."""
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    a.rattle(0.05, seed=1)
    b = bulk("Cu", "fcc", a=3.6)  # 1-atom primitive cell: self-images as neighbors
    c = molecule("H2O")
    c.numbers[:] = [8, 29, 29]
    c.positions *= 2.0
    d = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 2, 2))
    d.numbers[::3] = 8
    d.rattle(0.05, seed=2)
    e = bulk("Cu", "fcc", a=3.6, cubic=True)
    e.pbc = [True, True, False]  # slab-like: no stress
    return [a, b, c, d, e]


def broken_file(path):
    good1 = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    gold = bulk("Au", "fcc", a=4.08, cubic=True)  # element unknown to the model
    overlap = bulk("Cu", "fcc", a=3.6, cubic=True)
    overlap.positions[1] = overlap.positions[0] + [0.1, 0.0, 0.0]
    good2 = molecule("H2O")
    good2.numbers[:] = [8, 29, 29]
    good2.positions *= 2.0
    ase.io.write(path, [good1, gold, overlap, ase.Atoms(), good2], format="extxyz")


@pytest.mark.parametrize("batch_atoms", [1, 10, 100000])
def test_batched_equals_calculator_one_at_a_time(random_model, batch_atoms):
    from potential import Calculator

    structures = mixed_structures()
    results = evaluate(structures, random_model, batch_atoms=batch_atoms)
    for i, (atoms, r) in enumerate(zip(structures, results)):
        atoms = atoms.copy()
        atoms.calc = Calculator(random_model)
        assert r["index"] == i and r["error"] is None and r["num_atoms"] == len(atoms)
        assert abs(r["energy"] - atoms.get_potential_energy()) < 1e-9
        assert abs(r["energy_per_atom"] - r["energy"] / len(atoms)) < 1e-12
        np.testing.assert_allclose(r["forces"], atoms.get_forces(), rtol=0, atol=1e-9)
        if atoms.pbc.all():
            np.testing.assert_allclose(r["stress"], atoms.get_stress(voigt=False), rtol=0, atol=1e-9)
        else:
            assert r["stress"] is None
        assert r["max_force"] == pytest.approx(np.linalg.norm(atoms.get_forces(), axis=1).max())


def test_evaluate_raises_by_default_on_bad_structure(random_model):
    with pytest.raises(ValueError, match=r"structure 1: element\(s\) Au \(Z=79\) unknown"):
        evaluate([bulk("Cu"), bulk("Au")], random_model)


def test_broken_structures_are_recorded_and_the_rest_go_on(random_model, random_model_file, tmp_path):
    broken_file(tmp_path / "in.extxyz")
    out = tmp_path / "out.h5"
    rc = screen.main(["--model", str(random_model_file), "--structures", str(tmp_path / "in.extxyz"),
                      "--out", str(out), "--batch-atoms", "8", "--no-progress"])
    assert rc == 0
    with h5py.File(out) as f:
        assert f.attrs["format"] == "tumbler-screen"
        errors = [e.decode() if isinstance(e, bytes) else e for e in f["error"][()]]
        energy, ptr, forces = f["energy"][()], f["ptr"][()], f["forces"][()]
        assert list(f["num_atoms"][()]) == [8, 4, 4, 0, 3]
    assert errors[0] == "" and errors[4] == ""
    assert "Au (Z=79) unknown" in errors[1]
    assert "overlapping atoms" in errors[2]
    assert "empty" in errors[3]
    assert np.isfinite(energy[[0, 4]]).all() and np.isnan(energy[[1, 2, 3]]).all()
    frames = ase.io.read(tmp_path / "in.extxyz", ":")
    expect = evaluate([frames[0], frames[4]], random_model)
    assert energy[0] == pytest.approx(expect[0]["energy"], abs=1e-9)
    np.testing.assert_allclose(forces[ptr[4] : ptr[5]], expect[1]["forces"], atol=1e-9)


def test_relax_lowers_energy_and_meets_fmax(cu_model, make_cu, tmp_path):
    atoms = [make_cu(2, rattle=0.08, seed=s) for s in range(2)]
    final, results = run_screen(atoms, cu_model, relax=True, fmax=0.05, max_steps=300)
    for a, r in zip(final, results):
        assert r["error"] is None and r["converged"], r
        assert r["max_force"] < 0.05 and r["energy"] < r["initial_energy"] - 0.01
        assert 0 < r["steps"] <= 300
        assert not np.allclose(a.positions, make_cu(2).positions, atol=1e-3)  # relaxed geometry recorded
    # cell relaxation of a strained cell moves the volume towards equilibrium and meets fmax
    strained = make_cu(1, a=3.68)  # EMT's lattice constant is 3.59 Å
    final, results = run_screen([strained], cu_model, relax=True, relax_cell=True, optimizer="bfgs", fmax=0.02)
    assert results[0]["converged"] and final[0].get_volume() < strained.get_volume() - 1.0
    # FrechetCellFilter's cell force is the virial per atom: fmax bounds it too
    assert np.abs(results[0]["stress"]).max() * final[0].get_volume() / len(strained) < 0.03


@pytest.mark.parametrize("suffix", [".extxyz", ".csv"])
def test_cli_relax_outputs(cu_model_file, make_cu, tmp_path, suffix):
    ase.io.write(tmp_path / "in.xyz", [make_cu(1, rattle=0.05, seed=s) for s in range(3)] + [bulk("Au")])
    out = tmp_path / f"out{suffix}"
    rc = screen.main(["--model", str(cu_model_file), "--structures", str(tmp_path / "in.xyz"), "--out", str(out),
                      "--relax", "--fmax", "0.05", "--no-progress"])
    assert rc == 0
    if suffix == ".csv":
        rows = list(csv.DictReader(open(out)))
        assert [r["converged"] for r in rows] == ["True", "True", "True", "False"]
        assert float(rows[0]["energy_eV"]) < float(rows[0]["initial_energy_eV"]) and "Au" in rows[3]["error"]
    else:
        frames = ase.io.read(out, ":")
        assert len(frames) == 4 and all(f.info["converged"] for f in frames[:3])
        assert np.linalg.norm(frames[0].get_forces(), axis=1).max() < 0.05
        assert "unknown" in frames[3].info["error"]


def test_cli_errors(random_model_file, tmp_path, capsys):
    ase.io.write(tmp_path / "in.xyz", bulk("Cu"))
    for argv, needle in [
        (["--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o.h5")], "model file not found"),
        (["--model", str(random_model_file), "--out", str(tmp_path / "o.txt")], "suffix must be one of"),
    ]:
        with pytest.raises(SystemExit) as e:
            screen.main(argv + ["--structures", str(tmp_path / "in.xyz")])
        assert e.value.code == 2 and needle in capsys.readouterr().err
    with pytest.raises(SystemExit):
        screen.main(["--model", str(random_model_file), "--structures", str(tmp_path / "x.xyz"),
                     "--out", str(tmp_path / "o.h5")])
    assert "structures file not found" in capsys.readouterr().err


def test_hdf5_dataset_in_hdf5_out(random_model, random_model_file, tmp_path):
    from data import Structure, write_dataset

    structures = [Structure.from_atoms(a) for a in mixed_structures()]
    write_dataset(tmp_path / "in.h5", structures)
    out = tmp_path / "out.hdf5"
    assert screen.main(["--model", str(random_model_file), "--structures", str(tmp_path / "in.h5"), "--out", str(out),
                        "--batch-atoms", "16", "--threads", "1", "--no-progress"]) == 0
    expect = evaluate(structures, random_model)
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["energy"][()], [r["energy"] for r in expect], rtol=0, atol=1e-9)
        np.testing.assert_allclose(f["forces"][()], np.concatenate([r["forces"] for r in expect]), rtol=0, atol=1e-9)
        np.testing.assert_array_equal(f["numbers"][()], np.concatenate([s.numbers for s in structures]))
        assert np.isfinite(f["stress"][0]).all() and np.isnan(f["stress"][2]).all()  # periodic / molecule
