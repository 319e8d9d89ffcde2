"""``md.py``'s entry: merge the config file with the command line, build the structure, and hand the run to
the engine it names (``ase``: ASE's integrators, ``ase_md``; ``gpu``: the device-resident engine, ``engine_md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evaluate import load_model_file
from .ase_md import run_md
from .engine_md import engine_thermostat, run_md_engine
from .md_config import MDConfig, build_structure
from .md_output import MDResult, load_calculator


def run_from_config(cfg: MDConfig, base_dir: str | Path | None = None) -> MDResult:
    """Build the structure named by ``cfg.structure`` and run MD (what ``md.py`` does)."""
    cfg.validate()
    if cfg.structure is None:
        raise ValueError("no structure given: set --structure (or 'structure:' in the config)")
    if cfg.model is None:
        raise ValueError("no model given: set --model (or 'model:' in the config)")
    atoms, name = build_structure(cfg.structure, base_dir=base_dir)
    if cfg.engine == "gpu" and isinstance(cfg.model, list) and len(cfg.model) > 1:
        raise ValueError("engine 'gpu' runs one model; a committee (several --model files) needs --engine ase")
    if cfg.engine == "gpu":
        if isinstance(cfg.model, list):
            cfg.model = cfg.model[0]
        engine_thermostat(cfg)  # refuse npt / nose-hoover before loading anything
        if cfg.threads is not None:
            import torch

            torch.set_num_threads(cfg.threads)
        return run_md_engine(atoms, cfg, load_model_file(cfg.model, device=cfg.device), name)
    calculator = load_calculator(cfg.model, device=cfg.device, skin=cfg.skin)
    return run_md(atoms, cfg, calculator=calculator, name=name)


def merge_options(file_options: dict[str, Any], cli_options: dict[str, Any], where: str) -> MDConfig:
    """Config-file options overridden by CLI flags that were given (not None)."""
    merged = dict(file_options)
    merged.update({k: v for k, v in cli_options.items() if v is not None})
    return MDConfig.from_dict(merged, where=where)

