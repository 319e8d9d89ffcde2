"""MD run settings (``md.py`` / ``configs/md_*.yaml``) and the structures they name.

Units follow ASE users' habits at the interface and are converted once, in
``potential.simulation.ase_md``: temperature K, pressure GPa, timestep / tdamp / pdamp fs,
friction 1/fs, compressibility 1/GPa, skin Å.

A structure is either a path to any ASE-readable file (the last frame is used, as
``ase.io.read`` does) or a mapping that builds one with ASE:

    structure: {bulk: Cu, cubic: true, repeat: [3, 3, 3]}        # ase.build.bulk
    structure: {molecule: H2O, vacuum: 5.0}                      # ase.build.molecule
    structure: {path: traj.xyz, index: 0}                        # a chosen frame
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import ase
import ase.build
import ase.io

from ..config_tree import ConfigError, build, check, read_yaml


@dataclasses.dataclass
class MDConfig:
    """One MD run, read with the same mechanism as train.py's config (potential/config_tree.py): an unknown key or a
    bad value is a ConfigError (a ValueError) quoting the key and the value. ``None`` in tdamp / pdamp means
    100 / 1000 timesteps (ASE's advice)."""

    model: Union[str, list[str], None] = None  # a tumbler model file, or several: a committee (potential/committee.py)
    structure: Union[str, dict[str, Any], None] = None  # path or build spec (module docstring)
    ensemble: Literal["nve", "nvt", "npt"] = "nve"
    thermostat: Optional[Literal["langevin", "bussi", "nose-hoover"]] = None  # nvt only; default "langevin"
    barostat: Optional[Literal["mtk", "berendsen"]] = None  # npt only; default "mtk" (isotropic MTK, Nose-Hoover chains)
    temperature: float = field(default=300.0, metadata=check("nonnegative"))  # K; initial velocities and target
    pressure: float = 0.0  # GPa, npt target
    timestep: float = field(default=1.0, metadata=check("positive"))  # fs
    steps: int = field(default=1000, metadata=check("nonnegative"))
    trajectory: Optional[str] = None  # .traj (ase.io.Trajectory) or .xyz / .extxyz
    log: Optional[str] = None  # CSV text file, "-" for stdout
    interval: int = field(default=10, metadata=check("positive"))  # steps between log lines and trajectory frames
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = field(default=0, metadata=check("nonnegative"))  # velocities and stochastic thermostats
    friction: float = field(default=0.01, metadata=check("positive"))  # 1/fs, Langevin
    tdamp: Optional[float] = field(default=None, metadata=check("positive"))  # fs, thermostat time
    pdamp: Optional[float] = field(default=None, metadata=check("positive"))  # fs, barostat time
    compressibility: float = field(default=0.01, metadata=check("positive"))  # 1/GPa, Berendsen only (Cu: ~1/140)
    skin: float = field(default=1.0, metadata=check("nonnegative"))  # Å, Verlet-list skin of the calculator
    threads: Optional[int] = field(default=None, metadata=check("positive"))  # torch threads; None = torch's default
    progress: bool = True  # tqdm bar (shown on terminals only)
    engine: Literal["ase", "gpu"] = "ase"  # "ase": ASE's integrators + potential.Calculator; "gpu": simulation.dynamics
    uncertainty_threshold: Optional[float] = field(default=None, metadata=check("positive"))  # eV/Å, committee
    uncertainty_action: Literal["stop", "write"] = "stop"  # above the threshold: write the frame, then stop or go on
    uncertainty_frames: str = "uncertain.extxyz"  # where those frames go (extended XYZ; simulation/uncertainty.py)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "MDConfig":
        """Build from a mapping (a YAML file's, merged with md.py's flags); ConfigError names the bad key."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where or 'config'}: expected a mapping of MD options, got {type(d).__name__}")
        try:
            cfg = build(cls, d)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}" if where else str(e)) from None
        cfg.validate(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str = "config") -> None:
        """Check every field (also of an MDConfig built in Python) and the rules that involve several fields."""
        prefix = f"{where}: " if where else ""
        try:
            build(type(self), dataclasses.asdict(self))
        except ConfigError as e:
            raise ConfigError(prefix + str(e)) from None
        if isinstance(self.model, list) and not self.model:
            raise ConfigError(f"{prefix}model: expected a path or a non-empty list of paths (a committee), got []")
        if self.ensemble in ("nvt", "npt") and self.temperature <= 0:
            raise ConfigError(f"{prefix}temperature: expected > 0 K for ensemble {self.ensemble}, got {self.temperature!r}")
        if self.trajectory is not None and Path(self.trajectory).suffix.lower() not in (".traj", ".xyz", ".extxyz"):
            raise ConfigError(f"{prefix}trajectory: expected a name ending in .traj (ASE trajectory), .xyz or .extxyz "
                              f"(extended XYZ), got {self.trajectory!r}")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read an MD YAML file into a plain mapping (checked later, after md.py's flags are merged in)."""
    return read_yaml(path, what="md.py --config")


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
