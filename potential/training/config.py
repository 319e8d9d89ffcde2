"""The training configuration: a tree of typed dataclasses loaded from YAML.

`load_config(path, overrides)` reads a YAML file, applies `--set a.b=value` overrides (each value is parsed
as YAML), and checks every key and value against the dataclasses below. An unknown key or a bad value raises
`ConfigError` with a message that quotes the dotted key and the value, e.g.
``training.lr: expected a positive float, got 'abc'``.

Units follow the project: eV, Å, eV/Å, eV/Å^3. Relative paths are relative to the working directory.
The `model:` section is potential.ModelConfig's own fields (ModelSection, below); those in DATA_DERIVED are left
`None` to be computed by the trainer, and giving them overrides the data-derived value. The mechanism (types,
checks, overrides, error messages) is potential/config_tree.py, shared with md.py's config.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from ..config_tree import ConfigError, apply_overrides, build, check, dump, read_yaml, to_dict
from ..model import ModelConfig

__all__ = [
    "ConfigError", "GenerateConfig", "DataConfig", "ModelSection", "StageTwoConfig", "TrainingConfig",
    "TrainConfig", "load_config", "parse_config", "apply_overrides", "config_to_dict", "dump_config",
]

config_to_dict = to_dict
dump_config = dump


@dataclass
class GenerateConfig:
    """Synthetic data made on first use when `data.train` does not exist (the quickstart's EMT Cu set)."""
    kind: Literal["cu_emt"] = "cu_emt"
    num_structures: int = field(default=200, metadata=check("positive"))
    seed: int = 0


@dataclass
class DataConfig:
    """Where the structures come from. Files are our HDF5 (.h5/.hdf5) or anything ASE reads (extxyz, ...);
    the *_key names apply to ASE-readable files (our HDF5 has fixed names)."""
    train: Optional[str] = None                  # required
    valid: Optional[str] = None                  # None: split valid_fraction off the training file
    test: Optional[str] = None                   # evaluated once at the end with the best model
    isolated_atoms: Optional[str] = None         # single-atom energies (eV) -> reference energies E0
    valid_fraction: float = field(default=0.1, metadata=check("fraction"))
    energy_key: str = "energy"                   # eV
    forces_key: str = "forces"                   # eV/Å
    stress_key: str = "stress"                   # eV/Å^3, ASE sign
    virial_key: str = "virial"                   # eV (converted to stress by data)
    generate: Optional[GenerateConfig] = None


# The inputs the trainer computes from the training data (trainset.py) when the `model:` section leaves them out,
# with the types the section accepts for them.
DATA_DERIVED = {
    "elements": Optional[list[Union[int, str]]],                 # atomic numbers or symbols
    "atomic_energies": Optional[dict[Union[int, str], float]],   # eV per isolated atom, by element
    "avg_num_neighbors": Optional[float],                        # mean neighbour count within r_max
    "scale": Optional[float],                                    # eV (force RMS, eV/Å x 1 Å)
    "shift": Optional[float],                                    # eV per atom
}


# Keys of the `model:` section that are not ModelConfig's: fine-tuning (potential/training/finetune.py).
SECTION_ONLY = [
    ("init_from", Optional[str], field(default=None)),       # start from this model file's architecture and weights
    ("refit_references", bool, field(default=True)),          # with init_from: refit E0s and shift on the new data
]


def _model_section():
    """The `model:` section is ModelConfig's own fields (declared once, in potential/model.py, with their defaults
    and checks), less `dtype` (the top-level `dtype`), and with the DATA_DERIVED ones None unless given.
    Sequences are YAML lists here; ModelConfig makes them tuples."""
    hints = typing.get_type_hints(ModelConfig)
    fields = []
    for f in dataclasses.fields(ModelConfig):
        if f.name == "dtype":
            continue
        if f.name in DATA_DERIVED:
            fields.append((f.name, DATA_DERIVED[f.name], field(default=None, metadata=f.metadata)))
            continue
        tp, default = hints[f.name], f.default
        if typing.get_origin(tp) is tuple:
            tp, default = list[typing.get_args(tp)[0]], list(default)
        fields.append((f.name, tp, field(default_factory=lambda d=default: d.copy() if isinstance(d, list) else d,
                                         metadata=f.metadata)))
    section = dataclasses.make_dataclass("ModelSection", fields + SECTION_ONLY)
    section.__module__ = __name__
    return section


ModelSection = _model_section()


@dataclass
class StageTwoConfig:
    """A second stage (like MACE's SWA stage): after `start_epoch` epochs, or after `start_fraction` of
    max_epochs or of the time budget (whichever comes first), train with other loss weights at a constant `lr`
    (the scheduler stops). The best model is tracked anew from there, since the loss weights change."""
    start_epoch: Optional[int] = field(default=None, metadata=check("nonnegative"))
    start_fraction: Optional[float] = field(default=None, metadata=check("unit"))
    energy_weight: float = field(default=1000.0, metadata=check("nonnegative"))
    forces_weight: float = field(default=100.0, metadata=check("nonnegative"))
    stress_weight: Optional[float] = field(default=None, metadata=check("nonnegative"))  # None: keep stage one's
    lr: float = field(default=1e-3, metadata=check("positive"))


@dataclass
class TrainingConfig:
    batch_size: int = field(default=5, metadata=check("positive"))
    valid_batch_size: Optional[int] = field(default=None, metadata=check("positive"))  # None: batch_size
    max_epochs: Optional[int] = field(default=100, metadata=check("positive"))
    time_budget_minutes: Optional[float] = field(default=None, metadata=check("positive"))  # wall clock, all runs
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = field(default=0.01, metadata=check("positive"))
    weight_decay: float = field(default=5e-7, metadata=check("nonnegative"))
    amsgrad: bool = True
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    lr_factor: float = field(default=0.8, metadata=check("unit"))         # plateau: lr *= lr_factor
    patience: int = field(default=50, metadata=check("nonnegative"))      # plateau: epochs without improvement
    min_lr: float = field(default=0.0, metadata=check("nonnegative"))     # plateau floor / cosine end
    warmup_steps: int = field(default=0, metadata=check("nonnegative"))   # linear warmup, optimizer steps
    clip_grad_norm: Optional[float] = field(default=10.0, metadata=check("positive"))
    ema_decay: Optional[float] = field(default=0.99, metadata=check("decay"))  # None: no EMA
    energy_weight: float = field(default=1.0, metadata=check("nonnegative"))   # on (eV/atom)^2
    forces_weight: float = field(default=100.0, metadata=check("nonnegative"))  # on (eV/Å)^2
    stress_weight: float = field(default=1.0, metadata=check("nonnegative"))    # on (eV/Å^3)^2
    huber_delta: Optional[float] = field(default=None, metadata=check("positive"))  # None: squared error
    stage_two: Optional[StageTwoConfig] = None
    eval_every: int = field(default=1, metadata=check("positive"))             # epochs between validations
    # padded static-shape step (potential/training/captured_step.py), captured as a CUDA graph on CUDA and run
    # eagerly elsewhere (on: also on CPU, for debugging); off: the eager unpadded step; auto: on for CUDA, off for CPU
    graph: Literal["auto", "on", "off"] = "auto"
    # committees (potential/training/committee_training.py): N members, seeds seed..seed+N-1, their own valid splits
    committee: Optional[int] = field(default=None, metadata=check("positive"))
    bootstrap: bool = True                # committee members train on a bootstrap resample of their train split
    freeze: list[Literal["embedding", "interactions", "readouts"]] = field(default_factory=list)  # with init_from


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output_dir: str = "runs/default"
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dtype: Literal["float32", "float64"] = "float64"
    num_workers: int = field(default=0, metadata=check("nonnegative"))  # DataLoader workers (neighbor lists)
    num_threads: Optional[int] = field(default=None, metadata=check("positive"))  # torch CPU threads; None: torch's


def _cross_check(cfg: TrainConfig) -> None:
    """Checks that involve more than one field."""
    t = cfg.training
    if cfg.data.train is None:
        raise ConfigError("data.train: a training file is required, got None")
    if t.max_epochs is None and t.time_budget_minutes is None:
        raise ConfigError("training: give max_epochs or time_budget_minutes (both are None)")
    if t.scheduler == "cosine" and t.max_epochs is None:
        raise ConfigError("training.scheduler: 'cosine' needs training.max_epochs, got None")
    s = t.stage_two
    if s is not None:
        if (s.start_epoch is None) == (s.start_fraction is None):
            raise ConfigError("training.stage_two: give exactly one of start_epoch and start_fraction, got "
                              f"start_epoch={s.start_epoch!r}, start_fraction={s.start_fraction!r}")
    if t.committee is not None and t.committee < 2:
        raise ConfigError(f"training.committee: expected an integer >= 2 (members), got {t.committee!r}")
    if t.freeze and cfg.model.init_from is None:
        raise ConfigError(f"training.freeze: {t.freeze} freezes pretrained layers, so it needs model.init_from "
                          f"(a model file to start from), got None")
    m = cfg.model
    if m.r_max <= 0:
        raise ConfigError(f"model.r_max: expected a positive float, got {m.r_max!r}")
    if cfg.data.valid is None and cfg.data.valid_fraction <= 0:
        raise ConfigError("data.valid_fraction: expected a fraction > 0 when data.valid is not given, "
                          f"got {cfg.data.valid_fraction!r}")


def parse_config(raw: dict | None) -> TrainConfig:
    """Build a checked TrainConfig from a plain dict (e.g. parsed YAML)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {raw!r}")
    cfg = build(TrainConfig, raw)
    _cross_check(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML from `path`, apply `overrides` (["training.lr=0.005", ...]) and check everything."""
    return parse_config(apply_overrides(read_yaml(path), list(overrides or [])))
