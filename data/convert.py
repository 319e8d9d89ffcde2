"""Convert any supported dataset to a tumbler HDF5 file (the one place units change).

    python -m data.convert IN OUT.h5 [--energy-key K] [--forces-key K] [--stress-key K]
        [--virial-key K] [--format auto|ase|ani|deepmd|mlearn|tumbler] [--limit N]
        [--allow-missing energy|forces ...] [--config-type LABEL] [--type-map O,H]

Formats (units and the checks behind them: data/readers.py):
  ase      anything ase.io.read understands (extxyz, ...); labels are looked up by key
           in atoms.info, atoms.arrays, then the calculator results. Defaults:
           energy, forces, stress, virial (virial in eV -> stress = -virial/volume).
  ani      ANI-1 layout HDF5 (Hartree, Hartree/Bohr -> eV, eV/Å). Defaults: energies, forces.
  deepmd   DeePMD npy system folder(s); --type-map O,H for systems without type_map.raw.
  mlearn   Zuo et al. 2020 / mlearn JSON with outputs.virial_stress (kBar).
  tumbler  our own HDF5 (re-validated and rewritten).
  auto     a folder -> deepmd; HDF5 -> tumbler or ani; mlearn-style .json -> mlearn; else ase.

Every structure needs an energy, and forces unless it has a single atom (an isolated
atom carries no force); `--allow-missing energy` / `forces` lifts that for energy-only
or force-only data. Stress is optional per structure. Errors name the file, the
structure index and the key. Structures stream from the input to the output in
blocks (large files need not fit in memory). The output is written to a temporary
file and renamed, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .hdf5 import Dataset, check_hdf5, is_tumbler_file, open_dataset, write_dataset
from .readers import is_mlearn_json, iter_ani, iter_ase, iter_deepmd, iter_mlearn_json
from .structure import DataError, Structure, where

FORMATS = ("auto", "ase", "ani", "deepmd", "mlearn", "tumbler")
LABELS = ("energy", "forces")


def detect_format(path) -> str:
    path = Path(path)
    if path.is_dir():
        return "deepmd"
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        check_hdf5(path)  # a text file named .h5 gets a clear error here
        return "tumbler" if is_tumbler_file(path) else "ani"
    if is_mlearn_json(path):
        return "mlearn"
    return "ase"


def _check_required(s: Structure, available, require, key_names: dict) -> Structure:
    """s, or a DataError if it lacks a required label."""
    if "energy" in require and s.energy is None:
        raise DataError(f"{where(s.source, s.index, key_names['energy'])}: energy not found (available keys: "
                        f"{available}); choose one with --energy-key, or pass --allow-missing energy")
    if "forces" in require and s.forces is None and len(s) > 1:
        raise DataError(f"{where(s.source, s.index, key_names['forces'])}: forces not found (available keys: "
                        f"{available}); choose one with --forces-key, or pass --allow-missing forces")
    return s


def iter_structures(path, format: str = "auto", energy_key: str | None = None, forces_key: str | None = None,
                    stress_key: str | None = None, virial_key: str | None = None, limit: int | None = None,
                    require=(), config_type: str | None = None, validate: bool = True,
                    type_map=None) -> Iterator[Structure]:
    """Stream Structures (tumbler units) from any supported file; arguments as `read_structures`."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {FORMATS}")
    unknown = set(require) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown required label(s) {sorted(unknown)}; choose from {LABELS}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "ase":
        names = {"energy": energy_key or "energy", "forces": forces_key or "forces"}
        pairs = iter_ase(path, names["energy"], names["forces"], stress_key or "stress", virial_key or "virial",
                         limit=limit)
    elif fmt == "ani":
        names = {"energy": energy_key or "energies", "forces": forces_key or "forces"}
        pairs = iter_ani(path, names["energy"], names["forces"], limit=limit)
    elif fmt == "deepmd":
        names = {"energy": "energy.npy", "forces": "force.npy"}
        pairs = iter_deepmd(path, limit=limit, type_map=type_map)
    elif fmt == "mlearn":
        names = {"energy": "outputs.energy", "forces": "outputs.forces"}
        pairs = iter_mlearn_json(path, limit=limit)
    else:
        dataset = open_dataset(path)
        names = {"energy": "energy", "forces": "forces"}
        rows = range(len(dataset) if limit is None else min(limit, len(dataset)))
        pairs = ((s, [k for k in ("energy", "forces", "stress") if getattr(s, k) is not None])
                 for s in (dataset[i] for i in rows))
    for s, available in pairs:
        _check_required(s, available, require, names)
        if config_type is not None:
            s.config_type = config_type
        yield s.validate() if validate else s


