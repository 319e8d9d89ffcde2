"""Training data preparation: read, split and check the structures, and compute the data-derived model inputs.

All checks run before any training and raise `ConfigError` naming the config key, the file, and where it
matters the structure index: missing files, a loss weight on a label the data lacks, an element in the
validation/test set that the model does not know, a batch larger than the training set.

Data-derived model inputs (each can be overridden in the config's `model` section):
  elements           sorted atomic numbers of the training set
  atomic_energies    eV per element: isolated-atom entries (in data.train or data.isolated_atoms) when
                     present, else least squares (data.stats.reference_energies), 0 when there are no energies
  avg_num_neighbors  mean neighbor count within r_max (data.stats)
  shift, scale       data.stats.energy_shift_scale: shift (eV/atom) = mean of (E - sum_i E0[Z_i]) / N over the
                     training structures with energy; scale (eV) = RMS of the training force components (eV/Å
                     times 1 Å), else the std of the per-atom residual energies, else 1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

import data
from data.stats import energy_shift_scale, is_isolated_atom, mean_num_neighbors, reference_energies
from .config import ConfigError, TrainConfig

__all__ = ["TrainData", "prepare_data", "data_statistics", "element_number"]


@dataclass
class TrainData:
    train: list                       # data.Structure, isolated atoms removed
    valid: list
    test: list = field(default_factory=list)
    isolated: list = field(default_factory=list)   # single-atom reference entries found in the training file
    train_source: str = ""


def element_number(e, key: str) -> int:
    """Atomic number from a number or a symbol; ConfigError naming `key` otherwise."""
    if isinstance(e, str) and e in atomic_numbers:
        return atomic_numbers[e]
    if isinstance(e, int) and 0 < e < len(chemical_symbols):
        return e
    raise ConfigError(f"{key}: expected an element symbol or atomic number, got {e!r}")


def _read(path: str | None, key: str, cfg: TrainConfig) -> list:
    if path is None:
        return []
    if not Path(path).is_file():
        raise ConfigError(f"{key}: file not found: '{path}'")
    d = cfg.data
    try:
        structures = data.read_structures(path, energy_key=d.energy_key, forces_key=d.forces_key,
                                          stress_key=d.stress_key, virial_key=d.virial_key)
    except (ValueError, KeyError, OSError) as e:
        raise ConfigError(f"{key}: cannot read '{path}': {e}") from e
    structures = list(structures)
    if not structures:
        raise ConfigError(f"{key}: '{path}' holds no structures")
    return structures


def _where(s) -> str:
    return f"structure {s.index} of '{s.source}'" if s.source else f"structure {s.index}"


def prepare_data(cfg: TrainConfig, log=print) -> TrainData:
    """Generate the demo set if configured, read train/valid/test, split, and check labels and sizes."""
    d, t = cfg.data, cfg.training
    if d.generate is not None:
        if not Path(d.train).exists():
            log(f"generating {d.generate.num_structures} EMT Cu structures into '{d.train}' (first use)")
        data.synthetic.ensure_cu_dataset(d.train, n_structures=d.generate.num_structures, seed=d.generate.seed)
    train = _read(d.train, "data.train", cfg)
    valid = _read(d.valid, "data.valid", cfg)
    test = _read(d.test, "data.test", cfg)
    extra = _read(d.isolated_atoms, "data.isolated_atoms", cfg)
    for s in extra:
        if not is_isolated_atom(s):
            raise ConfigError(f"data.isolated_atoms: {_where(s)} is not an isolated atom ({len(s)} atoms)")
    isolated = extra + [s for s in train if is_isolated_atom(s)]
    train = [s for s in train if not is_isolated_atom(s)]
    valid = [s for s in valid if not is_isolated_atom(s)]
    if not train:
        raise ConfigError(f"data.train: '{d.train}' holds only isolated atoms, nothing to train on")
    if d.valid is None:
        perm = np.random.default_rng(cfg.seed).permutation(len(train))
        n_valid = max(1, int(round(d.valid_fraction * len(train))))
        if len(train) - n_valid < 1:
            raise ConfigError(f"data.valid_fraction: {d.valid_fraction} leaves no training structures out of "
                              f"{len(train)} in '{d.train}'")
        valid = [train[i] for i in sorted(perm[:n_valid])]
        train = [train[i] for i in sorted(perm[n_valid:])]
    if not valid:
        raise ConfigError(f"data.valid: '{d.valid}' holds only isolated atoms, nothing to validate on")
    if t.batch_size > len(train):
        raise ConfigError(f"training.batch_size: {t.batch_size} is larger than the training set "
                          f"({len(train)} structures from '{d.train}')")
    stage = t.stage_two
    for label, has, key in (("energies", lambda s: s.energy is not None, "energy"),
                            ("forces", lambda s: s.forces is not None, "forces")):
        weights = {f"training.{key}_weight": getattr(t, f"{key}_weight")}
        if stage is not None:
            weights[f"training.stage_two.{key}_weight"] = getattr(stage, f"{key}_weight")
        for wkey, w in weights.items():
            if w > 0 and not any(has(s) for s in train):
                raise ConfigError(
                    f"{wkey}: is {w} but the training set '{d.train}' has no {label} "
                    f"(data.{key}_key='{getattr(d, key + '_key')}' for ASE-readable files); "
                    f"set {wkey}=0 to train without {label}")
    log(f"data: {len(train)} train, {len(valid)} valid, {len(test)} test structures"
        + (f", {len(isolated)} isolated-atom reference entries" if isolated else ""))
    return TrainData(train=train, valid=valid, test=test, isolated=isolated, train_source=d.train)


def data_statistics(cfg: TrainConfig, sets: TrainData, log=print) -> dict:
    """The data-derived ModelConfig inputs (see the module docstring), with config overrides applied.
    Returns {"elements": [Z], "atomic_energies": [eV], "avg_num_neighbors", "scale", "shift"}."""
    m = cfg.model
    train = sets.train
    present = sorted({int(z) for s in train for z in s.numbers})
    if m.elements is not None:
        elements = sorted({element_number(e, "model.elements") for e in m.elements})
        missing = sorted(set(present) - set(elements))
        if missing:
            raise ConfigError(f"model.elements: {m.elements} lacks {[chemical_symbols[z] for z in missing]} "
                              f"found in the training set '{sets.train_source}'")
    else:
        elements = present
    for name, structures in (("data.valid", sets.valid), ("data.test", sets.test)):
        for s in structures:
            unknown = sorted({int(z) for z in s.numbers} - set(elements))
            if unknown:
                raise ConfigError(
                    f"{name}: element {', '.join(chemical_symbols[z] for z in unknown)} in {_where(s)} is absent "
                    f"from the training set (elements {[chemical_symbols[z] for z in elements]})")
    labelled = [s for s in train if s.energy is not None]
    if m.atomic_energies is not None:
        given = {element_number(k, f"model.atomic_energies.{k}"): v for k, v in m.atomic_energies.items()}
        missing = [chemical_symbols[z] for z in elements if z not in given]
        if missing:
            raise ConfigError(f"model.atomic_energies: no energy given for {missing}, got {m.atomic_energies}")
        e0 = {z: float(given[z]) for z in elements}
        how = "from the config"
    elif labelled or sets.isolated:
        iso = [s for s in sets.isolated if s.energy is not None and int(s.numbers[0]) in elements]
        try:
            e0 = reference_energies(iso + labelled, elements)
        except ValueError as e:
            raise ConfigError(f"model.atomic_energies: cannot compute them from the data ({e}); give them "
                              f"per element, e.g. --set 'model.atomic_energies={{Cu: -0.5}}'") from e
        e0 = {int(z): float(e0[z]) for z in elements}
        have = {int(s.numbers[0]) for s in iso}
        how = ("from isolated atoms" if have >= set(elements) else
               "by least squares" if not have else "from isolated atoms and least squares")
    else:
        e0 = {z: 0.0 for z in elements}
        how = "0 (no energies in the training set)"
    log("atomic energies (eV) " + how + ": " + ", ".join(f"{chemical_symbols[z]} {e0[z]:.6f}" for z in elements))
    shift, scale = energy_shift_scale(train, e0)
    shift = float(shift if m.shift is None else m.shift)
    scale = float(scale if m.scale is None else m.scale)
    avg = float(mean_num_neighbors(train, m.r_max) if m.avg_num_neighbors is None else m.avg_num_neighbors)
    log(f"shift {shift:.6f} eV/atom, scale {scale:.6f} eV, mean neighbors {avg:.3f} within {m.r_max} Å")
    return {"elements": elements, "atomic_energies": [e0[z] for z in elements],
            "avg_num_neighbors": avg, "scale": scale, "shift": shift}
