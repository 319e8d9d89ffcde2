"""Config tree: unknown keys and bad values are errors quoting key and value; --set overrides. Budget < 2 s."""

from __future__ import annotations

import pytest
import yaml

from potential.training.config import ConfigError, apply_overrides, dump_config, load_config, parse_config


def _raw(**training):
    return {"data": {"train": "x.h5"}, "training": training}


def test_defaults_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: a.h5}\ntraining: {lr: 1e-3, batch_size: 8}\nmodel: {elements: [Cu, 8]}\n")
    cfg = load_config(path)
    assert cfg.training.lr == 1e-3 and isinstance(cfg.training.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.training.batch_size == 8 and cfg.model.channels == 32 and cfg.model.elements == ["Cu", 8]


@pytest.mark.parametrize("raw, message", [
    (_raw(lrr=0.1), "unknown key 'training.lrr'"),
    ({"data": {"train": "x", "foo": 1}}, "unknown key 'data.foo'"),
    ({"data": {"train": "x"}, "bogus": 1}, "unknown key 'bogus'"),
    (_raw(lr="abc"), "training.lr: expected a positive float, got 'abc'"),
    (_raw(lr=-1), "training.lr: expected a positive float, got -1"),
    (_raw(batch_size=2.5), "training.batch_size: expected a positive integer, got 2.5"),
    (_raw(optimizer="sgd"), "training.optimizer: expected one of adam|adamw, got 'sgd'"),
    (_raw(ema_decay=1.5), "training.ema_decay: expected a float in [0, 1), got 1.5"),
    (_raw(amsgrad="yes"), "training.amsgrad: expected true or false, got 'yes'"),
    ({"data": {"train": "x"}, "model": {"radial_hidden": [8, 0]}}, "model.radial_hidden[1]: expected a positive"),
    ({"data": {"train": "x"}, "device": "tpu"}, "device: expected one of cpu|cuda|auto, got 'tpu'"),
    ({"training": {}}, "data.train: a training file is required"),
    (_raw(max_epochs=None), "give max_epochs or time_budget_minutes"),
    (_raw(stage_two={"lr": 0.001}), "exactly one of start_epoch and start_fraction"),
])
def test_errors_quote_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value)


def test_set_overrides(tmp_path):
    raw = apply_overrides({"data": {"train": "a.h5"}}, [
        "training.lr=0.005", "training.stage_two.start_epoch=3", "model.radial_hidden=[16, 16]",
        "training.huber_delta=null", "device=cpu", "model.atomic_energies={Cu: -0.5}"])
    cfg = parse_config(raw)
    assert cfg.training.lr == 0.005 and cfg.training.stage_two.start_epoch == 3
    assert cfg.model.radial_hidden == [16, 16] and cfg.device == "cpu"
    assert cfg.model.atomic_energies == {"Cu": -0.5}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["training.lr"])
    with pytest.raises(ConfigError, match="'training.lr' is not a section"):
        apply_overrides({"training": {"lr": 1.0}}, ["training.lr.x=1"])
    with pytest.raises(ConfigError, match="unknown key 'training.lrr'"):
        parse_config(apply_overrides({"data": {"train": "a"}}, ["training.lrr=1"]))


def test_missing_config_file_and_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    cfg = load_config_from_dict(tmp_path, {"data": {"train": "a.h5"}, "training": {"stage_two": {"start_epoch": 2}}})
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg
    assert yaml.safe_load((tmp_path / "out.yaml").read_text())["training"]["stage_two"]["start_epoch"] == 2


def load_config_from_dict(tmp_path, raw):
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_shipped_configs_parse():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    names = ["quickstart", "acac", "3bpa", "ethanol", "cu_zuo"]
    for name in names:
        cfg = load_config(configs / f"{name}.yaml")
        assert cfg.training.batch_size >= 1
