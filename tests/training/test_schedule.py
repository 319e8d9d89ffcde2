"""The run's schedule (potential/training/schedule.py) and its output folder (potential/training/run_dir.py),
without training: warmup, schedulers, stage-two switch, stop rule, metrics.csv rows. Budget: < 1 s."""

from __future__ import annotations

import csv

import pytest
import torch

from potential.training.config import ConfigError, StageTwoConfig, TrainingConfig, parse_config
from potential.training.metrics import LossWeights
from potential.training.run_dir import CSV_FIELDS, append_metrics, drop_metrics_after, open_run_dir
from potential.training.schedule import Schedule


def _schedule(lr=0.01, **training):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    return Schedule(optimizer, TrainingConfig(lr=lr, **training)), optimizer


def test_loss_weights_of_each_stage():
    s, _ = _schedule(energy_weight=2.0, forces_weight=3.0, stress_weight=4.0, huber_delta=0.1,
                     stage_two=StageTwoConfig(start_epoch=1, energy_weight=50.0, forces_weight=5.0))
    assert s.loss_weights(1) == LossWeights(2.0, 3.0, 4.0, 0.1)
    assert s.loss_weights(2) == LossWeights(50.0, 5.0, 4.0, 0.1)  # stress weight: stage one's unless given
    s.t.stage_two.stress_weight = 7.0
    assert s.loss_weights(2).stress == 7.0


def test_warmup_is_linear_and_stops_at_its_steps_or_in_stage_two():
    s, opt = _schedule(lr=0.04, warmup_steps=3, scheduler="none")
    lrs = [opt.param_groups[0]["lr"]]
    for step in range(1, 6):
        s.after_step(step, stage=1)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.04, 0.04])
    s, opt = _schedule(lr=0.04, warmup_steps=3, scheduler="none")
    s.after_step(1, stage=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_schedulers_step_in_stage_one_only():
    s, opt = _schedule(scheduler="plateau", patience=0, lr_factor=0.5)
    s.after_epoch(1, 1.0)
    s.after_epoch(1, None)  # an epoch without validation: no plateau step
    assert opt.param_groups[0]["lr"] == 0.01
    s.after_epoch(1, 2.0)  # worse, patience 0: halved
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)
    s.after_epoch(2, 3.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)
    s, opt = _schedule(scheduler="cosine", max_epochs=2, min_lr=0.0)
    s.after_epoch(1, None)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)  # halfway down the cosine


def test_stage_two_start_and_its_constant_lr():
    s, opt = _schedule(max_epochs=10, stage_two=StageTwoConfig(start_epoch=3, lr=0.002))
    assert [s.stage_two_due(1, e, 0.0) for e in (2, 3)] == [False, True]
    assert not s.stage_two_due(2, 5, 0.0)  # already in stage two
    by_fraction, _ = _schedule(max_epochs=10, time_budget_minutes=1.0, stage_two=StageTwoConfig(start_fraction=0.5))
    assert not by_fraction.stage_two_due(1, 4, 29.0)
    assert by_fraction.stage_two_due(1, 5, 0.0) and by_fraction.stage_two_due(1, 0, 30.0)
    assert not _schedule()[0].stage_two_due(1, 100, 1e9)  # no stage two configured
    s.start_stage_two()
    assert opt.param_groups[0]["lr"] == 0.002
    opt.param_groups[0]["lr"] = lr = torch.tensor(0.01)  # captured steps read a tensor: set in place
    s.start_stage_two()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.002)


def test_stop_rule():
    s, _ = _schedule(max_epochs=3)
    assert [s.stop_due(e, 0.0, 0.0) for e in (2, 3)] == [False, True]
    s, _ = _schedule(max_epochs=None, time_budget_minutes=1.0)
    assert not s.stop_due(5, 50.0, 10.0) and s.stop_due(5, 50.0, 10.5)  # the next epoch would end past 60 s


def test_schedule_state_round_trip():
    s, _ = _schedule(warmup_steps=2, scheduler="plateau")
    s.after_step(1, 1)
    s.after_epoch(1, 1.0)
    state = s.state_dict()
    assert set(state) == {"warmup", "scheduler"}
    fresh, opt = _schedule(warmup_steps=2, scheduler="plateau")
    fresh.load_state_dict(state)
    assert fresh.warmup.state_dict() == s.warmup.state_dict()
    assert fresh.scheduler.state_dict()["best"] == 1.0
    none, _ = _schedule(scheduler="none")
    assert none.state_dict() == {"warmup": None, "scheduler": None}


def test_metrics_rows_and_restart_truncation(tmp_path):
    path = tmp_path / "metrics.csv"
    for epoch in (1, 2, 3):
        append_metrics(path, {"epoch": epoch, "step": 5 * epoch, "lr": 0.01, "valid_loss": None})
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == CSV_FIELDS and [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["valid_loss"] == "" and rows[0]["train_loss"] == ""
    drop_metrics_after(path, 2)
    assert [r["epoch"] for r in csv.DictReader(open(path))] == ["1", "2"]
    drop_metrics_after(tmp_path / "absent.csv", 1)  # nothing to drop
    assert not (tmp_path / "absent.csv").exists()


def test_fresh_run_clears_old_outputs_but_keeps_a_checkpoint(tmp_path):
    cfg = parse_config({"data": {"train": "x.h5"}, "output_dir": str(tmp_path / "run")})
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("old")
    assert open_run_dir(cfg, restart=False, overwrite=False, main=True) is None
    assert not (out / "metrics.csv").exists()
    (out / "checkpoint.pt").write_text("a run")
    with pytest.raises(ConfigError, match="already holds a run"):
        open_run_dir(cfg, restart=False, overwrite=False, main=True)
