"""Bad input ends in a clear error before training starts (nothing is trained, no checkpoint). Budget < 15 s."""

from __future__ import annotations

import pytest
import torch

import data
import potential.training.trainer as training
from potential.training.config import ConfigError, dump_config


def _fails(cfg, message, tmp_path):
    with pytest.raises(ConfigError) as err:
        training.run(cfg)
    assert message in str(err.value), str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    return str(err.value)


def test_missing_files(cu_h5, make_config, tmp_path):
    _fails(make_config(str(tmp_path / "nope.h5")), f"data.train: file not found: '{tmp_path / 'nope.h5'}'", tmp_path)
    _fails(make_config(cu_h5, data={"valid": "missing.xyz"}), "data.valid: file not found: 'missing.xyz'", tmp_path)
    _fails(make_config(cu_h5, data={"test": "missing.h5"}), "data.test: file not found: 'missing.h5'", tmp_path)


def test_forces_weight_without_forces(emt, make_config, tmp_path):
    structures = emt(8, seed=6)
    for s in structures:
        s.forces = None
    path = tmp_path / "noforces.h5"
    data.write_dataset(path, structures)
    msg = _fails(make_config(str(path)), "training.forces_weight: is 10.0 but the training set", tmp_path)
    assert "has no forces" in msg and "noforces.h5" in msg


def test_element_in_valid_absent_from_train(emt, cu_h5, make_config, tmp_path):
    valid = emt(3, seed=7)
    valid[2].numbers[1] = 47                                       # one Ag atom in validation structure 2
    path = tmp_path / "valid.h5"
    data.write_dataset(path, valid)
    msg = _fails(make_config(cu_h5, data={"valid": str(path)}), "data.valid: element Ag in structure 2", tmp_path)
    assert "absent from the training set" in msg


def test_batch_larger_than_dataset(cu_h5, make_config, tmp_path):
    _fails(make_config(cu_h5, training={"batch_size": 100}),
           "training.batch_size: 100 is larger than the training set (18 structures", tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_gpu(cu_h5, make_config, tmp_path):
    _fails(make_config(cu_h5, device="cuda"), "device: 'cuda' was asked for but no CUDA GPU is available", tmp_path)


def test_existing_run_and_restart_without_checkpoint(cu_h5, make_config, tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint to restart from"):
        training.run(make_config(cu_h5), restart=True)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a run"):
        training.run(make_config(cu_h5))


def test_cli_reports_config_errors(cu_h5, make_config, tmp_path, capsys):
    import train

    path = tmp_path / "c.yaml"
    dump_config(make_config(cu_h5), path)
    assert train.main(["--config", str(path), "--set", "training.lr=abc"]) == 2
    assert "training.lr: expected a positive float, got 'abc'" in capsys.readouterr().err
    assert train.main(["--config", str(path), "--set", "model.chanels=8"]) == 2
    assert "unknown key 'model.chanels'" in capsys.readouterr().err
