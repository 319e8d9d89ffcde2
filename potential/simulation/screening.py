"""Batch screening with a tumbler model: the logic behind ``screen.py``.

Single points go through ``potential.evaluate`` (many structures per forward pass). With
``relax=True`` each good structure is then relaxed by ASE (FIRE or BFGS, optionally with
FrechetCellFilter for the cell) with ``potential.Calculator``; the relaxed geometry, the number of
optimizer steps and a converged flag are recorded. A bad structure (empty, unknown element,
overlapping atoms, failure during relaxation) is recorded with its error and the rest go on.

Output by suffix:
  .h5 / .hdf5   written atomically (tmp file + rename), flat arrays, structures concatenated:
      ptr [B+1] int64, num_atoms [B], index [B] (row in the input), numbers [N], positions [N,3] Å
      (relaxed when relaxed), forces [N,3] eV/Å, cell [B,3,3] Å, pbc [B,3], energy [B] eV,
      energy_per_atom [B], max_force [B] eV/Å, stress [B,3,3] eV/Å^3 (nan when absent), error [B] str
      ("" = fine); with relax also initial_energy [B], converged [B] bool, steps [B].
      Failed structures keep their input geometry and have nan numbers.
      attrs: format="tumbler-screen", format_version=1, model, source, relax, fmax, units.
  .xyz / .extxyz  one frame per structure: energy / forces / stress as calculator results, the
      rest in the frame's info (index, energy_per_atom, max_force, error, converged, steps, ...).
  .csv   one row per structure (no geometry).
With a committee (``potential.Committee``) the numbers are the committee means, and each format also has its
uncertainty (potential/committee.py): energy_per_atom_std [B] eV/atom, max_force_spread [B] eV/Å (.h5, .csv
columns energy_per_atom_std_eV and max_force_spread_eV_A, extxyz info) and force_spread [N] eV/Å (.h5, extxyz
per-atom array). After a relaxation they describe the relaxed geometry.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import ase
import ase.io
import numpy as np

from data.atomic import atomic_path
from data.structure import is_3d_periodic

from ..evaluate import as_structure, evaluate

OUTPUT_SUFFIXES = (".h5", ".hdf5", ".xyz", ".extxyz", ".csv")
H5_SUFFIXES = (".h5", ".hdf5")
UNITS = {"energy": "eV", "positions": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}


def read_input(path: str | Path):
    """A sequence of structures: our HDF5 via ``data.open_dataset``, anything else via ASE (all frames)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structures file not found: {path}")
    if path.suffix.lower() in H5_SUFFIXES:
        from data import open_dataset

        return open_dataset(path)
    try:
        frames = ase.io.read(path, index=":")
    except Exception as e:
        raise ValueError(f"{path}: ASE cannot read it: {type(e).__name__}: {e}") from e
    return frames if isinstance(frames, list) else [frames]


def _to_atoms(item: Any) -> ase.Atoms:
    s = as_structure(item)
    return ase.Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)


def relax_one(atoms: ase.Atoms, calc, fmax: float, max_steps: int, optimizer: str, relax_cell: bool) -> dict:
    """Relax ``atoms`` in place with ASE; returns energy, forces, stress, steps, converged."""
    from ase.optimize import BFGS, FIRE

    atoms.calc = calc
    target = atoms
    if relax_cell:
        if not is_3d_periodic(atoms):
            raise ValueError("relax_cell needs a 3D-periodic structure")
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms)
    opt = (FIRE if optimizer == "fire" else BFGS)(target, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=max_steps))
    forces = atoms.get_forces()
    periodic = is_3d_periodic(atoms)
    energy = float(atoms.get_potential_energy())
    spread = {k: calc.results[k] for k in ("energy_per_atom_std", "force_spread", "max_force_spread")
              if k in calc.results}  # a committee: its uncertainty at the relaxed geometry
    return {
        **spread,
        "energy": energy,
        "energy_per_atom": energy / len(atoms),
        "forces": np.asarray(forces, np.float64),
        "stress": np.asarray(atoms.get_stress(voigt=False), np.float64) if periodic else None,
        "max_force": float(np.sqrt((forces**2).sum(axis=1)).max()),
        "steps": int(opt.nsteps),
        "converged": converged,
    }


