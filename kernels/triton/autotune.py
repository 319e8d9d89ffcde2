"""Tile shapes chosen by measurement on the GPU at hand: autotuning over pruned candidates.

Each launcher (conv.py, contraction.py) names its problem (kernel table, channels, dtype, size class) and
proposes a short list of tile configs: first the default measured on the H200 (docs/performance.md), then the
alternatives that fit its register budget. The pruning happens there: a tile that spills or halves occupancy on
sm_90 (its register report) is never proposed, so tuning compiles and times three to five candidates, not a
grid. On the first call of a problem, `choose` compiles the candidates at once, in worker processes (`_compile`,
launch.compile_ahead), times each with CUDA events (triton.testing.do_bench, median) and keeps the fastest.

Choices are remembered in memory and in one JSON file per GPU model and Triton version, so later processes launch
the same tiles without timing again, and results stay bitwise identical from run to run. (Another tile can change
the order of a float32 sum over edges, within the float32 bounds the tests assert.)

  TUMBLER_AUTOTUNE        1 (default): tune on first use; 0: always the measured default;
                          compile: launch every candidate once and take the default, remembering nothing
                          (the benches compile in parallel processes, where timings would disturb each other)
  TUMBLER_AUTOTUNE_CACHE  the folder of the JSON files (default ~/.cache/tumbler)

A precompile pass (launch.precompile) compiles every candidate of a new problem, or only the stored choice, and
chooses nothing: the first real call then times candidates that are already compiled.

Tuning never runs during CUDA-graph capture or off CUDA (Triton's interpreter on CPU): those calls take the
default, or the choice already made.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from .launch import compile_ahead, compiling, recording
from .tuning import knob

_CHOICES: dict = {}  # (launcher, problem) -> config, in this process
_STORED: dict = {}  # "path" -> the JSON file's path, "choices" -> {key text: config list}, loaded once


def choose(launcher: str, problem: tuple, candidates: Callable[[], list], run: Callable,
           device: torch.device) -> tuple:
    """The config to launch `launcher` with on `problem` (a tuple of str, int and dtype that determines the
    candidates). candidates() lists the configs, the measured default first; it is called only when the problem
    is new to this process. `run(config)` launches the call with that config on the call's own inputs; every
    launcher writes all of its outputs, so the timing runs leave nothing behind."""
    key = (launcher, problem)
    config = _CHOICES.get(key)
    if config is not None:
        return config
    candidates = candidates()
    if len(candidates) == 1:
        return candidates[0]
    mode = knob("TUMBLER_AUTOTUNE", "1")
    if mode not in ("0", "1", "compile"):
        raise ValueError(f"TUMBLER_AUTOTUNE={mode!r}: expected 1 (tune), 0 (defaults) or compile")
    if not _can_time(device):
        return candidates[0]
    if compiling():  # a precompile pass (launch.py): compile what the first real call will run, choose nothing
        recalled = _recalled(key, candidates) if mode == "1" else None
        if mode != "0" and not recalled:
            for c in candidates[1:]:
                run(c)
        return recalled or candidates[0]
    if mode == "0":
        config = candidates[0]
    elif mode == "compile":
        _compile(candidates, run)
        return candidates[0]
    else:
        config = _recalled(key, candidates) or _fastest(candidates, run, key)
    _CHOICES[key] = config
    return config


def choices() -> dict:
    """{"launcher problem": config} chosen in this process (bench/kernels.py writes them into its JSON)."""
    return {key_text(k): list(v) for k, v in _CHOICES.items()}


def key_text(key: tuple) -> str:
    launcher, problem = key
    return launcher + " " + ",".join(str(p) for p in problem)


def _can_time(device: torch.device) -> bool:
    return device.type == "cuda" and not torch.cuda.is_current_stream_capturing()


def _time(run: Callable, config: tuple) -> float:
    """Median ms of run(config) by CUDA events (its first call compiles the candidate, before the timing)."""
    from triton.testing import do_bench
    return do_bench(lambda: run(config), warmup=5, rep=20, return_mode="median")


def _gpu_name() -> str:
    return torch.cuda.get_device_name()


def _compile(candidates: list, run: Callable) -> None:
    """Compile every candidate at once, in worker processes (launch.compile_ahead; one after the other, the
    candidates of the l<=3 sender pass take tens of seconds). A candidate that fails to compile is left to its timed
    call, which reports it."""
    with recording() as launches:
        for c in candidates:
            try:
                run(c)
            except Exception:  # reported by its timed call
                pass
    compile_ahead(launches, len(launches))


def _fastest(candidates: list, run: Callable, key: tuple) -> tuple:
    _compile(candidates, run)
    times = []
    for c in candidates:
        try:
            times.append(_time(run, c))
        except Exception as exc:  # a candidate the GPU cannot run (out of shared memory, registers): not chosen
            if c == candidates[0]:
                raise
            warnings.warn(f"kernels/triton/autotune.py: {key_text(key)}: candidate {c} failed ({exc}); skipped",
                          RuntimeWarning)
            times.append(float("inf"))
    best = candidates[times.index(min(times))]
    _store(key, best)
    return best


def _file() -> Path:
    base = knob("TUMBLER_AUTOTUNE_CACHE") or str(Path.home() / ".cache" / "tumbler")
    import triton
    gpu = "".join(ch if ch.isalnum() else "-" for ch in _gpu_name())
    return Path(base) / f"autotune-{gpu}-triton{triton.__version__}.json"


def _read(path: Path) -> dict:
    """The choices in `path`; an unreadable file is reported and treated as empty (it is only a cache)."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("choices"), dict):
            raise ValueError('no "choices" object')
        return data["choices"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"kernels/triton/autotune.py: ignoring the autotune cache {path} ({exc}); tuning again",
                      RuntimeWarning)
        return {}


def _recalled(key: tuple, candidates: list):
    """The stored choice for key, if it is still one of the candidates."""
    path = _file()
    if _STORED.get("path") != path:
        _STORED.update(path=path, choices=_read(path))
    stored = _STORED["choices"].get(key_text(key))
    config = tuple(stored) if isinstance(stored, list) else None
    return config if config in candidates else None


def _store(key: tuple, config: tuple) -> None:
    """Add one choice to the JSON file: re-read it (another process may have added some), then write it whole
    under a temporary name and rename, so no reader ever sees half a file."""
    path = _file()
    merged = _read(path)
    merged[key_text(key)] = list(config)
    _STORED.update(path=path, choices=merged)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"gpu": _gpu_name(), "choices": merged}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: the choice still holds for this process
        warnings.warn(f"kernels/triton/autotune.py: cannot write {path} ({exc}); tuning is not remembered",
                      RuntimeWarning)
