"""The export command and the pickled ML-IAP object (no LAMMPS needed)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from potential.lammps import ELEMENTS, LAMMPSPotential, comm_cutoff, export

ROOT = Path(__file__).resolve().parents[2]


def test_export_round_trip(model_file, tmp_path):
    model, path = model_file
    export(path, tmp_path / "out.pkl", dtype="float32")
    raw = (tmp_path / "out.pkl").read_bytes()
    assert b"potential.lammps" in raw and b"LAMMPSPotential" in raw  # what LAMMPS's unpickling imports
    with open(tmp_path / "out.pkl", "rb") as f:
        unified = pickle.load(f)
    assert type(unified) is LAMMPSPotential and unified.interface is None
    assert unified.element_types == ELEMENTS and len(ELEMENTS) == 118 and ELEMENTS[28] == "Cu"
    assert unified.rcutfac == pytest.approx(0.5 * model.r_max) and unified.ndescriptors == 1
    rebuilt = unified.model(torch.device("cpu"))
    assert rebuilt.dtype == torch.float32 and rebuilt.config.backend == "auto"
    for name, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], value.to(rebuilt.state_dict()[name].dtype))
    assert comm_cutoff(2, 4.0, 1.0) == 9.0


def test_command_writes_the_file_and_prints_the_input_lines(model_file, tmp_path):
    _, path = model_file
    out = tmp_path / "model-lammps.pkl"
    run = subprocess.run([sys.executable, "-m", "potential.lammps", str(path), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert out.exists() and "comm_modify cutoff 10" in run.stdout and "pair_style mliap unified" in run.stdout
    with open(out, "rb") as f:
        assert type(pickle.load(f)).__module__ == "potential.lammps"


def test_command_refuses_a_pt_name_and_a_bad_model(model_file, tmp_path):
    _, path = model_file
    run = subprocess.run([sys.executable, "-m", "potential.lammps", str(path), str(tmp_path / "x.pt")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "torch.load" in run.stderr and not (tmp_path / "x.pt").exists()
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a tumbler model file"):
        export(bad, tmp_path / "bad.pkl")
    assert not (tmp_path / "bad.pkl").exists()