def screen(
    structures,
    model,
    relax: bool = False,
    fmax: float = 0.05,
    max_steps: int = 500,
    optimizer: str = "fire",
    relax_cell: bool = False,
    batch_atoms: int = 4096,
    device: str | None = None,
    skin: float = 1.0,
    progress: bool = False,
    engine: str = "ase",
) -> tuple[list[ase.Atoms], list[dict]]:
    """Evaluate (and optionally relax) every structure; errors are recorded, never raised.

    Returns (atoms, results): the final geometries (relaxed, or as given) and one result dict per
    input structure (keys of ``potential.evaluate`` plus, with relax, initial_energy, steps, converged).
    """
    if engine not in ("ase", "gpu"):
        raise ValueError(f"engine={engine!r} must be 'ase' or 'gpu'")
    if engine == "gpu" and relax and not hasattr(model, "node_energies"):
        raise ValueError("engine 'gpu' relaxes with one model; a committee needs --engine ase")
    if engine == "gpu" and relax and (relax_cell or optimizer != "fire"):
        raise ValueError("engine 'gpu' relaxes positions with batched FIRE; --relax-cell and --optimizer bfgs "
                         "need --engine ase")
    if optimizer not in ("fire", "bfgs"):
        raise ValueError(f"optimizer={optimizer!r} must be 'fire' or 'bfgs'")
    if not (fmax > 0):
        raise ValueError(f"fmax={fmax!r} must be > 0 eV/Å")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError(f"max_steps={max_steps!r} must be an integer >= 0")
    items = list(structures)
    results = evaluate(items, model, batch_atoms=batch_atoms, device=device, on_error="record", progress=progress)
    atoms_out: list[ase.Atoms] = []
    for item in items:
        try:
            atoms_out.append(_to_atoms(item))
        except Exception:
            atoms_out.append(ase.Atoms())
    if not relax:
        return atoms_out, results

    from ..calculator import Calculator

    todo = [i for i, r in enumerate(results) if r["error"] is None]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="struct", desc="relax", disable=None)
    for r in results:
        r.update(initial_energy=r["energy"], steps=0, converged=False)
    if engine == "gpu":  # all good structures at once, FIRE state per structure (potential.simulation.fire)
        _relax_batched(model, atoms_out, results, todo, fmax, max_steps, skin, batch_atoms)
        todo = []
    for i in todo:
        atoms = atoms_out[i]
        try:
            calc = Calculator(model, device=device, skin=skin)
            out = relax_one(atoms, calc, fmax, max_steps, optimizer, relax_cell)
            results[i].update(out)
        except Exception as e:
            results[i].update(
                error=f"relaxation failed: {type(e).__name__}: {e}", energy=math.nan, energy_per_atom=math.nan,
                forces=None, stress=None, max_force=math.nan,
            )
            for key in ("energy_per_atom_std", "max_force_spread", "force_spread"):  # a committee's, now stale
                if key in results[i]:
                    results[i][key] = None if key == "force_spread" else math.nan
        atoms.calc = None
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return atoms_out, results


def _relax_batched(model, atoms_out, results, todo, fmax, max_steps, skin, batch_atoms) -> None:
    """Relax atoms_out[i] for i in todo with potential.simulation.fire.relax_batch; a failure is recorded on each of them."""
    from .fire import relax_batch

    try:
        done = relax_batch(model, [atoms_out[i] for i in todo], fmax=fmax, max_steps=max_steps, skin=skin,
                           batch_atoms=batch_atoms)
    except Exception as e:
        for i in todo:
            results[i].update(error=f"relaxation failed: {type(e).__name__}: {e}", energy=math.nan,
                              energy_per_atom=math.nan, forces=None, stress=None, max_force=math.nan)
        return
    for i, out in zip(todo, done):
        results[i].update(out)


def _pressure_gpa(stress) -> float:
    from ase import units

    return math.nan if stress is None else -float(np.trace(stress)) / 3.0 / units.GPa


