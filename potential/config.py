"""The training configuration: a tree of typed dataclasses loaded from YAML.

`load_config(path, overrides)` reads a YAML file, applies `--set a.b=value` overrides (each value is parsed
as YAML), and checks every key and value against the dataclasses below. An unknown key or a bad value raises
`ConfigError` with a message that quotes the dotted key and the value, e.g.
``training.lr: expected a positive float, got 'abc'``.

Units follow the project: eV, Å, eV/Å, eV/Å^3. Relative paths are relative to the working directory.
Fields marked "computed from data" in `ModelSection` are left `None` to be computed by the trainer;
giving them overrides the data-derived value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

__all__ = [
    "ConfigError", "GenerateConfig", "DataConfig", "ModelSection", "StageTwoConfig", "TrainingConfig",
    "TrainConfig", "load_config", "parse_config", "apply_overrides", "config_to_dict", "dump_config",
]


class ConfigError(ValueError):
    """A configuration (or input data) problem found before training starts."""


def _check(kind: str, **extra) -> dict:
    """Field metadata: `kind` is one of the value checks in `_CHECKS`."""
    return {"check": kind, **extra}


_CHECKS = {  # kind: (test, description with {} for the type name)
    "positive": (lambda v: v > 0, "a positive {}"),
    "nonnegative": (lambda v: v >= 0, "a non-negative {}"),
    "fraction": (lambda v: 0 <= v < 1, "a {} in [0, 1)"),
    "unit": (lambda v: 0 < v <= 1, "a {} in (0, 1]"),
    "decay": (lambda v: 0 <= v < 1, "a {} in [0, 1)"),
}


@dataclass
class GenerateConfig:
    """Synthetic data made on first use when `data.train` does not exist (the quickstart's EMT Cu set)."""
    kind: Literal["cu_emt"] = "cu_emt"
    num_structures: int = field(default=200, metadata=_check("positive"))
    seed: int = 0


@dataclass
class DataConfig:
    """Where the structures come from. Files are our HDF5 (.h5/.hdf5) or anything ASE reads (extxyz, ...);
    the *_key names apply to ASE-readable files (our HDF5 has fixed names)."""
    train: Optional[str] = None                  # required
    valid: Optional[str] = None                  # None: split valid_fraction off the training file
    test: Optional[str] = None                   # evaluated once at the end with the best model
    isolated_atoms: Optional[str] = None         # single-atom energies (eV) -> reference energies E0
    valid_fraction: float = field(default=0.1, metadata=_check("fraction"))
    energy_key: str = "energy"                   # eV
    forces_key: str = "forces"                   # eV/Å
    stress_key: str = "stress"                   # eV/Å^3, ASE sign
    virial_key: str = "virial"                   # eV (converted to stress by data)
    generate: Optional[GenerateConfig] = None


@dataclass
class ModelSection:
    """Everything `potential.ModelConfig` takes; dtype comes from the top-level `dtype`."""
    channels: int = field(default=32, metadata=_check("positive"))
    lmax: int = field(default=1, metadata=_check("nonnegative"))           # hidden node features l <= lmax
    lmax_sh: int = field(default=3, metadata=_check("nonnegative"))        # edge spherical harmonics
    correlation: int = field(default=3, metadata=_check("positive"))       # body order of the product basis - 1
    num_interactions: int = field(default=2, metadata=_check("positive"))
    r_max: float = field(default=5.0, metadata=_check("positive"))         # Å; also the neighbor-list cutoff
    num_bessel: int = field(default=8, metadata=_check("positive"))
    envelope_p: int = field(default=6, metadata=_check("positive"))
    radial_hidden: list[int] = field(default_factory=lambda: [64, 64, 64], metadata=_check("positive"))
    readout_hidden: int = field(default=16, metadata=_check("positive"))
    backend: str = "auto"                                                  # kernels backend: auto|reference|triton
    # computed from data unless given:
    elements: Optional[list[Union[int, str]]] = None                       # atomic numbers or symbols
    atomic_energies: Optional[dict[Union[int, str], float]] = None         # eV per isolated atom, by element
    avg_num_neighbors: Optional[float] = field(default=None, metadata=_check("positive"))
    scale: Optional[float] = field(default=None, metadata=_check("positive"))   # eV (force RMS, eV/Å x 1 Å)
    shift: Optional[float] = None                                           # eV per atom
    # fine-tuning (potential/finetune.py): start from this model file's architecture and weights
    init_from: Optional[str] = None
    refit_references: bool = True         # with init_from: refit the E0s and the shift on the new training data


@dataclass
class StageTwoConfig:
    """A second stage (like MACE's SWA stage): after `start_epoch` epochs, or after `start_fraction` of
    max_epochs or of the time budget (whichever comes first), train with other loss weights at a constant `lr`
    (the scheduler stops). The best model is tracked anew from there, since the loss weights change."""
    start_epoch: Optional[int] = field(default=None, metadata=_check("nonnegative"))
    start_fraction: Optional[float] = field(default=None, metadata=_check("unit"))
    energy_weight: float = field(default=1000.0, metadata=_check("nonnegative"))
    forces_weight: float = field(default=100.0, metadata=_check("nonnegative"))
    stress_weight: Optional[float] = field(default=None, metadata=_check("nonnegative"))  # None: keep stage one's
    lr: float = field(default=1e-3, metadata=_check("positive"))


@dataclass
class TrainingConfig:
    batch_size: int = field(default=5, metadata=_check("positive"))
    valid_batch_size: Optional[int] = field(default=None, metadata=_check("positive"))  # None: batch_size
    max_epochs: Optional[int] = field(default=100, metadata=_check("positive"))
    time_budget_minutes: Optional[float] = field(default=None, metadata=_check("positive"))  # wall clock, all runs
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = field(default=0.01, metadata=_check("positive"))
    weight_decay: float = field(default=5e-7, metadata=_check("nonnegative"))
    amsgrad: bool = True
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    lr_factor: float = field(default=0.8, metadata=_check("unit"))         # plateau: lr *= lr_factor
    patience: int = field(default=50, metadata=_check("nonnegative"))      # plateau: epochs without improvement
    min_lr: float = field(default=0.0, metadata=_check("nonnegative"))     # plateau floor / cosine end
    warmup_steps: int = field(default=0, metadata=_check("nonnegative"))   # linear warmup, optimizer steps
    clip_grad_norm: Optional[float] = field(default=10.0, metadata=_check("positive"))
    ema_decay: Optional[float] = field(default=0.99, metadata=_check("decay"))  # None: no EMA
    energy_weight: float = field(default=1.0, metadata=_check("nonnegative"))   # on (eV/atom)^2
    forces_weight: float = field(default=100.0, metadata=_check("nonnegative"))  # on (eV/Å)^2
    stress_weight: float = field(default=1.0, metadata=_check("nonnegative"))    # on (eV/Å^3)^2
    huber_delta: Optional[float] = field(default=None, metadata=_check("positive"))  # None: squared error
    stage_two: Optional[StageTwoConfig] = None
    eval_every: int = field(default=1, metadata=_check("positive"))             # epochs between validations
    # committees (potential/committee_training.py): N members, seeds seed..seed+N-1, their own valid splits
    committee: Optional[int] = field(default=None, metadata=_check("positive"))
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
    num_workers: int = field(default=0, metadata=_check("nonnegative"))  # DataLoader workers (neighbor lists)
    num_threads: Optional[int] = field(default=None, metadata=_check("positive"))  # torch CPU threads; None: torch's


# ---------------------------------------------------------------------------------------------- parsing


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a float"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list (each {_describe(typing.get_args(tp)[0])})"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _convert(value: Any, tp, key: str, check: str | None) -> Any:
    """Convert a YAML value to type `tp`; raise ConfigError quoting `key` and the value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(what: str | None = None):
        what = what or _describe(tp)
        if check and tp in (int, float):
            what = _CHECKS[check][1].format("integer" if tp is int else "float")
        return ConfigError(f"{key}: expected {what}, got {value!r}")

    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, check)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else bad()
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise bad()
        return _build(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise bad()
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [_convert(v, args[0], f"{key}[{i}]", check) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return {_convert(k, args[0], f"{key}", None): _convert(v, args[1], f"{key}.{k}", check)
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if tp in (int, float):
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value_num = float(value)
            except ValueError:
                raise bad() from None
        elif isinstance(value, (int, float)):
            value_num = value
        else:
            raise bad()
        if tp is int:
            if float(value_num) != int(value_num):
                raise bad()
            value_num = int(value_num)
        else:
            value_num = float(value_num)
            if value_num != value_num or value_num in (float("inf"), float("-inf")):
                raise bad()
        if check and not _CHECKS[check][0](value_num):
            raise bad()
        return value_num
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls, raw: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown key '{key}' (valid keys{' in ' + prefix if prefix else ''}: "
                              f"{', '.join(names)})")
        kwargs[k] = _convert(v, hints[k], key, names[k].metadata.get("check"))
    return cls(**kwargs)


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
    cfg = _build(TrainConfig, raw, "")
    _cross_check(cfg)
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings to a nested dict in place (value parsed as YAML) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=0.005")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse value {text!r} as YAML ({e})") from None
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: bad key {key!r}")
        node = raw
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{'.'.join(parts[:i + 1])}' is not a section "
                                  f"(it is {child!r})")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML from `path`, apply `overrides` (["training.lr=0.005", ...]) and check everything."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file not found: '{path}'")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {raw!r}")
    return parse_config(apply_overrides(raw, list(overrides or [])))


def config_to_dict(cfg) -> dict:
    """Plain-dict form (YAML-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


def dump_config(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML (round-trips through `load_config`)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
