"""Training checkpoints: everything needed to resume a run exactly.

A checkpoint is a torch.save dict {"format": "tumbler-checkpoint", "format_version": 1, ...} holding the model,
EMA, optimizer and scheduler state dicts, the RNG states (python, numpy, torch CPU and CUDA), the epoch/step
counters, the best validation loss and the stage. It is written atomically (temporary file + os.replace), so a
run killed while saving keeps the previous checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from data.atomic import atomic_path

__all__ = ["CHECKPOINT_FORMAT", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "tumbler-checkpoint"
CHECKPOINT_VERSION = 1


def rng_state() -> dict:
    """The global RNG states of python's random, numpy and torch (CPU, and every CUDA device if present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` (plus the format tag) to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by `save_checkpoint` (on the CPU). Raises FileNotFoundError / ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to restart from: '{path}' does not exist")
    # our own file, which holds numpy RNG state and python tuples: a full unpickle is needed
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"'{path}' is not a tumbler training checkpoint")
    if state.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"'{path}' has checkpoint format {state['format_version']}, newer than this tumbler "
                         f"reads ({CHECKPOINT_VERSION}); update tumbler")
    return state
