"""ASE calculator for a tumbler Potential.

Properties: energy and free_energy (eV; equal, no electronic entropy), forces (eV/Å), energies (per-atom
energies, eV; they sum to energy) and stress (eV/Å^3, ASE sign and Voigt order xx yy zz yz xz xy), the
latter only for 3D-periodic cells: it is computed with every call on such cells (one extra strain gradient,
no second model evaluation when ASE asks for it) and asking for it on any other system is an error.

Two evaluation paths, the same numbers (tests/potential/test_calculator_static.py):
- eager (default on CPU): a ``data.VerletList`` (cutoff r_max, skin 1 Å by default) kept on the model's
  device, so MD steps reuse it until an atom moves more than skin/2, then the model's forward;
- static (default on CUDA, ``static=True``): a ``potential.static_step.StaticStep`` for the current atoms
  (device Verlet list, padded shapes, the whole energy+forces(+stress) step replayed as one CUDA graph), kept
  while the numbers and pbc stay the same (a new cell is passed on with ``set_cell``). This removes the Python
  and launch overhead that dominates an ASE MD step on a GPU.
A ``potential.Committee`` (``Calculator.from_file([a.pt, b.pt, ...])``) gives the members' mean results and, as
extra properties, their spread: energy_per_atom_std, force_spread, max_force_spread, member_energies and
member_forces (potential/committee.py); its static path is ``Committee.static_step``.
Edges beyond r_max contribute exactly zero, so results equal those of a freshly built list (to rounding from
the summation order). Results are cached by ASE's ``check_state`` rules (positions, numbers, cell, pbc ...).
"""

from __future__ import annotations

import contextlib
import functools
import numpy as np
import torch
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

import data

from .committee import COMMITTEE_PROPERTIES, Committee, host_results, load_committee
from .io import load_model
from .model import Potential
from .static_step import StaticStep