def read_structures(path, format: str = "auto", energy_key: str | None = None, forces_key: str | None = None,
                    stress_key: str | None = None, virial_key: str | None = None, limit: int | None = None,
                    require=(), config_type: str | None = None, validate: bool = True,
                    type_map=None) -> list[Structure]:
    """Read any supported file into validated Structures (tumbler units).

    `require` lists labels ("energy", "forces") that every structure must carry
    (forces are never required of single-atom structures). `config_type` overrides
    the label of every structure. Keys left as None use each format's defaults.
    `type_map` lists DeePMD element symbols by type index (for systems without type_map.raw).
    """
    return list(iter_structures(path, format=format, energy_key=energy_key, forces_key=forces_key,
                                stress_key=stress_key, virial_key=virial_key, limit=limit, require=require,
                                config_type=config_type, validate=validate, type_map=type_map))


def convert(input_path, output_path, format: str = "auto", energy_key=None, forces_key=None, stress_key=None,
            virial_key=None, limit=None, allow_missing=(), config_type=None, type_map=None) -> Dataset:
    """Stream `input_path` into `output_path`, requiring energy and forces unless allowed missing.

    Returns the written file, opened (lazy). On any error nothing is written.
    """
    if os.path.abspath(input_path) == os.path.abspath(output_path):
        raise DataError(f"{output_path}: output would overwrite the input")
    require = tuple(label for label in LABELS if label not in set(allow_missing))
    # write_dataset validates every structure: no need to do it twice.
    stream = iter_structures(input_path, format=format, energy_key=energy_key, forces_key=forces_key,
                             stress_key=stress_key, virial_key=virial_key, limit=limit, require=require,
                             config_type=config_type, validate=False, type_map=type_map)
    first = next(stream, None)
    if first is None:
        raise DataError(f"{input_path}: no structures found")
    write_dataset(output_path, itertools.chain([first], stream), source=os.path.abspath(input_path))
    return open_dataset(output_path)


def summary(dataset: Dataset) -> str:
    """One line describing a written dataset: counts, labels present, config types."""
    n = len(dataset)
    counts = {k: int(v.sum()) for k, v in dataset.label_masks().items()}
    types = dict(collections.Counter(dataset.config_types))
    return (f"wrote {n} structures ({int(dataset.ptr[-1])} atoms) to {dataset.path}; labels present: "
            f"energy {counts['energy']}/{n}, forces {counts['forces']}/{n}, stress {counts['stress']}/{n}; "
            f"config types: {types}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="input file or DeePMD folder")
    parser.add_argument("output", help="output tumbler HDF5 file")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--energy-key", default=None, help="energy label name (ase default: energy; ani: energies)")
    parser.add_argument("--forces-key", default=None, help="forces label name (ase default: forces; ani: forces)")
    parser.add_argument("--stress-key", default=None, help="stress label, eV/Å^3, 6 or 9 comps (default: stress)")
    parser.add_argument("--virial-key", default=None, help="virial label, eV, 6 or 9 comps (default: virial)")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N structures")
    parser.add_argument("--allow-missing", action="append", default=[], choices=LABELS,
                        help="allow structures without this label (repeatable)")
    parser.add_argument("--config-type", default=None, help="set this config_type on every structure")
    parser.add_argument("--type-map", default=None, help="DeePMD elements by type index, e.g. O,H (when type_map.raw is absent)")
    args = parser.parse_args(argv)
    try:
        dataset = convert(args.input, args.output, format=args.format, energy_key=args.energy_key,
                             forces_key=args.forces_key, stress_key=args.stress_key, virial_key=args.virial_key,
                             limit=args.limit, allow_missing=args.allow_missing, config_type=args.config_type,
                             type_map=None if args.type_map is None else args.type_map.split(","))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
