"""The energy offset is right from the start: after one epoch on AcAc (real DFT data, isolated-atom E0s from their
own file) the mean signed energy error is below 5 meV/atom. A model that had not learned the shift over its E0s
(MACE after 5 minutes: a constant 0.75 eV, 50 meV/atom on AcAc) fails this by an order of magnitude.

Reads ../shared/data/AcAc (skipped when absent). About 30 s on 2 CPU cores: a tiny model, one epoch."""

from __future__ import annotations

import numpy as np
import pytest

import data
from potential import evaluate, load_model
from potential.training.config import parse_config
from potential.training.trainer import run


@pytest.mark.shared_data
def test_one_epoch_on_acac_has_no_energy_offset(shared_dir, tmp_path):
    acac = shared_dir / "AcAc"
    cfg = parse_config({
        "data": {"train": str(acac / "train_300K.xyz"), "isolated_atoms": str(acac / "isolated_atoms.xyz"),
                 "valid_fraction": 0.1},
        "model": {"channels": 8, "lmax": 1, "lmax_sh": 2, "correlation": 2, "num_interactions": 1, "r_max": 4.0,
                  "num_bessel": 6, "radial_hidden": [16, 16], "readout_hidden": 8},
        "training": {"batch_size": 10, "max_epochs": 1, "lr": 0.01, "ema_decay": 0.99, "scheduler": "none"},
        "output_dir": str(tmp_path / "run"), "device": "cpu", "dtype": "float64", "seed": 0,
    })
    run(cfg)
    model = load_model(tmp_path / "run" / "model.pt")
    structures = [s for s in data.read_structures(str(acac / "train_300K.xyz")) if len(s) > 1]
    results = evaluate(structures, model)
    per_atom = np.array([(r["energy"] - s.energy) / len(s) for r, s in zip(results, structures)])  # eV/atom
    assert abs(per_atom.mean()) < 5e-3, f"mean energy error {1e3 * per_atom.mean():.2f} meV/atom"
