"""MD run settings (``md.py`` / ``configs/md_*.yaml``) and the structures they name.

Units follow ASE users' habits at the interface and are converted once, in
``potential.md_runner``: temperature K, pressure GPa, timestep / tdamp / pdamp fs,
friction 1/fs, compressibility 1/GPa, skin Å.

A structure is either a path to any ASE-readable file (the last frame is used, as
``ase.io.read`` does) or a mapping that builds one with ASE:

    structure: {bulk: Cu, cubic: true, repeat: [3, 3, 3]}        # ase.build.bulk
    structure: {molecule: H2O, vacuum: 5.0}                      # ase.build.molecule
    structure: {path: traj.xyz, index: 0}                        # a chosen frame
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import ase
import ase.build
import ase.io

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
BAROSTATS = ("mtk", "berendsen")
DEVICES = ("cpu", "cuda")
ENGINES = ("ase", "gpu")


@dataclasses.dataclass
class MDConfig:
    """One MD run. ``None`` in tdamp / pdamp means 100 / 1000 timesteps (ASE's advice)."""

    model: str | list | None = None  # path to a tumbler model file, or several: a committee (potential/committee.py)
    structure: str | dict | None = None  # path or build spec (module docstring)
    ensemble: str = "nve"
    thermostat: str | None = None  # nvt only; default "langevin"
    barostat: str | None = None  # npt only; default "mtk" (isotropic MTK, Nose-Hoover chains)
    temperature: float = 300.0  # K; initial Maxwell-Boltzmann velocities and target
    pressure: float = 0.0  # GPa, npt target
    timestep: float = 1.0  # fs
    steps: int = 1000
    trajectory: str | None = None  # .traj (ase.io.Trajectory) or .xyz / .extxyz
    log: str | None = None  # CSV text file, "-" for stdout
    interval: int = 10  # steps between log lines and trajectory frames
    device: str = "cpu"
    seed: int = 0  # velocities and stochastic thermostats
    friction: float = 0.01  # 1/fs, Langevin
    tdamp: float | None = None  # fs, Bussi / Nose-Hoover / MTK / Berendsen thermostat time
    pdamp: float | None = None  # fs, MTK / Berendsen barostat time
    compressibility: float = 0.01  # 1/GPa, Berendsen barostat only (Cu: ~1/140)
    skin: float = 1.0  # Å, Verlet-list skin of the calculator
    threads: int | None = None  # torch intra-op threads; None = torch's default (1 is best for small CPU systems)
    progress: bool = True  # tqdm bar (shown on terminals only)
    engine: str = "ase"  # "ase": ASE's integrators with potential.Calculator; "gpu": potential.dynamics (device-resident)
    uncertainty_threshold: float | None = None  # eV/Å, committee max force spread (potential/uncertainty.py)
    uncertainty_action: str = "stop"  # above the threshold: write the frame and "stop", or "write" and go on
    uncertainty_frames: str = "uncertain.extxyz"  # where those frames go (extended XYZ)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "MDConfig":
        """Build from a mapping; unknown keys and bad values raise ValueError quoting them."""
        prefix = f"{where}: " if where else ""
        if not isinstance(d, dict):
            raise ValueError(f"{prefix}expected a mapping of MD options, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in names:
                raise ValueError(f"{prefix}unknown key {key!r}; known keys: {', '.join(sorted(names))}")
        cfg = cls(**d)
        cfg.validate(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str = "config") -> None:
        def bad(key, why):
            raise ValueError(f"{where + ': ' if where else ''}{key}={getattr(self, key)!r} {why}")

        def number(key, positive=False, nonneg=False, allow_none=False):
            v = getattr(self, key)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(key, "must be a finite number")
            if positive and v <= 0:
                bad(key, "must be > 0")
            if nonneg and v < 0:
                bad(key, "must be >= 0")

        def integer(key, minimum):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                bad(key, f"must be an integer >= {minimum}")

        def choice(key, options, allow_none=False):
            v = getattr(self, key)
            if v is None and allow_none:
                return
            if v not in options:
                bad(key, f"must be one of {', '.join(options)}")

        choice("ensemble", ENSEMBLES)
        choice("thermostat", THERMOSTATS, allow_none=True)
        choice("barostat", BAROSTATS, allow_none=True)
        choice("device", DEVICES)
        choice("engine", ENGINES)
        number("temperature", nonneg=True)
        number("pressure")
        number("timestep", positive=True)  # fs
        number("friction", positive=True)
        number("tdamp", positive=True, allow_none=True)
        number("pdamp", positive=True, allow_none=True)
        number("compressibility", positive=True)
        number("skin", nonneg=True)
        integer("steps", 0)
        integer("interval", 1)
        integer("seed", 0)
        if self.threads is not None:
            integer("threads", 1)
        if isinstance(self.model, list) and not (self.model and all(isinstance(m, (str, Path)) for m in self.model)):
            bad("model", "must be a path or a non-empty list of paths (a committee)")
        number("uncertainty_threshold", positive=True, allow_none=True)
        choice("uncertainty_action", ("stop", "write"))
        for key in ("trajectory", "log", "uncertainty_frames") + (() if isinstance(self.model, list) else ("model",)):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), (str, Path)):
                bad(key, "must be a path")
        if not isinstance(self.progress, bool):
            bad("progress", "must be true or false")
        if self.structure is not None and not isinstance(self.structure, (str, Path, dict)):
            bad("structure", "must be a path or a mapping such as {bulk: Cu, cubic: true, repeat: [3,3,3]}")
        if self.ensemble in ("nvt", "npt") and self.temperature <= 0:
            bad("temperature", f"must be > 0 K for ensemble {self.ensemble}")
        if self.trajectory is not None and Path(self.trajectory).suffix.lower() not in (".traj", ".xyz", ".extxyz"):
            bad("trajectory", "must end in .traj (ASE trajectory), .xyz or .extxyz (extended XYZ)")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read an MD YAML file into a plain mapping (validated later, after CLI overrides)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MD config file not found: {path}")
    with open(path) as f:
        d = yaml.safe_load(f)
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of MD options at top level, got {type(d).__name__}")
    return d


