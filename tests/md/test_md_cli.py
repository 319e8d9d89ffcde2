"""md.py: config + CLI overrides, outputs, and clear errors for bad input (~15 s)."""

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule

import md
from potential.simulation.md_config import MDConfig, build_structure, load_config
from potential.simulation.md_output import LOG_COLUMNS
from potential.simulation.run import merge_options
from potential.simulation.ase_md import run_md

REPO = Path(__file__).resolve().parents[2]


def run_cli(argv, capsys):
    try:
        rc = md.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def test_config_with_cli_overrides_writes_log_and_trajectories(cu_model_file, tmp_path, capsys):
    ase.io.write(tmp_path / "cu.xyz", ase.build.bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2))
    (tmp_path / "md.yaml").write_text(
        f"model: {cu_model_file}\nstructure: cu.xyz\nensemble: nvt\nthermostat: bussi\n"
        "temperature: 400\nsteps: 1000\ninterval: 5\nprogress: false\n"
    )
    for traj in ("md.traj", "md.extxyz"):
        rc, err = run_cli(["--config", tmp_path / "md.yaml", "--steps", 20, "--log", tmp_path / "md.log",
                           "--trajectory", tmp_path / traj, "--seed", 7], capsys)
        assert rc == 0, err
        frames = ase.io.read(tmp_path / traj, ":")
        assert len(frames) == 5  # steps 0, 5, 10, 15, 20
        assert frames[-1].get_momenta().any() and np.isfinite(frames[-1].get_potential_energy())
    lines = (tmp_path / "md.log").read_text().splitlines()
    assert lines[0].split(",") == list(LOG_COLUMNS)
    rows = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert rows.shape == (5, len(LOG_COLUMNS))
    assert rows[-1, 0] == 20 and rows[-1, 1] == 20.0  # step, time (fs)
    assert np.isfinite(rows[:, 6]).all() and np.isfinite(rows[1:, 8]).all()  # pressure GPa, steps/s


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("ensemble: nve\ntemprature: 300\n")
    rc, err = run_cli(["--config", tmp_path / "bad.yaml"], capsys)
    assert rc == 2 and "'temprature'" in err
    with pytest.raises(ValueError, match="thermostat: expected one of langevin\\|bussi\\|nose-hoover.*got 'andersen'"):
        merge_options({"thermostat": "andersen"}, {}, "x")


def test_quickstart_config_is_valid():
    d = load_config(REPO / "configs" / "md_quickstart.yaml")
    cfg = MDConfig.from_dict(d)
    atoms, _ = build_structure(cfg.structure)
    assert cfg.model == "runs/quickstart/model.pt" and len(atoms) == 108 and set(atoms.numbers) == {29}


@pytest.mark.parametrize("timestep", [0.0, -1.0])
def test_nonpositive_timestep(cu_model_file, tmp_path, capsys, timestep):
    rc, err = run_cli(["--model", cu_model_file, "--structure", "x.xyz", "--timestep", timestep], capsys)
    assert rc == 2 and "timestep: expected a positive float" in err


def test_missing_model_file(tmp_path, capsys):
    ase.io.write(tmp_path / "cu.xyz", ase.build.bulk("Cu", cubic=True))
    rc, err = run_cli(["--model", tmp_path / "nope.pt", "--structure", tmp_path / "cu.xyz"], capsys)
    assert rc == 2 and "model file not found" in err and "nope.pt" in err


@pytest.mark.parametrize("kind", ["torch", "text"])
def test_model_file_from_another_program(tmp_path, capsys, kind):
    path = tmp_path / "other.pt"
    if kind == "torch":
        torch.save({"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {}}, path)  # e.g. a Lightning checkpoint
    else:
        path.write_text("not a model\n")
    ase.io.write(tmp_path / "cu.xyz", ase.build.bulk("Cu", cubic=True))
    rc, err = run_cli(["--model", path, "--structure", tmp_path / "cu.xyz", "--steps", 1], capsys)
    assert rc == 2 and "other.pt" in err


def test_unknown_element(cu_model, cu_model_file, tmp_path, capsys):
    atoms = ase.build.bulk("Cu", cubic=True)
    atoms.numbers[0] = 79  # Au
    ase.io.write(tmp_path / "cuau.xyz", atoms)
    rc, err = run_cli(["--model", cu_model_file, "--structure", tmp_path / "cuau.xyz"], capsys)
    assert rc == 2 and "Au (Z=79)" in err and "Cu" in err


def test_npt_needs_a_periodic_structure(cu_model):
    from potential import Calculator

    atoms = molecule("H2O")
    atoms.numbers[:] = 29
    atoms.positions *= 2.0  # Cu3 "molecule": no cell, no stress
    with pytest.raises(ValueError, match="npt needs stress.*3D-periodic"):
        run_md(atoms, MDConfig(ensemble="npt", steps=2, progress=False), calculator=Calculator(cu_model))


def test_structure_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'cubc'"):
        build_structure({"bulk": "Cu", "cubc": True})
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        build_structure("missing.xyz")
    atoms, _ = build_structure({"molecule": "H2O", "vacuum": 3.0})
    assert len(atoms) == 3 and not atoms.pbc.any()


def test_molecule_nve_logs_nan_pressure(cu_model, make_cu, tmp_path):
    from potential import Calculator

    cluster = make_cu(1)
    cluster.pbc = False
    cluster.cell = None  # a free Cu4 cluster: no cell, no stress, no pressure
    cfg = MDConfig(ensemble="nve", temperature=100.0, steps=10, interval=5, log=str(tmp_path / "m.log"),
                   trajectory=str(tmp_path / "m.xyz"), progress=False)
    res = run_md(cluster, cfg, calculator=Calculator(cu_model))
    assert [r["step"] for r in res.rows] == [0, 5, 10]
    assert all(np.isnan(r["pressure_GPa"]) and np.isnan(r["volume_A3"]) for r in res.rows)
    assert len(ase.io.read(tmp_path / "m.xyz", ":")) == 3
