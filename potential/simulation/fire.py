"""Batched FIRE relaxation on the device: many structures at once, each with its own FIRE state.

    from potential.simulation.fire import relax_batch
    results = relax_batch(model, atoms_list, fmax=0.05, max_steps=500)

Each structure follows ase.optimize.FIRE exactly (same defaults: dt 0.1, maxstep 0.2 Å, dtmax 1.0, Nmin 5,
finc 1.1, fdec 0.5, astart 0.1, fa 0.99; no downhill check) with its own velocity, dt, a and step counter,
and ASE's stopping rule: before each step, a structure whose largest atomic force is below fmax (eV/Å) is
converged and frozen; one that has taken max_steps steps stops unconverged. Positions only (fixed cell).
Forces come from potential.static_step.StaticStep (device Verlet lists, CUDA graph on GPU); the host reads one
count per step (how many structures are still moving). When at most half of the structures still move, the
batch is compacted to those (a new static step; converged structures stop costing force evaluations);
`batch_atoms` bounds the atoms relaxed together (structures are taken in order, in chunks). The Atoms are
updated in place with the relaxed positions, like an ASE optimizer does. Each result is a dict like potential.simulation.screening.relax_one's:
energy, energy_per_atom (eV), forces [n,3] (eV/Å), stress [3,3] (eV/Å^3, ASE sign; None unless 3D periodic),
max_force (eV/Å), steps, converged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from data.batch import pack_atoms
from ..static_step import StaticStep

FIRE_DEFAULTS = dict(dt=0.1, maxstep=0.2, dtmax=1.0, Nmin=5, finc=1.1, fdec=0.5, astart=0.1, fa=0.99)


def relax_batch(model, atoms_list: Sequence[Atoms], fmax: float = 0.05, max_steps: int = 500, skin: float = 1.0,
                cuda_graph: bool | None = None, batch_atoms: int | None = None, compact: bool = True,
                **fire) -> list[dict]:
    """Relax every structure of `atoms_list` with FIRE (see the module docstring); returns one dict each."""
    unknown = sorted(set(fire) - set(FIRE_DEFAULTS))
    if unknown:
        raise ValueError(f"relax_batch: unknown FIRE parameter(s) {unknown}; known: {sorted(FIRE_DEFAULTS)}")
    if not fmax > 0:
        raise ValueError(f"relax_batch: fmax must be > 0 eV/Å, got {fmax}")
    if not int(max_steps) >= 0:
        raise ValueError(f"relax_batch: max_steps must be >= 0, got {max_steps}")
    par = {**FIRE_DEFAULTS, **fire}
    atoms_list = list(atoms_list)
    results: list = [None] * len(atoms_list)
    chunk: list[int] = []
    for i, atoms in enumerate(atoms_list + [None]):
        full = atoms is None or (batch_atoms is not None and chunk
                                 and sum(len(atoms_list[k]) for k in chunk) + len(atoms) > batch_atoms)
        if full and chunk:
            done = _relax_chunk(model, [atoms_list[k] for k in chunk], fmax, int(max_steps), skin, cuda_graph,
                                compact, par)
            for k, r in zip(chunk, done):
                results[k] = r
            chunk = []
        if atoms is not None:
            chunk.append(i)
    return results


class _Batch:
    """The structures still relaxing: device tensors of their atoms and FIRE states, and a StaticStep."""

    def __init__(self, model, ids, positions, velocities, numbers, cell, pbc, sizes, fire_state, skin, cuda_graph):
        self.device = positions.device
        self.ids = ids  # index into the chunk of each row
        self.x, self.v = positions, velocities  # [N, 3] Å, FIRE velocities
        self.numbers, self.cell, self.pbc, self.sizes = numbers, cell, pbc, sizes
        self.dt, self.a, self.nfire, self.steps, self.started = fire_state  # [B] each
        self.b = len(ids)
        self.ptr = [0] + np.cumsum(sizes).tolist()
        self.structure = torch.repeat_interleave(torch.arange(self.b, device=self.device),
                                                 torch.tensor(sizes, device=self.device))  # [N]
        periodic = (pbc.all(dim=1) & (torch.linalg.det(cell).abs() > 1e-9)).any()
        self.static = StaticStep(model, numbers, self.ptr, cell, pbc, skin=skin, stress=bool(periodic),
                                 cuda_graph=cuda_graph)

    def sum(self, values):  # [N] -> [B]
        return torch.zeros(self.b, dtype=values.dtype, device=self.device).index_add(0, self.structure, values)

    def subset(self, keep: torch.Tensor, model, skin, cuda_graph) -> "_Batch":
        rows = torch.nonzero(keep).squeeze(1).tolist()
        atoms = keep[self.structure]
        state = tuple(t[keep] for t in (self.dt, self.a, self.nfire, self.steps, self.started))
        return _Batch(model, [self.ids[r] for r in rows], self.x[atoms], self.v[atoms], self.numbers[atoms],
                      self.cell[keep], self.pbc[keep], [self.sizes[r] for r in rows], state, skin, cuda_graph)


def _relax_chunk(model, atoms_list, fmax, max_steps, skin, cuda_graph, compact, par) -> list[dict]:
    device = next(model.parameters()).device
    state = pack_atoms(atoms_list, device)
    b = len(atoms_list)

    def full(value, dtype=torch.float64):
        return torch.full((b,), value, dtype=dtype, device=device)

    fire_state = (full(float(par["dt"])), full(float(par["astart"])), full(0, torch.int64), full(0, torch.int64),
                  full(False, torch.bool))  # dt, a, ASE's Nsteps (since the last reset), steps taken, started
    batch = _Batch(model, list(range(b)), state["positions"], torch.zeros_like(state["positions"]),
                   state["numbers"], state["cell"], state["pbc"], [len(a) for a in atoms_list], fire_state, skin,
                   cuda_graph)
    results: list = [None] * b
    while True:
        out = batch.static(batch.x)
        f = out["forces"]  # [N, 3] eV/Å
        f2 = (f * f).sum(dim=1)  # [N]
        worst = torch.zeros(batch.b, dtype=torch.float64, device=device)
        worst = worst.scatter_reduce(0, batch.structure, f2, "amax")  # [B] max |F|^2
        converged = worst.sqrt() < fmax  # [B], ASE: max_i |F_i| < fmax
        active = ~converged & (batch.steps < max_steps)  # [B]
        num_active = int(active.sum())  # the one host sync per step
        if num_active == 0 or (compact and num_active <= batch.b // 2):
            _finish(batch, out, worst, converged, ~active, atoms_list, results)
            if num_active == 0:
                return results
            batch = batch.subset(active, model, skin, cuda_graph)
            continue
        _fire_move(batch, f, f2, active, par)


def _fire_move(batch, f, f2, active, par) -> None:
    """One ase.optimize.FIRE step for the active structures (the others keep their state)."""
    s, v = batch.structure, batch.v
    vf, grad2, vv = batch.sum((f * v).sum(dim=1)), batch.sum(f2), batch.sum((v * v).sum(dim=1))
    uphill = batch.started & ~(vf > 0)
    downhill = batch.started & (vf > 0)
    mix = torch.where(downhill, batch.a, 0.0)  # [B]
    scale = torch.where(grad2 > 0, vv.sqrt() / torch.where(grad2 > 0, grad2, 1.0).sqrt(), 0.0)
    v_new = (1.0 - mix)[s, None] * v + (mix * scale)[s, None] * f  # v (1-a) + a |v| F/|F|
    v_new = torch.where(uphill[s, None], 0.0, v_new)
    grow = downhill & (batch.nfire > par["Nmin"])
    dt = torch.where(grow, torch.clamp(batch.dt * par["finc"], max=par["dtmax"]), batch.dt)
    dt = torch.where(uphill, batch.dt * par["fdec"], dt)
    a = torch.where(grow, batch.a * par["fa"], batch.a)
    a = torch.where(uphill, torch.full_like(a, par["astart"]), a)
    nfire = torch.where(downhill, batch.nfire + 1, torch.where(uphill, 0, batch.nfire))
    v_new = v_new + dt[s, None] * f
    dr = dt[s, None] * v_new
    normdr = batch.sum((dr * dr).sum(dim=1)).sqrt()
    limit = torch.where(normdr > par["maxstep"], par["maxstep"] / torch.where(normdr > 0, normdr, 1.0), 1.0)
    move = active[s, None]
    batch.x = torch.where(move, batch.x + dr * limit[s, None], batch.x)
    batch.v = torch.where(move, v_new, v)
    batch.dt = torch.where(active, dt, batch.dt)
    batch.a = torch.where(active, a, batch.a)
    batch.nfire = torch.where(active, nfire, batch.nfire)
    batch.started = batch.started | active
    batch.steps = batch.steps + active.to(torch.int64)


def _finish(batch, out, worst, converged, done, atoms_list, results) -> None:
    """Write the result dicts (and the relaxed positions into the Atoms) of the structures flagged `done`."""
    positions = batch.x.cpu().numpy()
    forces = out["forces"].cpu().numpy()
    energy = out["energy"].cpu().numpy()
    stress = out["stress"].cpu().numpy() if "stress" in out else None
    periodic = batch.static.periodic.cpu().numpy()
    max_force = worst.sqrt().cpu().numpy()
    steps, converged, done = batch.steps.cpu().numpy(), converged.cpu().numpy(), done.cpu().numpy()
    for row, k in enumerate(batch.ids):
        if not done[row]:
            continue
        lo, hi = batch.ptr[row], batch.ptr[row + 1]
        atoms = atoms_list[k]
        atoms.positions = positions[lo:hi]
        results[k] = {
            "energy": float(energy[row]),
            "energy_per_atom": float(energy[row]) / max(len(atoms), 1),
            "forces": forces[lo:hi].astype(np.float64),
            "stress": stress[row].copy() if stress is not None and periodic[row] else None,
            "max_force": float(max_force[row]),
            "steps": int(steps[row]),
            "converged": bool(converged[row]),
        }
