"""Committees through the command lines: train.py (training.committee), md.py (the max force spread column and
--uncertainty-threshold) and screen.py (the uncertainty columns). CPU, ~15 s."""

import csv

import ase.io
import h5py
import numpy as np
import pytest
import torch

import md
import screen
import train
from potential import evaluate, load_model, save_model


def _cli(module, argv, capsys):
    try:
        rc = module.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def committee_files(cu_model, tmp_path_factory):
    """The EMT-fitted Cu model and two copies with perturbed weights: three members that disagree a little."""
    folder = tmp_path_factory.mktemp("committee")
    paths = [folder / "model_0.pt"]
    save_model(cu_model, paths[0])
    for k in (1, 2):
        member = load_model(paths[0])
        torch.manual_seed(k)
        with torch.no_grad():
            for p in member.parameters():
                p.mul_(1 + 0.05 * torch.randn_like(p))
        paths.append(folder / f"model_{k}.pt")
        save_model(member, paths[-1])
    return paths


def test_train_py_writes_a_committee(tmp_path, capsys):
    import data
    from ase.build import bulk
    from ase.calculators.emt import EMT

    structures = []
    for k in range(8):  # rattled 4-atom Cu cells labelled by EMT
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        structures.append(data.Structure(positions=atoms.positions, numbers=atoms.numbers, cell=np.array(atoms.cell),
                                         pbc=atoms.pbc, energy=atoms.get_potential_energy(), forces=atoms.get_forces()))
    data.write_dataset(tmp_path / "cu.h5", structures)
    (tmp_path / "c.yaml").write_text(
        f"data: {{train: {tmp_path / 'cu.h5'}, valid_fraction: 0.25}}\n"
        "model: {channels: 4, lmax: 0, lmax_sh: 1, correlation: 1, num_interactions: 1, r_max: 3.0, num_bessel: 4,"
        " radial_hidden: [4], readout_hidden: 4}\n"
        "training: {batch_size: 3, max_epochs: 1, committee: 2, scheduler: none}\n"
        f"output_dir: {tmp_path / 'run'}\ndevice: cpu\nnum_threads: 1\n")
    rc, err = _cli(train, ["--config", tmp_path / "c.yaml"], capsys)
    assert rc == 0, err
    run = tmp_path / "run"
    members = [load_model(run / f"model_{k}.pt") for k in range(2)]
    assert "bootstrap resample" in (run / "member_1" / "train.log").read_text()
    valid = [(run / f"member_{k}" / "config.yaml").read_text() for k in range(2)]
    assert "seed: 0" in valid[0] and "seed: 1" in valid[1]  # different seeds, so different splits and inits
    w0, w1 = (dict(m.named_parameters())["embedding.weight"] for m in members)
    assert not torch.equal(w0, w1)
    summary = (run / "committee.json").read_text()
    assert "model_1.pt" in summary


def test_md_logs_the_spread_and_stops_or_writes(committee_files, make_cu, tmp_path, capsys):
    ase.io.write(tmp_path / "cu.xyz", make_cu(repeat=2, rattle=0.05))
    common = ["--model", *committee_files, "--structure", tmp_path / "cu.xyz", "--steps", 6, "--interval", 2,
              "--no-progress", "--threads", 1]
    rc, err = _cli(md, common + ["--log", tmp_path / "md.log"], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(open(tmp_path / "md.log")))
    spreads = np.array([float(r["max_force_spread_eVA"]) for r in rows])
    assert len(rows) == 4 and (spreads > 0).all()

    atoms = make_cu(repeat=2, rattle=0.05)
    ref = evaluate([atoms], models=committee_files)[0]["max_force_spread"]
    assert spreads[0] == pytest.approx(ref, abs=1e-5)  # step 0: the input structure (log: 5 decimals)

    frames = tmp_path / "uncertain.extxyz"
    low = 0.5 * float(spreads.min())  # every step is above it
    rc, err = _cli(md, common + ["--uncertainty-threshold", low, "--uncertainty-frames", frames], capsys)
    assert rc == 0, err
    assert "stopped at step 0" in err
    (frame,) = ase.io.read(frames, ":")
    assert frame.info["max_force_spread"] == pytest.approx(ref, rel=1e-6)  # the .xyz input has 8 decimals
    assert frame.arrays["force_spread"].shape == (len(atoms),)

    rc, err = _cli(md, common + ["--uncertainty-threshold", low, "--uncertainty-action", "write",
                                 "--uncertainty-frames", frames], capsys)
    assert rc == 0, err
    assert [f.info["step"] for f in ase.io.read(frames, ":")] == list(range(7))  # steps 0..6, none stopped

    rc, err = _cli(md, common + ["--uncertainty-threshold", 1e3, "--uncertainty-frames", frames], capsys)
    assert rc == 0 and "stopped" not in err and not frames.exists()


def test_md_uncertainty_needs_a_committee(committee_files, make_cu, tmp_path, capsys):
    ase.io.write(tmp_path / "cu.xyz", make_cu(repeat=1))
    rc, err = _cli(md, ["--model", committee_files[0], "--structure", tmp_path / "cu.xyz", "--steps", 1,
                        "--uncertainty-threshold", 0.1], capsys)
    assert rc == 2 and "uncertainty_threshold" in err and "needs a committee" in err
    rc, err = _cli(md, ["--model", *committee_files, "--structure", tmp_path / "cu.xyz", "--steps", 1,
                        "--engine", "gpu"], capsys)
    assert rc == 2 and "committee" in err and "--engine ase" in err


def test_screen_writes_uncertainty_columns(committee_files, make_cu, tmp_path, capsys):
    structures = [make_cu(repeat=1, rattle=0.05, seed=k) for k in range(3)]
    ase.io.write(tmp_path / "in.xyz", structures)
    ref = evaluate(ase.io.read(tmp_path / "in.xyz", ":"), models=committee_files)  # as rounded in the file
    rc, err = _cli(screen, ["--model", *committee_files, "--structures", tmp_path / "in.xyz",
                            "--out", tmp_path / "out.h5", "--no-progress"], capsys)
    assert rc == 0, err
    with h5py.File(tmp_path / "out.h5") as f:
        assert np.allclose(f["max_force_spread"][:], [r["max_force_spread"] for r in ref], rtol=1e-9, atol=0)
        assert np.allclose(f["energy_per_atom_std"][:], [r["energy_per_atom_std"] for r in ref], rtol=1e-9, atol=0)
        assert f["force_spread"].shape == (12,)
    rc, err = _cli(screen, ["--model", *committee_files, "--structures", tmp_path / "in.xyz",
                            "--out", tmp_path / "out.csv", "--no-progress", "--relax", "--max-steps", 3], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert all(float(r["max_force_spread_eV_A"]) > 0 for r in rows)