_BUILD_KEYS = {
    "bulk": {"bulk", "crystalstructure", "a", "b", "c", "alpha", "covera", "cubic", "orthorhombic", "repeat"},
    "molecule": {"molecule", "vacuum", "repeat"},
    "path": {"path", "index", "repeat"},
}


def build_structure(spec: str | Path | dict, base_dir: str | Path | None = None) -> tuple[ase.Atoms, str]:
    """Return (atoms, name) for a path or a build mapping (see the module docstring).

    Relative paths are tried as given, then relative to ``base_dir`` (the config file's folder).
    """
    if isinstance(spec, (str, Path)):
        spec = {"path": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"structure: expected a path or a mapping, got {spec!r}")
    kinds = [k for k in _BUILD_KEYS if k in spec]
    if len(kinds) != 1:
        raise ValueError(f"structure: give exactly one of 'bulk', 'molecule' or 'path', got {spec!r}")
    kind = kinds[0]
    for key in spec:
        if key not in _BUILD_KEYS[kind]:
            known = ", ".join(sorted(_BUILD_KEYS[kind]))
            raise ValueError(f"structure: unknown key {key!r} for a {kind!r} structure; known: {known}")
    opts = {k: v for k, v in spec.items() if k not in (kind, "repeat", "index", "vacuum")}
    try:
        if kind == "bulk":
            atoms = ase.build.bulk(spec["bulk"], **opts)
            name = f"bulk {spec['bulk']}"
        elif kind == "molecule":
            atoms = ase.build.molecule(spec["molecule"])
            atoms.center(vacuum=spec.get("vacuum", 5.0))
            name = f"molecule {spec['molecule']}"
        else:
            path = Path(spec["path"])
            if not path.exists() and base_dir is not None and (Path(base_dir) / path).exists():
                path = Path(base_dir) / path
            if not path.is_file():
                raise FileNotFoundError(f"structure file not found: {spec['path']}")
            atoms = ase.io.read(path, index=spec.get("index", -1))
            name = str(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # ASE raises ValueError, KeyError, StopIteration, ... for bad input
        raise ValueError(f"structure {spec!r}: cannot build or read it: {type(e).__name__}: {e}") from e
    if not isinstance(atoms, ase.Atoms):
        raise ValueError(f"structure: index {spec.get('index')!r} of {name} must select one frame, not several")
    if "repeat" in spec:
        rep = spec["repeat"]
        try:
            atoms = atoms.repeat(rep)
        except Exception as e:
            raise ValueError(f"structure: repeat={rep!r} must be an int or three ints ({e})") from e
        name += f" x{rep}"
    if len(atoms) == 0:
        raise ValueError(f"structure {name} has no atoms")
    return atoms, name
