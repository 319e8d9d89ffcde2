"""Where every bench script writes its result: bench/results/<name>-<device>-<UTC time>.json, atomically.

The JSON is the script's own dict plus a header (`device`, `date` in UTC, `torch`, `git` commit when the
repository has one, the host's CPU count and its 1-minute load average when the script started: other work on
the host slows CPU runs and host-bound GPU passes), so a table in README.md or docs/performance.md can name its
file, date and device.
When $OUT is set (a device machine that hands back only $OUT), the same file is also written there.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device) -> str:
    """'NVIDIA H200' for a CUDA device, 'cpu' otherwise (device: torch.device or str)."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def header(device: str) -> dict:
    """The fields every result file starts with."""
    import torch

    now = datetime.datetime.now(datetime.timezone.utc)
    return {"device": device, "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "torch": torch.__version__,
            "git": _git_commit(), "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}


def write_result(name: str, result: dict, folder: Path = RESULTS) -> Path:
    """Write `result` (which holds header()'s fields) to folder/<name>-<device>-<date>.json via a temporary
    name and a rename, so a reader never sees half a file; also to $OUT when set. Returns the path."""
    stamp = result["date"].replace(":", "").rstrip("Z")  # 2026-12-08T004512: to the second, runs in one minute
    tag = result["device"].replace(" ", "-").replace("/", "-")
    path = folder / f"{name}-{tag}-{stamp}.json"
    for d in [folder] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(d / path.name)
    return path
