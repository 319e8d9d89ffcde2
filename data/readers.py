"""Readers for foreign dataset layouts -> list[Structure] in tumbler units (eV, Å).

Each reader is a generator of (Structure, label names present) pairs, so large
files stream through `data.convert` without being held in memory. `source` is the
input path and `index` the running structure number in the order read; the label
names feed the "key not found" messages.

Units and conventions established here (conversion happens once, on the way in):
- ASE-readable files (extxyz, ...): taken as eV / Å / eV/Å; a virial (eV) becomes
  stress = -virial / volume, a stress (6 Voigt or 9 comps) is taken in eV/Å^3.
- ANI-1 layout HDF5 (/<group>/<molecule>/{coordinates, species, energies, forces}):
  energies in Hartree; forces in Hartree/Bohr. The forces unit is undocumented; we
  checked it on alkane_ani_h5/C2H6_DFT+Force_NMS.h5: for 76,724 pairs of conformers
  less than 0.05 Å apart, E_b - E_a = s * (-(F_a + F_b)/2 . (x_b - x_a)) fits with
  s = 1.880 (1/Bohr in Å^-1 = 1.890; s = 1 would mean Hartree/Å: 47% residual), so
  the stored forces are -dE/dx in Hartree/Bohr and are multiplied by Hartree/Bohr.
- DeePMD npy systems (type.raw, type_map.raw, set.*/coord.npy, box.npy, energy.npy,
  force.npy, optional virial.npy, optional `nopbc` marker): eV, Å, eV/Å, virial eV.
- mlearn JSON (Zuo et al. 2020, e.g. Si_training_with_stress.json): a list of
  {structure: pymatgen dict, outputs: {energy, forces, virial_stress}, group, ...}.
  virial_stress is VASP's stress in kBar, order xx yy zz xy yz zx, sign "positive =
  compressive". Checked on the Elastic group: for uniaxial strain along x, the
  Cauchy stress from a fit of E(lambda), sigma_xx = (lambda/V) dE/dlambda, equals
  -0.1 GPa * virial_stress_xx to within 1% (ratios -0.989..-1.006 over 9 strains).
  So stress [eV/Å^3] = -virial_stress * 0.1 * ase.units.GPa.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ase.io
import h5py
import numpy as np
from ase.data import atomic_numbers
from ase.units import GPa, Bohr, Hartree

from .hdf5 import check_hdf5
from .structure import DataError, Structure, available_keys, where


def iter_ase(path, energy_key="energy", forces_key="forces", stress_key="stress", virial_key="virial",
             limit=None):
    """Any ASE-readable file, streamed frame by frame. Yields (Structure, available label names)."""
    frames = ase.io.iread(path, index=":" if limit is None else f":{int(limit)}")
    i = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # ASE raises many types; report them all with the file name
            raise DataError(f"{path}: ASE could not read the file (structure {i}: {type(exc).__name__}: {exc})") from exc
        yield (Structure.from_atoms(atoms, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key,
                                    virial_key=virial_key, source=str(path), index=i),
               available_keys(atoms))
        i += 1


def _species_to_numbers(species, context: str) -> np.ndarray:
    out = []
    for s in species:
        symbol = s.decode() if isinstance(s, bytes) else str(s)
        if symbol not in atomic_numbers:
            raise DataError(f"{context}: unknown element symbol {symbol!r}")
        out.append(atomic_numbers[symbol])
    return np.array(out, dtype=np.int64)


def iter_ani(path, energy_key="energies", forces_key="forces", limit=None):
    """ANI-1 layout HDF5: every group holding `coordinates` and `species` is one molecule.

    Molecules are read in sorted path order, one molecule's arrays at a time.
    Yields (Structure, dataset names of the molecule).
    """
    check_hdf5(path)
    count_out = 0
    with h5py.File(path, "r") as f:
        molecules = []
        f.visititems(lambda name, obj: molecules.append(name)
                     if isinstance(obj, h5py.Group) and "coordinates" in obj and "species" in obj else None)
        if not molecules:
            raise DataError(f"{path}: no ANI molecule groups (a group with 'coordinates' and 'species') found")
        for name in sorted(molecules):
            group = f[name]
            context = f"{path}: molecule '{name}'"
            coords = group["coordinates"][()]
            numbers = _species_to_numbers(group["species"][()], f"{context}: key 'species'")
            if coords.ndim != 3 or coords.shape[1:] != (len(numbers), 3):
                raise DataError(f"{context}: key 'coordinates': expected shape (M, {len(numbers)}, 3), got {coords.shape}")
            count = coords.shape[0]
            energies = group[energy_key][()] if energy_key in group else None
            forces = group[forces_key][()] if forces_key in group else None
            if energies is not None and energies.shape != (count,):
                raise DataError(f"{context}: key '{energy_key}': expected shape ({count},), got {energies.shape}")
            if forces is not None and forces.shape != coords.shape:
                raise DataError(f"{context}: key '{forces_key}': shape {forces.shape} does not match coordinates {coords.shape}")
            names = sorted(k for k in group if isinstance(group[k], h5py.Dataset))
            config_type = name.split("/")[0]
            for m in range(count):
                if limit is not None and count_out >= limit:
                    return
                yield Structure(
                    positions=coords[m],
                    numbers=numbers,
                    energy=None if energies is None else float(energies[m]) * Hartree,
                    forces=None if forces is None else forces[m].astype(np.float64) * (Hartree / Bohr),
                    config_type=config_type,
                    source=str(path),
                    index=count_out,
                ), names
                count_out += 1


def _deepmd_systems(path: Path) -> list[Path]:
    if (path / "type.raw").is_file():
        return [path]
    systems = sorted(p.parent for p in path.rglob("type.raw"))
    if not systems:
        raise DataError(f"{path}: no DeePMD system (a folder with type.raw) found")
    return systems


def _load_npy(path: Path, rows: int, cols: int, context: str):
    if not path.is_file():
        return None
    arr = np.load(path).astype(np.float64)
    if arr.size != rows * cols:
        raise DataError(f"{context}: {path.name} has shape {arr.shape}, expected ({rows}, {cols}) for {rows} frames")
    return arr.reshape(rows, cols)


def iter_deepmd(path, limit=None, type_map=None):
    """DeePMD npy systems under `path` (one system folder, or a folder of systems).

    `type_map` (element symbols by type index) is needed only for systems without
    a type_map.raw; a system's own type_map.raw wins. Yields (Structure, npy names).
    """
    root = Path(path)
    count_out = 0
    for system in _deepmd_systems(root):
        types = np.loadtxt(system / "type.raw", dtype=np.int64, ndmin=1)
        type_map_file = system / "type_map.raw"
        if type_map_file.is_file():
            system_map = type_map_file.read_text().split()
        elif type_map:
            system_map = list(type_map)
        else:
            raise DataError(f"{system}: type_map.raw missing (needed to know the elements); "
                            f"give the elements by type index, e.g. --type-map O,H")
        if types.max() >= len(system_map):
            raise DataError(f"{system}: type.raw uses type {types.max()} but the type map {system_map} has {len(system_map)} entries")
        numbers = _species_to_numbers([system_map[t] for t in types], f"{system}: type map")
        n = len(numbers)
        periodic = not (system / "nopbc").exists()
        for set_dir in sorted(system.glob("set.*")):
            ctx = f"{set_dir}"
            coord_file = set_dir / "coord.npy"
            if not coord_file.is_file():
                raise DataError(f"{ctx}: coord.npy missing")
            frames = np.load(coord_file, mmap_mode="r").size // (3 * n) if n else 0
            coord = _load_npy(coord_file, frames, 3 * n, ctx)
            box = _load_npy(set_dir / "box.npy", frames, 9, ctx)
            energy = _load_npy(set_dir / "energy.npy", frames, 1, ctx)
            force = _load_npy(set_dir / "force.npy", frames, 3 * n, ctx)
            virial = _load_npy(set_dir / "virial.npy", frames, 9, ctx)
            if periodic and box is None:
                raise DataError(f"{ctx}: box.npy missing for a periodic system (add a 'nopbc' file for molecules)")
            present = [p.stem for p in sorted(set_dir.glob("*.npy"))]
            for k in range(frames):
                if limit is not None and count_out >= limit:
                    return
                cell = box[k].reshape(3, 3) if (box is not None and periodic) else np.zeros((3, 3))
                stress = None
                if virial is not None:
                    volume = abs(np.linalg.det(cell))
                    if not volume > 0:
                        raise DataError(f"{where(str(root), count_out, 'virial')}: virial given but the cell has zero volume")
                    stress = -virial[k].reshape(3, 3) / volume
                yield Structure(
                    positions=coord[k].reshape(n, 3),
                    numbers=numbers,
                    cell=cell,
                    pbc=np.full(3, periodic),
                    energy=None if energy is None else float(energy[k, 0]),
                    forces=None if force is None else force[k].reshape(n, 3),
                    stress=stress,
                    config_type=system.name,
                    source=str(root),
                    index=count_out,
                ), present
                count_out += 1


def is_mlearn_json(path) -> bool:
    """True for a JSON list of {structure, outputs} records (mlearn / Zuo 2020 layout)."""
    if Path(path).suffix.lower() != ".json" or not os.path.isfile(path):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096).decode("utf-8", errors="replace").lstrip()
    return head.startswith("[") and '"structure"' in head


def iter_mlearn_json(path, limit=None):
    """mlearn JSON (pymatgen structures + outputs.energy/forces/virial_stress in kBar).

    Yields (Structure, names in `outputs`). The JSON itself is parsed at once.
    """
    try:
        with open(path) as fh:
            records = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: could not read JSON ({exc})") from exc
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    for i, rec in enumerate(records[:limit]):
        try:
            lattice = np.array(rec["structure"]["lattice"]["matrix"], dtype=np.float64)
            sites = rec["structure"]["sites"]
            outputs = rec.get("outputs", {})
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where(str(path), i, 'structure')}: malformed record ({exc!r})") from exc
        positions = np.array([s["xyz"] for s in sites], dtype=np.float64).reshape(-1, 3)
        species = []
        for s in sites:
            if len(s["species"]) != 1:
                raise DataError(f"{where(str(path), i, 'species')}: partial occupancy is not supported")
            species.append(s["species"][0]["element"])
        stress = None
        if outputs.get("virial_stress") is not None:
            xx, yy, zz, xy, yz, zx = np.asarray(outputs["virial_stress"], dtype=np.float64)
            vasp = np.array([[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]])
            stress = -vasp * 0.1 * GPa
        yield Structure(
            positions=positions,
            numbers=_species_to_numbers(species, where(str(path), i, "species")),
            cell=lattice,
            pbc=np.ones(3, dtype=bool),
            energy=outputs.get("energy"),
            forces=None if outputs.get("forces") is None else np.asarray(outputs["forces"], dtype=np.float64),
            stress=stress,
            config_type=str(rec.get("group") or "Default"),
            source=str(path),
            index=i,
        ), sorted(outputs)