def write_results(path: str | Path, atoms_list: list[ase.Atoms], results: list[dict], meta: dict | None = None) -> None:
    """Write by suffix (module docstring); HDF5 atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output {path}: suffix must be one of {', '.join(OUTPUT_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    relaxed = any("converged" in r for r in results)
    if suffix in H5_SUFFIXES:
        _write_h5(path, atoms_list, results, relaxed, meta or {})
    elif suffix == ".csv":
        _write_csv(path, atoms_list, results, relaxed)
    else:
        _write_extxyz(path, atoms_list, results, relaxed)


def _column(results, key) -> np.ndarray:
    """[B] float64 of results[b][key], nan where absent (failed structures)."""
    return np.array([r.get(key, math.nan) for r in results], np.float64)


def _write_h5(path: Path, atoms_list, results, relaxed: bool, meta: dict) -> None:
    import h5py

    committee = any("max_force_spread" in r for r in results)
    counts = np.array([len(a) for a in atoms_list], np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_total, nb = int(ptr[-1]), len(atoms_list)
    forces = np.full((n_total, 3), np.nan)
    stress = np.full((nb, 3, 3), np.nan)
    for b, r in enumerate(results):
        if r.get("forces") is not None:
            forces[ptr[b] : ptr[b + 1]] = r["forces"]
        if r.get("stress") is not None:
            stress[b] = r["stress"]
    cat = lambda key, shape, dtype: (  # noqa: E731
        np.concatenate([getattr(a, key)() for a in atoms_list]).astype(dtype) if n_total else np.zeros(shape, dtype)
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format="tumbler-screen", format_version=1, relax=relaxed)
            f.attrs["units"] = json.dumps(UNITS, ensure_ascii=False)
            for k, v in meta.items():
                f.attrs[k] = "" if v is None else v
            f["ptr"], f["num_atoms"] = ptr, counts
            f["index"] = np.array([r["index"] for r in results], np.int64)
            f["numbers"] = cat("get_atomic_numbers", (0,), np.int64)
            f["positions"] = cat("get_positions", (0, 3), np.float64)
            f["forces"], f["stress"] = forces, stress
            f["cell"] = np.array([np.asarray(a.cell) for a in atoms_list], np.float64).reshape(nb, 3, 3)
            f["pbc"] = np.array([a.pbc for a in atoms_list], bool).reshape(nb, 3)
            for key in ("energy", "energy_per_atom", "max_force") + (("initial_energy",) if relaxed else ()):
                f[key] = np.array([r[key] for r in results], np.float64)
            if committee:
                f["energy_per_atom_std"], f["max_force_spread"] = _column(results, "energy_per_atom_std"), \
                    _column(results, "max_force_spread")
                spread = np.full(n_total, np.nan)
                for b, r in enumerate(results):
                    if r.get("force_spread") is not None:
                        spread[ptr[b]: ptr[b + 1]] = r["force_spread"]
                f["force_spread"] = spread
            f.create_dataset("error", data=[r["error"] or "" for r in results], dtype=h5py.string_dtype())
            if relaxed:
                f["converged"] = np.array([r["converged"] for r in results], bool)
                f["steps"] = np.array([r["steps"] for r in results], np.int64)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_csv(path: Path, atoms_list, results, relaxed: bool) -> None:
    cols = ["index", "formula", "num_atoms", "energy_eV", "energy_per_atom_eV", "max_force_eV_A", "pressure_GPa"]
    if relaxed:
        cols += ["initial_energy_eV", "converged", "steps"]
    committee = any("max_force_spread" in r for r in results)
    if committee:
        cols += ["energy_per_atom_std_eV", "max_force_spread_eV_A"]
    cols.append("error")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for a, r in zip(atoms_list, results):
            row = [r["index"], a.get_chemical_formula(), len(a), r["energy"], r["energy_per_atom"], r["max_force"],
                   _pressure_gpa(r.get("stress"))]
            if relaxed:
                row += [r["initial_energy"], r["converged"], r["steps"]]
            if committee:
                row += [r.get("energy_per_atom_std", math.nan), r.get("max_force_spread", math.nan)]
            w.writerow(row + [r["error"] or ""])


def _write_extxyz(path: Path, atoms_list, results, relaxed: bool) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for a, r in zip(atoms_list, results):
        a = a.copy()
        a.info.update(index=int(r["index"]), max_force=float(r["max_force"]),
                      energy_per_atom=float(r["energy_per_atom"]))
        if relaxed:
            a.info.update(initial_energy=float(r["initial_energy"]), converged=bool(r["converged"]),
                          steps=int(r["steps"]))
        if r.get("force_spread") is not None:  # a committee
            a.info.update(energy_per_atom_std=float(r["energy_per_atom_std"]),
                          max_force_spread=float(r["max_force_spread"]))
            a.arrays["force_spread"] = np.asarray(r["force_spread"], np.float64)
        if r["error"]:
            a.info["error"] = " ".join(str(r["error"]).replace('"', "'").split())
        else:
            props = {"energy": r["energy"], "forces": r["forces"]}
            if r.get("stress") is not None:
                s = r["stress"]
                props["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
            a.calc = SinglePointCalculator(a, **props)
        frames.append(a)
    with atomic_path(path, suffix=".extxyz") as tmp:
        ase.io.write(tmp, frames, format="extxyz")
