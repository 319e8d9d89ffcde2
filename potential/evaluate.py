"""Batched single-point evaluation: many structures packed into one graph per forward pass.

``evaluate(structures, model, batch_atoms=4096)`` packs consecutive structures into a
``data.Batch`` until the next one would push the batch past ``batch_atoms`` atoms (a structure
larger than the budget goes alone), runs ``model(batch, forces=True, stress=...)`` and splits the
results per structure. The numbers are those of ``potential.Calculator`` one structure at a time.

Each result is a dict (numpy, float64):
    index            position of the structure in the input sequence
    num_atoms        int
    energy           eV (nan on error)
    energy_per_atom  eV/atom
    forces           [n, 3] eV/Å (None on error)
    stress           [3, 3] eV/Å^3, ASE sign; None unless computed and the structure is 3D-periodic
    max_force        max_i |F_i| in eV/Å (0 for a single free atom)
    error            None, or why the structure could not be evaluated
With a committee (``models=[...]`` or a ``potential.Committee``) energy, forces, stress and max_force are the
committee means, and each result also has (potential/committee.py):
    energy_per_atom_std  eV/atom, the members' standard deviation of the energy per atom
    force_spread         [n] eV/Å, the per-atom force spread
    max_force_spread     eV/Å, its maximum over the atoms
    member_energies      [M] eV, each member's energy
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from data.structure import is_3d_periodic

_CHEM = None


def _symbols(numbers) -> str:
    global _CHEM
    if _CHEM is None:
        from ase.data import chemical_symbols as _CHEM
    return ", ".join(f"{_CHEM[z] if 0 < z < len(_CHEM) else '?'} (Z={z})" for z in numbers)


def load_model_file(path, device: str = "cpu"):
    """``potential.load_model`` with clear errors for the CLIs.

    FileNotFoundError for a missing file; ValueError naming the file for one that is not a tumbler
    model (another program's checkpoint, a text file, a newer format) or an unusable device.
    """
    from pathlib import Path

    from .io import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device; use --device cpu")
    try:
        return load_model(path, device=device)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if str(path) in msg else f"{path}: {msg}") from e
    except Exception as e:  # unpickling / zip errors: not a torch file at all
        raise ValueError(f"{path}: not a tumbler model file ({type(e).__name__}: {e})") from e


def as_structure(item: Any):
    """``data.Structure`` from an ASE Atoms or a Structure-like object (labels are not needed)."""
    from data import Structure

    if isinstance(item, Structure):
        return item
    positions = np.asarray(item.get_positions() if hasattr(item, "get_positions") else item.positions, np.float64)
    numbers = np.asarray(item.numbers, np.int64)
    cell = np.asarray(item.cell, np.float64).reshape(3, 3)
    pbc = np.asarray(item.pbc, bool).reshape(-1)
    if pbc.size == 1:
        pbc = np.repeat(pbc, 3)
    return Structure(
        positions=positions.reshape(-1, 3), numbers=numbers, cell=cell, pbc=pbc, energy=None, forces=None, stress=None
    )


def check_structure(s, elements: Iterable[int], min_distance: float = 0.5) -> str | None:
    """Why ``s`` cannot be evaluated by a model with ``elements``, or None when it can.

    Catches: no atoms, non-finite coordinates, a degenerate cell along a periodic direction,
    elements the model does not know, and atoms closer than ``min_distance`` Å (periodic images included).
    """
    n = len(s.numbers)
    if n == 0:
        return "empty structure (no atoms)"
    pos, cell, pbc = np.asarray(s.positions), np.asarray(s.cell), np.asarray(s.pbc, bool)
    if pos.shape != (n, 3):
        return f"positions have shape {pos.shape}, expected ({n}, 3)"
    if not np.all(np.isfinite(pos)) or not np.all(np.isfinite(cell)):
        return "non-finite positions or cell"
    unknown = sorted({int(z) for z in s.numbers} - {int(z) for z in elements})
    if unknown:
        return f"element(s) {_symbols(unknown)} unknown to the model (model elements: {_symbols(sorted(elements))})"
    if pbc.any():
        if np.any(np.linalg.norm(cell[pbc], axis=1) < 1e-9) or (pbc.all() and abs(np.linalg.det(cell)) < 1e-9):
            return f"degenerate cell {cell.tolist()} for pbc={pbc.tolist()}"
    if n > 1 or pbc.any():
        from data import neighbor_list

        senders, receivers, shifts = neighbor_list(pos, cell, pbc, float(min_distance))
        if len(senders) > 0:
            s0, r0 = int(senders[0]), int(receivers[0])
            d = np.linalg.norm(pos[s0] - pos[r0] + np.asarray(shifts[0], np.float64) @ cell)
            return f"overlapping atoms {r0} and {s0}: distance {d:.3f} Å < {min_distance} Å"
    return None


def _chunks(sizes: Sequence[int], batch_atoms: int) -> list[list[int]]:
    """Consecutive groups of indices whose atom counts sum to <= batch_atoms (oversized ones alone)."""
    groups, cur, cur_n = [], [], 0
    for i, n in enumerate(sizes):
        if cur and cur_n + n > batch_atoms:
            groups.append(cur)
            cur, cur_n = [], 0
        cur.append(i)
        cur_n += n
    if cur:
        groups.append(cur)
    return groups


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()), None)
    if p is None:
        return torch.device("cpu"), getattr(torch, str(model.config.dtype))
    return p.device, p.dtype


def _forward(model, structures, want_stress: bool, device, dtype) -> list[dict]:
    """One forward pass over ``structures``; results split per structure."""
    from data import collate

    batch = collate(list(structures), float(model.r_max)).to(device=device, dtype=dtype)
    out = model(batch, forces=True, stress=want_stress)
    ptr = batch.ptr.detach().cpu().numpy()
    energy = out["energy"].detach().cpu().double().numpy()  # [B] eV
    forces = out["forces"].detach().cpu().double().numpy()  # [N, 3] eV/Å
    stress = out["stress"].detach().cpu().double().numpy() if want_stress else None  # [B, 3, 3] eV/Å^3
    results = []
    for b, s in enumerate(structures):
        n = int(ptr[b + 1] - ptr[b])
        f = forces[ptr[b] : ptr[b + 1]].copy()
        periodic = is_3d_periodic(s)
        results.append(
            {
                "num_atoms": n,
                "energy": float(energy[b]),
                "energy_per_atom": float(energy[b]) / n,
                "forces": f,
                "stress": stress[b].copy() if (stress is not None and periodic) else None,
                "max_force": float(np.sqrt((f**2).sum(axis=1)).max()) if n else 0.0,
                "error": None,
            }
        )
        if "member_energy" in out:  # a committee (potential/committee.py)
            results[-1].update(energy_per_atom_std=float(out["energy_per_atom_std"][b]),
                               force_spread=out["force_spread"][ptr[b]: ptr[b + 1]].double().cpu().numpy(),
                               max_force_spread=float(out["max_force_spread"][b]),
                               member_energies=out["member_energy"][:, b].double().cpu().numpy())
    return results


def _failed(index: int, num_atoms: int, error: str) -> dict:
    return {
        "index": index, "num_atoms": num_atoms, "energy": float("nan"), "energy_per_atom": float("nan"),
        "forces": None, "stress": None, "max_force": float("nan"), "error": error,
    }


def evaluate(
    structures: Iterable[Any],
    model=None,
    batch_atoms: int = 4096,
    stress: bool | None = None,
    device: str | torch.device | None = None,
    on_error: str = "raise",
    min_distance: float = 0.5,
    progress: bool = False,
    models: Sequence | None = None,
) -> list[dict]:
    """Energies, forces and (optionally) stresses of many structures, batched (module docstring).

    structures: ASE Atoms or ``data.Structure`` objects (any iterable, e.g. ``data.open_dataset``).
    batch_atoms: atom budget per forward pass (>= 1).
    stress: True / False, or None = compute it when some structure in the batch is 3D-periodic.
    device: where to run (the model is moved there); None = the model's device.
    on_error: "raise" (ValueError naming the structure index) or "record" (the result carries
        ``error`` and the other structures go on).
    min_distance: Å; closer atom pairs count as overlapping (an error).
    models: instead of ``model``, a committee: Potentials or model files (``potential.Committee``).
    """
    if (model is None) == (models is None):
        raise ValueError("evaluate: give either model or models (a committee), not both or neither")
    if models is not None:
        from .committee import Committee, load_committee

        models = list(models)
        model = Committee(models) if all(isinstance(m, torch.nn.Module) for m in models) else \
            load_committee(models, device="cpu" if device is None else device)
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error={on_error!r} must be 'raise' or 'record'")
    if isinstance(batch_atoms, bool) or not isinstance(batch_atoms, (int, np.integer)) or batch_atoms < 1:
        raise ValueError(f"batch_atoms={batch_atoms!r} must be an integer >= 1")
    if device is not None:
        model.to(device)
    dev, dtype = _model_device_dtype(model)
    elements = [int(z) for z in model.elements]

    items = list(structures)
    results: list[dict | None] = [None] * len(items)
    valid: list[int] = []
    prepared: dict[int, Any] = {}
    for i, item in enumerate(items):
        try:
            s = as_structure(item)
            err = check_structure(s, elements, min_distance)
        except Exception as e:  # malformed object: record it like any other bad structure
            s, err = None, f"{type(e).__name__}: {e}"
        if err is not None:
            if on_error == "raise":
                raise ValueError(f"structure {i}: {err}")
            results[i] = _failed(i, 0 if s is None else len(s.numbers), err)
        else:
            prepared[i] = s
            valid.append(i)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(valid), unit="struct", desc="evaluate", disable=None)
    for group in _chunks([len(prepared[i].numbers) for i in valid], int(batch_atoms)):
        idx = [valid[g] for g in group]
        group_structs = [prepared[i] for i in idx]
        want = stress if stress is not None else any(bool(np.all(s.pbc)) for s in group_structs)
        try:
            outs = _forward(model, group_structs, bool(want), dev, dtype)
        except Exception as e:
            if on_error == "raise":
                raise ValueError(f"structures {idx[0]}..{idx[-1]}: evaluation failed: {type(e).__name__}: {e}") from e
            outs = []
            for i, s in zip(idx, group_structs):  # find the culprit(s): one at a time
                try:
                    outs.extend(_forward(model, [s], bool(want), dev, dtype))
                except Exception as e1:
                    outs.append(_failed(i, len(s.numbers), f"evaluation failed: {type(e1).__name__}: {e1}"))
        for i, r in zip(idx, outs):
            r["index"] = i
            if r["error"] is None and not (np.isfinite(r["energy"]) and np.isfinite(r["forces"]).all()):
                if on_error == "raise":
                    raise ValueError(f"structure {i}: the model gave a non-finite energy or forces")
                r = _failed(i, r["num_atoms"], "the model gave a non-finite energy or forces")
            results[i] = r
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return results  # type: ignore[return-value]