class Calculator(_AseCalculator):
    """``Calculator(model, device=None, skin=1.0, static=None)``; ``device=None`` keeps the model where it is;
    ``static=None`` means static on CUDA, eager elsewhere (see the module docstring)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model: Potential, device: str | torch.device | None = None, skin: float = 1.0,
                 static: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, (Potential, Committee)):
            raise TypeError(f"Calculator: expected a potential.Potential or Committee, got {type(model).__name__}")
        if isinstance(model, Committee):  # mean results plus the spreads (potential/committee.py)
            self.implemented_properties = type(self).implemented_properties + COMMITTEE_PROPERTIES
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = model.dtype
        self.skin = float(skin)
        self.static = self.device.type == "cuda" if static is None else bool(static)
        self.neighbors = data.VerletList(model.r_max, skin)  # eager path
        self.step = None  # static path: a StaticStep for the system self._key = (numbers, pbc)
        self._key = None

    @property
    def rebuilds(self) -> int:
        """Neighbour-list builds so far (of the current static step, or of the eager Verlet list)."""
        return self.step.rebuilds if self.static and self.step is not None else self.neighbors.rebuilds

    @classmethod
    def from_file(cls, path, device: str | torch.device = "cpu", **kwargs) -> "Calculator":
        """Load a model file (``potential.save_model``), or a list of them as a ``potential.Committee``, and wrap
        it; kwargs go to ``Calculator``."""
        if isinstance(path, (list, tuple)):
            return cls(load_committee(path, device=device), **kwargs)
        return cls(load_model(path, device=device), **kwargs)

    def _check_elements(self, numbers: np.ndarray) -> None:
        """ValueError naming the elements the model does not know."""
        unknown = sorted(set(int(z) for z in numbers) - set(self.model.elements))
        if unknown:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.model.elements)
            raise ValueError(f"unknown element(s) {names}: this model knows only {known}")

    def check_state(self, atoms, tol: float = 1e-15) -> list:
        """What changed since the last calculation, of the four properties the model reads (positions, numbers,
        cell, pbc): ASE's rule (|difference| <= tol) in one pass per array. ASE's own compare_atoms spends
        ~0.1 ms per call at 864 atoms in elementwise isclose, and an MD step calls it three times."""
        old = self.atoms
        if old is None or len(old) != len(atoms):
            return list(all_changes)
        changes = []
        if not _close(old.cell.array, atoms.cell.array, tol):
            changes.append("cell")
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        if not _close(old.positions, atoms.positions, tol):
            changes.append("positions")
        if not np.array_equal(old.numbers, atoms.numbers):
            changes.append("numbers")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a 3D-periodic cell; this system has pbc={np.asarray(atoms.pbc).tolist()}")
        key = (atoms.numbers.tobytes(), tuple(bool(x) for x in atoms.pbc))
        if key != self._key:  # a new system: check its elements once (a Python pass over the atoms)
            self._check_elements(atoms.numbers)
            self.step = None
            self._key = key
        if self.static:
            out = self._static(atoms, periodic)
        else:
            with _frozen(self.model):  # forces only: no graph through the weights (and cacheable couplings)
                out = self._eager(atoms, periodic)
        self.results = _host_results(out, periodic)

    def _static(self, atoms, periodic: bool) -> dict:
        """The padded, graph-replayed step; a new one when the numbers or pbc change, set_cell for a new cell."""
        cell = np.array(atoms.cell.array, dtype=np.float64)  # [3, 3] Å
        if self.step is None:  # first call, or new numbers or pbc (calculate resets it)
            make = self.model.static_step if isinstance(self.model, Committee) else functools.partial(
                StaticStep, self.model)
            self.step = make(torch.tensor(atoms.numbers), [0, len(atoms)], torch.tensor(cell),
                             torch.tensor(atoms.pbc), skin=self.skin, stress=periodic)
            self._cell = cell
        elif not np.array_equal(cell, self._cell):
            self.step.set_cell(torch.tensor(cell))
            self._cell = cell
        return self.step(torch.tensor(atoms.positions, dtype=torch.float64, device=self.device))

    def _eager(self, atoms, periodic: bool) -> dict:
        """Verlet list on the model's device, then the model's own forward."""
        device, dtype = self.device, self.dtype
        n = len(atoms)
        positions = torch.tensor(atoms.positions, dtype=dtype, device=device)  # [N, 3] Å
        cell = torch.tensor(atoms.cell.array, dtype=dtype, device=device)  # [3, 3], rows = lattice vectors
        pbc = torch.tensor(np.asarray(atoms.pbc, dtype=bool), device=device)  # [3]
        senders, receivers, shifts = self.neighbors.update(positions, cell, pbc)  # within r_max + skin
        batch = data.Batch(
            positions=positions,
            numbers=torch.tensor(atoms.numbers, dtype=torch.int64, device=device),
            batch=torch.zeros(n, dtype=torch.int64, device=device),
            ptr=torch.tensor([0, n], dtype=torch.int64, device=device),
            cell=cell.unsqueeze(0),
            pbc=pbc.unsqueeze(0),
            senders=senders,
            receivers=receivers,
            cell_shifts=shifts.to(dtype),
            energy=torch.full((1,), float("nan"), dtype=torch.float64, device=device),
            has_energy=torch.zeros(1, dtype=torch.bool, device=device),
            forces=torch.zeros(n, 3, dtype=dtype, device=device),
            has_forces=torch.zeros(1, dtype=torch.bool, device=device),
            stress=torch.zeros(1, 3, 3, dtype=dtype, device=device),
            has_stress=torch.zeros(1, dtype=torch.bool, device=device),
            weight=torch.ones(1, dtype=torch.float64, device=device),
            index=torch.zeros(1, dtype=torch.int64, device=device),
        )
        return self.model(batch, forces=True, stress=periodic)


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """ASE's equality of float arrays (every |a - b| <= tol; NaN is never close), in one pass."""
    return a.shape == b.shape and bool(np.abs(a - b).max(initial=0.0) <= tol)


def _host_results(out: dict, periodic: bool) -> dict:
    """ASE results (float64 numpy) from the model's device tensors, in one device -> host copy: each .cpu() of a
    CUDA tensor is a sync, and an MD step would otherwise pay four."""
    n = out["forces"].shape[0]
    parts = [out["energy"][:1], out["node_energy"], out["forces"].reshape(-1)]
    if periodic:
        parts.append(out["stress"][0].reshape(-1))
    flat = torch.cat([p.detach().to(torch.float64) for p in parts]).cpu().numpy()  # [1 + N + 3N (+ 9)]
    energy = float(flat[0])
    results = {"energy": energy, "free_energy": energy, "energies": flat[1:1 + n].copy(),
               "forces": flat[1 + n:1 + 4 * n].reshape(n, 3).copy()}
    if periodic:
        results["stress"] = full_3x3_to_voigt_6_stress(flat[1 + 4 * n:].reshape(3, 3))
    if "member_energy" in out:  # a committee: the spreads and the members' own results
        results.update(host_results(out))
    return results


@contextlib.contextmanager
def _frozen(model):
    """The model's parameters need no gradient inside (their requires_grad flags are restored after)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
