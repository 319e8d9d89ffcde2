"""The output directory of a training run: what the run keeps there and how a restart takes it up again.

output_dir holds config.yaml (the resolved config), train.log (every logged line), metrics.csv (one row per
epoch, columns CSV_FIELDS, errors in meV units), model.pt (the best model), checkpoint.pt (written atomically
after every epoch, potential.training.checkpoint) and test_metrics.json (at the end). A fresh run refuses a
folder that already holds a checkpoint unless told to overwrite it; a restart may change training settings only
(the config's RESTART_KEYS must match the checkpoint's), and drops the metrics rows of epochs after the checkpoint
(a run killed between writing the row and the checkpoint).
"""

from __future__ import annotations

import csv
from pathlib import Path

from data.atomic import atomic_path

from .checkpoint import load_checkpoint
from .config import ConfigError, TrainConfig, config_to_dict
from .metrics import METRIC_NAMES

__all__ = ["CSV_FIELDS", "RESTART_KEYS", "open_run_dir", "append_metrics", "drop_metrics_after"]

RESTART_KEYS = ("data", "model", "seed", "dtype")  # must match between a checkpoint and a restart
CSV_FIELDS = (["epoch", "step", "stage", "lr", "time_s"] + [f"train_{k}" for k, _ in METRIC_NAMES]
              + [f"valid_{k}" for k, _ in METRIC_NAMES])  # metrics.csv columns; errors in meV units
_OUTPUTS = ("metrics.csv", "train.log", "test_metrics.json", "model.pt")  # what a fresh run deletes first


def open_run_dir(cfg: TrainConfig, restart: bool, overwrite: bool, main: bool) -> dict | None:
    """Check cfg.output_dir for this run and prepare it (on the main process); return the checkpoint to resume
    from (restart) or None (a fresh run, whose earlier outputs are deleted)."""
    out = Path(cfg.output_dir)
    ckpt_path = out / "checkpoint.pt"
    if not restart and ckpt_path.exists() and not overwrite:
        raise ConfigError(f"output_dir: '{out}' already holds a run (checkpoint.pt); pass --restart to "
                          f"resume it, --overwrite to start again, or --set output_dir=<new folder>")
    ckpt = load_checkpoint(ckpt_path) if restart else None
    if ckpt is not None:
        old = ckpt["config"]
        new = config_to_dict(cfg)
        changed = [k for k in RESTART_KEYS if old.get(k) != new.get(k)]
        if changed:
            raise ConfigError(f"--restart: the config's {', '.join(changed)} differ from those of "
                              f"'{ckpt_path}'; only training settings may change on a restart")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not restart:
            for name in _OUTPUTS:
                (out / name).unlink(missing_ok=True)
    return ckpt


def append_metrics(path: Path, row: dict) -> None:
    """Append `row` to metrics.csv at `path` (the header first if the file is new); None and absent are empty."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})


def drop_metrics_after(path: Path, epoch: int) -> None:
    """Drop the rows of metrics.csv at `path` (if any) for epochs after `epoch`."""
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= epoch]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)
