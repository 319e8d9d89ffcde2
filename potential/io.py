"""Model files: one ``torch.save`` dict that rebuilds the Potential with nothing else.

Layout (format_version 1):
    {"format": "tumbler-model", "format_version": 1, "tumbler_version": str,
     "config": ModelConfig.to_dict() (elements, E0s, scale, shift, dtype, tensor_product, ...),
     "state_dict": weights and buffers on the CPU,
     "units": {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"},
     "extra": user dict (plain Python data: metrics, training config, ...) or None}
Files are written atomically (temp file in the same folder, fsync, os.replace) and read with
``torch.load(weights_only=True)``, so a model file can never run code.
Config keys added after format version 1 was fixed default to the model that files written before them held:
a file without "tensor_product" (written before the Gaunt option) loads as "cg".
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from data.atomic import atomic_path

from .model import ModelConfig, Potential

FORMAT = "tumbler-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}


def _tumbler_version() -> str:
    try:
        from importlib.metadata import version

        return version("tumbler")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "unknown"


def _plain(value, where: str):
    """``value`` as plain Python data (what ``torch.load(weights_only=True)`` reads back): numpy scalars and
    arrays become Python numbers and lists, tuples become lists; tensors stay; anything else is a TypeError."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{k}]") for k, v in enumerate(value)]
    if isinstance(value, dict):
        return {_plain(k, where): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"save_model: {where} is a {type(value).__name__}; extra may hold only numbers, strings, "
                    f"lists, dicts, None and tensors")


def save_model(model: Potential, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write ``model`` (config + weights) to ``path`` atomically. ``extra`` (metrics, notes ...) is stored as
    plain data: numpy values become Python numbers / lists; other objects are a TypeError."""
    if not isinstance(model, Potential):
        raise TypeError(f"save_model: expected a potential.Potential, got {type(model).__name__}")
    extra = _plain(extra, "extra")
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tumbler_version": _tumbler_version(),
        "config": model.config.to_dict(),
        "state_dict": state,
        "units": dict(UNITS),
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_model_file(path: str | os.PathLike) -> dict:
    """The checked payload dict of a model file (tensors on the CPU). Errors say what the file is instead."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"model file '{path}' is a directory")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"'{path}' is not a tumbler model file (torch.load failed: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = f"a {type(payload).__name__}" if not isinstance(payload, dict) else \
            f"a dict with keys {sorted(map(str, payload))[:8]}"
        raise ValueError(f"'{path}' is not a tumbler model file: it holds {what}, without format='{FORMAT}' "
                         f"(a raw state_dict, a training checkpoint or another program's file?)")
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"'{path}': bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"'{path}' has model format version {version}, written by a newer tumbler "
                         f"({payload.get('tumbler_version', 'unknown')}); this tumbler reads versions "
                         f"<= {FORMAT_VERSION}: upgrade tumbler to load it")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise ValueError(f"'{path}': model file lacks its '{key}' entry")
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", backend: str | None = None) -> Potential:
    """Rebuild the Potential saved in ``path`` on ``device``, in eval mode.

    ``backend`` overrides the saved kernels backend (e.g. "reference" for a model saved with "triton")."""
    payload = read_model_file(path)
    config_dict = dict(payload["config"])
    config_dict.setdefault("tensor_product", "cg")  # files from before the option were all Clebsch-Gordan
    if backend is not None:
        config_dict["backend"] = backend
    try:
        config = ModelConfig.from_dict(config_dict)
    except (TypeError, ValueError) as e:
        raise ValueError(f"'{path}': bad model config: {e}") from e
    model = Potential(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"'{path}': weights do not match the saved config: {e}") from e
    return model.to(device).eval()
