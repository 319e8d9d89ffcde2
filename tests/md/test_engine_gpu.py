"""md.py / screen.py --engine gpu: the device-resident engine behind the same CLIs (runs eagerly on the CPU).

NVE is deterministic, so the engine's log must equal ASE's velocity Verlet line for line; stochastic thermostats
differ in their random numbers, so those are only checked to run and log. Batched FIRE must land where ASE's
FIRE lands. (~15 s)
"""

import ase.io
import numpy as np
import pytest

import md
import screen
from potential.simulation.md_config import MDConfig
from potential.simulation.md_output import LOG_COLUMNS
from potential.simulation.run import run_from_config


def read_log(path):
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(LOG_COLUMNS)
    return np.array([[float(x) for x in line.split(",")] for line in lines[1:]])


def test_nve_engine_log_equals_ase(cu_model_file, make_cu, tmp_path):
    ase.io.write(tmp_path / "cu.xyz", make_cu(repeat=2, rattle=0.05, seed=3))
    common = dict(model=str(cu_model_file), structure=str(tmp_path / "cu.xyz"), ensemble="nve", temperature=600.0,
                  timestep=2.0, steps=40, interval=10, seed=5, progress=False)
    logs = {}
    for engine in ("ase", "gpu"):
        log = tmp_path / f"{engine}.log"
        result = run_from_config(MDConfig(engine=engine, log=str(log), trajectory=str(tmp_path / f"{engine}.traj"),
                                          **common))
        logs[engine] = read_log(log)
        assert result.steps == 40 and len(result.rows) == 5
    ase_rows, gpu_rows = logs["ase"], logs["gpu"]
    columns = [LOG_COLUMNS.index(c) for c in ("step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K",
                                              "pressure_GPa", "volume_A3")]
    np.testing.assert_allclose(gpu_rows[:, columns], ase_rows[:, columns], rtol=1e-5, atol=2e-5)
    frames = ase.io.read(tmp_path / "gpu.traj", ":")
    assert len(frames) == 5
    np.testing.assert_allclose(frames[-1].positions, ase.io.read(tmp_path / "ase.traj", -1).positions, atol=1e-5)


@pytest.mark.parametrize("thermostat", ["langevin", "bussi"])
def test_nvt_engine_runs_from_the_cli(cu_model_file, make_cu, tmp_path, capsys, thermostat):
    ase.io.write(tmp_path / "cu.xyz", make_cu(repeat=2))
    argv = ["--model", cu_model_file, "--structure", tmp_path / "cu.xyz", "--engine", "gpu", "--ensemble", "nvt",
            "--thermostat", thermostat, "--temperature", 500, "--steps", 30, "--interval", 10,
            "--log", tmp_path / "md.log", "--no-progress"]
    assert md.main([str(a) for a in argv]) == 0
    rows = read_log(tmp_path / "md.log")
    assert rows.shape == (4, len(LOG_COLUMNS)) and np.isfinite(rows[:, :8]).all()


@pytest.mark.parametrize("extra, words", [(["--ensemble", "npt"], "npt"),
                                          (["--ensemble", "nvt", "--thermostat", "nose-hoover"], "nose-hoover")])
def test_engine_refuses_what_it_does_not_integrate(cu_model_file, make_cu, tmp_path, capsys, extra, words):
    ase.io.write(tmp_path / "cu.xyz", make_cu(repeat=2))
    argv = ["--model", cu_model_file, "--structure", tmp_path / "cu.xyz", "--engine", "gpu", "--steps", 5,
            "--no-progress", *extra]
    with pytest.raises(SystemExit) as exit_info:
        md.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "--engine ase" in err


def test_screen_batched_fire_matches_ase_fire(cu_model_file, make_cu, tmp_path):
    candidates = [make_cu(repeat=2, rattle=0.06, seed=k) for k in range(3)]
    ase.io.write(tmp_path / "in.xyz", candidates)
    energies = {}
    for engine in ("ase", "gpu"):
        out = tmp_path / f"{engine}.extxyz"
        argv = ["--model", cu_model_file, "--structures", tmp_path / "in.xyz", "--out", out, "--relax",
                "--fmax", 0.02, "--engine", engine, "--no-progress"]
        assert screen.main([str(a) for a in argv]) == 0
        frames = ase.io.read(out, ":")
        assert all(f.info["converged"] for f in frames)
        energies[engine] = np.array([f.get_potential_energy() for f in frames])
    np.testing.assert_allclose(energies["gpu"], energies["ase"], atol=1e-4)


def test_screen_engine_gpu_refuses_cell_relaxation(cu_model_file, make_cu, tmp_path):
    ase.io.write(tmp_path / "in.xyz", [make_cu(repeat=2)])
    with pytest.raises(SystemExit):
        screen.main([str(a) for a in ["--model", cu_model_file, "--structures", tmp_path / "in.xyz",
                                      "--out", tmp_path / "o.csv", "--relax-cell", "--engine", "gpu"]])
