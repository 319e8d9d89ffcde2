"""Training runs end to end on tiny data: loss decreases, outputs load, restart is exact, partial labels train,
stress is masked where absent, a NaN loss stops the run and keeps the last good checkpoint. Budget ~90 s."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import data
import potential.training.trainer as training
from potential.training.checkpoint import load_checkpoint
from potential.training.config import dump_config
from potential.training.metrics import LossWeights, compute_loss


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_tiny_run_learns_and_writes_outputs(emt, cu_h5, make_config, tmp_path):
    cfg = make_config(cu_h5, data={"test": cu_h5}, training={"max_epochs": 4, "warmup_steps": 2},
                      model={"atomic_energies": {"Cu": -0.01}})
    result = training.run(cfg)
    run = tmp_path / "run"
    for name in ("model.pt", "checkpoint.pt", "config.yaml", "metrics.csv", "train.log", "test_metrics.json"):
        assert (run / name).is_file(), name
    rows = _metrics(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert rows[-1]["valid_s_rmse"] != ""                      # stress present in the data is used
    saved = json.loads((run / "test_metrics.json").read_text())
    assert saved["test"]["f_rmse"] > 0 and result["valid"]["e_atom_mae"] is not None
    from potential import Calculator

    atoms = emt(1, seed=5)[0].to_atoms()
    atoms.calc = Calculator.from_file(str(run / "model.pt"))
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (4, 3)


def test_restart_is_exact(cu_h5, make_config, tmp_path):
    import train

    straight = make_config(cu_h5, output_dir=str(tmp_path / "a"), training={"max_epochs": 4, "warmup_steps": 3})
    training.run(straight)
    split = make_config(cu_h5, output_dir=str(tmp_path / "b"), training={"max_epochs": 4, "warmup_steps": 3},
                        num_workers=2)   # batches made in worker processes must not change the order
    path = tmp_path / "b.yaml"
    dump_config(split, path)
    assert train.main(["--config", str(path), "--set", "training.max_epochs=2"]) == 0
    assert train.main(["--config", str(path), "--restart"]) == 0
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (4, 4 * 5)
    for part in ("model", "ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after restart"
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert all(torch.equal(va[k], vb[k]) for k in va)
    ra, rb = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["valid_loss"] for r in ra] == [r["valid_loss"] for r in rb]


@pytest.mark.parametrize("label", ["energy", "forces"])
def test_partial_labels_train(emt, label, make_config, tmp_path):
    structures = emt(12, seed=3, stress_every=0)
    for s in structures:
        setattr(s, label, None)
    path = tmp_path / f"no_{label}.h5"
    data.write_dataset(path, structures)
    weights = {"energy_weight": 0.0} if label == "energy" else {"forces_weight": 0.0}
    result = training.run(make_config(str(path), training=weights))
    valid = result["valid"]
    if label == "energy":   # forces only: no energy metrics
        assert valid["e_mae"] is None and valid["f_rmse"] > 0
    else:                   # energies only: no force metrics
        assert valid["f_rmse"] is None and valid["e_mae"] > 0


def test_stress_loss_is_masked_where_absent(emt):
    structures = emt(4, seed=4, stress_every=2)         # stress on structures 0 and 2 only
    batch = data.collate(structures, cutoff=3.0)
    assert batch.has_stress.tolist() == [True, False, True, False]
    out = {"energy": batch.energy.clone(), "forces": batch.forces.clone(),
           "stress": batch.stress + 0.5}                           # error 0.5 eV/Å^3 in every component
    loss, terms = compute_loss(batch, out, LossWeights(energy=1.0, forces=1.0, stress=2.0))
    assert terms["energy"].item() == 0 and terms["forces"].item() == 0
    assert terms["stress"].item() == pytest.approx(0.25)          # mean over the 2 labelled structures only
    assert loss.item() == pytest.approx(0.5)
    none = data.collate(emt(2, seed=4, stress_every=0), cutoff=3.0)
    out = {"energy": none.energy.clone(), "stress": none.stress + 0.5}
    assert compute_loss(none, out, LossWeights(stress=1.0))[1]["stress"].item() == 0


def test_nan_loss_stops_and_keeps_checkpoint(cu_h5, make_config, tmp_path, monkeypatch):
    cfg = make_config(cu_h5, training={"max_epochs": 3})
    seen = []
    real = training.compute_loss

    def poisoned(batch, out, weights):
        loss, terms = real(batch, out, weights)
        if out["forces"].requires_grad:            # a training step (create_graph), not a validation batch
            seen.append(batch.index.tolist())
        return (loss * float("nan"), terms) if len(seen) == 7 else (loss, terms)   # step 2 of epoch 2

    monkeypatch.setattr(training, "compute_loss", poisoned)
    with pytest.raises(training.TrainingError) as err:
        training.run(cfg)
    message = str(err.value)
    assert f"structures {seen[-1]}" in message and "epoch 2" in message and "last good checkpoint" in message
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert len(_metrics(tmp_path / "run")) == 1


def test_huge_lr_is_caught_by_the_cli(cu_h5, make_config, tmp_path, capsys):
    import train

    path = tmp_path / "c.yaml"
    dump_config(make_config(cu_h5), path)
    assert train.main(["--config", str(path), "--set", "training.lr=1e30", "--set", "training.clip_grad_norm=null"]) == 1
    assert "non-finite" in capsys.readouterr().err


def test_stage_two_cosine_huber_and_time_budget(cu_h5, make_config, tmp_path):
    cfg = make_config(cu_h5, training={"max_epochs": 3, "optimizer": "adam", "scheduler": "cosine", "huber_delta": 0.01,
                                       "ema_decay": None, "stage_two": {"start_epoch": 2, "lr": 0.002}})
    training.run(cfg)
    rows = _metrics(tmp_path / "run")
    assert [r["stage"] for r in rows] == ["1", "1", "2"] and float(rows[-1]["lr"]) == 0.002
    assert float(rows[1]["lr"]) < 0.01                                   # cosine decayed before stage two
    budget = make_config(cu_h5, output_dir=str(tmp_path / "budget"),
                         training={"max_epochs": None, "time_budget_minutes": 1e-4})
    training.run(budget)
    assert len(_metrics(tmp_path / "budget")) == 1                       # one epoch, then out of time
