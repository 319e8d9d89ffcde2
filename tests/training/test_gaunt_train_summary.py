"""bench/gaunt.py --train-summary on two tiny finished runs (cg and gaunt): the table's numbers are those the
trainer wrote, its test-file errors are the trainer's test metrics, throughput is per CPU-second. ~10 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import potential.training.trainer as training
from builders import load_module

ROOT = Path(__file__).resolve().parents[2]
gaunt_bench = load_module("bench_gaunt", ROOT / "bench" / "gaunt.py")


@pytest.fixture(scope="module")
def runs(cu_h5, tmp_path_factory):
    """A cg and a gaunt run, same seed and data (correlation 3 and a hidden layer: the product bases differ)."""
    from potential.training.config import parse_config

    base = tmp_path_factory.mktemp("runs")
    folders = []
    for product in ("cg", "gaunt"):
        folder = base / f"tiny-{product}"
        raw = {"data": {"train": cu_h5, "valid_fraction": 0.25, "test": cu_h5},
               "model": {"channels": 4, "lmax": 1, "lmax_sh": 2, "correlation": 3, "num_interactions": 2,
                         "r_max": 3.0, "num_bessel": 4, "radial_hidden": [4], "readout_hidden": 4,
                         "tensor_product": product},
               "training": {"batch_size": 6, "max_epochs": 1, "stress_weight": 0.0},
               "output_dir": str(folder), "device": "cpu", "dtype": "float64", "seed": 3}
        training.run(parse_config(raw))
        (folder / "cpu_time.txt").write_text("1.5 0.5 9.0\n")  # as GNU time -f "%U %S %e" writes it
        folders.append(folder)
    return folders


def test_summary_reports_what_the_trainer_wrote(runs, cu_h5):
    rows = gaunt_bench.train_summary(runs, test=Path(cu_h5))
    assert [r["product"] for r in rows] == ["cg", "gaunt"]
    assert rows[1]["params"] < rows[0]["params"]  # gaunt drops product-basis weights at correlation 3
    for row, folder in zip(rows, runs):
        saved = json.loads((folder / "test_metrics.json").read_text())
        for key in ("e_atom_rmse", "e_rmse", "f_rmse"):
            assert row["valid"][key] == saved["valid"][key]
            assert row["test"][key] == pytest.approx(saved["test"][key], rel=1e-9), key
        assert row["test"]["structures"] == 24 and row["test"]["left_out"] == 0
        assert row["structures_trained"] == 3 * 6  # 18 training structures, batches of 6, one epoch
        assert row["cpu_seconds"] == 2.0 and row["structures_per_cpu_s"] == 9.0
    assert "tiny-gaunt" in gaunt_bench.summary_table(rows)


def test_test_exclude_leaves_out_seen_structures(runs, cu_h5, tmp_path):
    import data

    seen = tmp_path / "seen.h5"
    data.write_dataset(seen, list(data.open_dataset(cu_h5))[:5])
    (row,) = gaunt_bench.train_summary(runs[:1], test=Path(cu_h5), exclude=seen)
    assert (row["test"]["structures"], row["test"]["left_out"]) == (19, 5)
    with pytest.raises(SystemExit, match="no test structure is left"):
        gaunt_bench.train_summary(runs[:1], test=Path(cu_h5), exclude=Path(cu_h5))


def test_json_keeps_the_rows_of_earlier_invocations(runs, tmp_path, capsys):
    out = tmp_path / "summary.json"
    gaunt_bench.train_summary_main([str(runs[0]), "--json", str(out)])
    gaunt_bench.train_summary_main([str(runs[1]), "--json", str(out)])
    gaunt_bench.train_summary_main([str(runs[1]), "--json", str(out)])  # a rerun replaces its row
    rows = json.loads(out.read_text())["rows"]
    assert [(r["run"], r["product"]) for r in rows] == [("tiny-cg", "cg"), ("tiny-gaunt", "gaunt")]
    assert rows[0]["model"]["correlation"] == 3 and "tiny-gaunt" in capsys.readouterr().out
