"""Accuracy at a fixed training budget: train a shipped config for M minutes, then report the validation errors.

    python bench/accuracy.py configs/acac.yaml --minutes 30 --device cuda
    python bench/accuracy.py configs/quickstart.yaml --minutes 0.3 --device cpu        # smoke test, CPU

Training runs as `python train.py --config CONFIG --set training.time_budget_minutes=M ...`, in pieces of at
most --piece-minutes of wall clock each (default 8, for machines that stop a command after 10 minutes). A piece
that reaches its wall-clock limit is stopped, and the next one resumes exactly from output_dir/checkpoint.pt
(`train.py --restart`, written atomically after every epoch), so the pieces make one run of M minutes of
training time. The budget counts training and validation epochs, not start-up (data, kernel compilation) or the
final evaluation; the config's training.max_epochs still applies (whichever comes first). Running the command
again on the same output_dir resumes it; --max-pieces stops this invocation early (run it again to go on);
--fresh starts over.

When training ends, train.py evaluates the best model (EMA weights, lowest validation loss) on the validation
split (and the test file, if the config has one). This script reads that evaluation (test_metrics.json) and the
per-epoch log (metrics.csv) and writes bench/results/accuracy-<config>-<device>-<UTC time>.json:
energy RMSE and MAE per atom (meV/atom) and per structure (meV), force RMSE and MAE (meV/Å), stress RMSE and MAE
(meV/Å^3, where the data has stress), the epochs, optimizer steps and training seconds, and ms per optimizer
step (training seconds / steps: validation passes included).
"""
from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from result_file import device_name, header, write_result

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"e_atom_rmse": "meV/atom", "e_atom_mae": "meV/atom", "e_rmse": "meV", "e_mae": "meV",
         "f_rmse": "meV/Å", "f_mae": "meV/Å", "s_rmse": "meV/Å^3", "s_mae": "meV/Å^3"}


def epochs_so_far(out: Path) -> list[dict]:
    """The rows of out/metrics.csv (one per finished epoch; train.py writes it), [] before the first epoch."""
    path = out / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_piece(cmd: list[str], seconds: float) -> int | None:
    """Run one piece of training; its return code, or None when it was stopped at the wall-clock limit."""
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        # SIGTERM: the checkpoint of the last finished epoch is on disk (written by rename, never half a file)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a YAML config, e.g. configs/acac.yaml (its data must exist: see its header)")
    p.add_argument("--minutes", type=float, required=True, help="training budget in minutes (all pieces)")
    p.add_argument("--piece-minutes", type=float, default=8.0,
                   help="wall-clock limit of one train.py process, minutes (default %(default)s)")
    p.add_argument("--max-pieces", type=int, default=None, help="stop this invocation after this many pieces")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--output-dir", default=None, help="run folder (default runs/accuracy/<config name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="more config overrides, passed to train.py (repeatable)")
    p.add_argument("--fresh", action="store_true", help="start again even if output_dir holds a run")
    args = p.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = Path(args.config).resolve()
    if not config.exists():
        p.error(f"config '{args.config}': no such file")
    out = Path(args.output_dir or ROOT / "runs" / "accuracy" / config.stem).resolve()
    sets = [f"output_dir={out}", f"device={device}", f"training.time_budget_minutes={args.minutes}"]
    sets += args.overrides
    base = [sys.executable, str(ROOT / "train.py"), "--config", str(config)]
    for s in sets:
        base += ["--set", s]

    result = header(device_name(device))  # date and host load at the start of this invocation
    fresh, pieces, rc = args.fresh, 0, None
    while rc is None:
        if args.max_pieces is not None and pieces >= args.max_pieces:
            rows = epochs_so_far(out)
            trained = sum(float(r["time_s"]) for r in rows) / 60
            print(f"stopped after {pieces} pieces: {len(rows)} epochs, {trained:.1f} of {args.minutes} minutes "
                  f"trained; run the same command again to go on")
            return 0
        resume = (out / "checkpoint.pt").exists() and not fresh
        cmd = base + (["--restart"] if resume else ["--overwrite"] if fresh else [])
        fresh = False
        started = time.perf_counter()
        rc = train_piece(cmd, 60 * args.piece_minutes)
        pieces += 1
        if rc is None and not (out / "checkpoint.pt").exists():
            print(f"accuracy.py: the first piece ended after {args.piece_minutes} min without finishing an epoch; "
                  f"raise --piece-minutes", file=sys.stderr)
            return 1
        if rc is None:
            print(f"piece {pieces} stopped at its limit after {time.perf_counter() - started:.0f} s; resuming",
                  flush=True)
    if rc != 0:
        print(f"accuracy.py: train.py failed (exit code {rc}); see {out / 'train.log'}", file=sys.stderr)
        return rc

    rows = epochs_so_far(out)
    evaluation = json.loads((out / "test_metrics.json").read_text())
    result.update(config=str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config),
                  overrides=args.overrides, budget_minutes=args.minutes, pieces=pieces, epochs=len(rows),
                  steps=int(rows[-1]["step"]) if rows else 0,
                  train_seconds=round(sum(float(r["time_s"]) for r in rows), 2),
                  best_epoch=evaluation.get("best_epoch"), units=UNITS)
    result["ms_per_step"] = round(1e3 * result["train_seconds"] / result["steps"], 2) if result["steps"] else None
    for split in ("valid", "test"):
        if split in evaluation:
            result[split] = {k: v for k, v in evaluation[split].items() if k in UNITS and v is not None}
    path = write_result(f"accuracy-{config.stem}", result)
    print(json.dumps({k: result[k] for k in ("device", "epochs", "steps", "train_seconds", "best_epoch")}))
    for split in ("valid", "test"):
        if split in result:
            print(f"{split}: " + ", ".join(f"{k} {v:.2f} {UNITS[k]}" for k, v in result[split].items()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
