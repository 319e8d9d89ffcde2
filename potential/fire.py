"""Batched FIRE relaxation on the device: many structures at once, each with its own FIRE state.

    from potential.fire import relax_batch
    results = relax_batch(model, atoms_list, fmax=0.05, max_steps=500)

Each structure follows ase.optimize.FIRE exactly (same defaults: dt 0.1, maxstep 0.2 Å, dtmax 1.0, Nmin 5,
finc 1.1, fdec 0.5, astart 0.1, fa 0.99; no downhill check) with its own velocity, dt, a and step counter,
and ASE's stopping rule: before each step, a structure whose largest atomic force is below fmax (eV/Å) is
converged and frozen; one that has taken max_steps steps stops unconverged. Positions only (fixed cell).
Forces come from potential.static_step.StaticStep (device Verlet lists, CUDA graph on GPU); the host reads one
flag per step (whether any structure is still moving). The Atoms are updated in place with the relaxed
positions, like an ASE optimizer does. Each result is a dict like potential.screening.relax_one's:
energy, energy_per_atom (eV), forces [n,3] (eV/Å), stress [3,3] (eV/Å^3, ASE sign; None unless 3D periodic),
max_force (eV/Å), steps, converged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from .dynamics import batch_atoms
from .static_step import StaticStep

FIRE_DEFAULTS = dict(dt=0.1, maxstep=0.2, dtmax=1.0, Nmin=5, finc=1.1, fdec=0.5, astart=0.1, fa=0.99)


def relax_batch(model, atoms_list: Sequence[Atoms], fmax: float = 0.05, max_steps: int = 500, skin: float = 1.0,
                cuda_graph: bool | None = None, **fire) -> list[dict]:
    """Relax every structure of `atoms_list` with FIRE (see the module docstring); returns one dict each."""
    unknown = sorted(set(fire) - set(FIRE_DEFAULTS))
    if unknown:
        raise ValueError(f"relax_batch: unknown FIRE parameter(s) {unknown}; known: {sorted(FIRE_DEFAULTS)}")
    if not fmax > 0:
        raise ValueError(f"relax_batch: fmax must be > 0 eV/Å, got {fmax}")
    par = {**FIRE_DEFAULTS, **fire}
    atoms_list = list(atoms_list)
    device = next(model.parameters()).device
    state = batch_atoms(atoms_list, device)
    ptr = state["ptr"]
    b, x = len(ptr) - 1, state["positions"]  # x [N, 3] Å
    sizes = torch.tensor([ptr[i + 1] - ptr[i] for i in range(b)], device=device)
    structure = torch.repeat_interleave(torch.arange(b, device=device), sizes)  # [N]
    periodic = [bool(np.all(a.pbc)) and abs(np.linalg.det(np.asarray(a.cell))) > 1e-9 for a in atoms_list]
    static = StaticStep(model, state["numbers"], ptr, state["cell"], state["pbc"], skin=skin, stress=any(periodic),
                        cuda_graph=cuda_graph)

    def per_structure_sum(values):  # [N] -> [B]
        return torch.zeros(b, dtype=values.dtype, device=device).index_add(0, structure, values)

    def f64(value):
        return torch.full((b,), float(value), dtype=torch.float64, device=device)

    v = torch.zeros_like(x)  # [N, 3] FIRE velocities
    dt, a = f64(par["dt"]), f64(par["astart"])
    nsteps_fire = torch.zeros(b, dtype=torch.int64, device=device)  # ASE's Nsteps (since the last reset)
    steps = torch.zeros(b, dtype=torch.int64, device=device)  # optimizer steps taken
    started = torch.zeros(b, dtype=torch.bool, device=device)
    converged = torch.zeros(b, dtype=torch.bool, device=device)
    while True:
        out = static(x)
        f = out["forces"]  # [N, 3] eV/Å
        f2 = (f * f).sum(dim=1)  # [N]
        worst = torch.zeros(b, dtype=torch.float64, device=device).scatter_reduce(0, structure, f2, "amax")
        converged = worst.sqrt() < fmax  # [B], ASE: max_i |F_i| < fmax
        active = ~converged & (steps < max_steps)  # [B]
        if not bool(active.any()):  # the one host sync per step
            break
        # FIRE velocity mixing / reset, per structure (ase.optimize.FIRE.step)
        vf = per_structure_sum((f * v).sum(dim=1))
        grad2 = per_structure_sum(f2)
        vv = per_structure_sum((v * v).sum(dim=1))
        uphill = started & ~(vf > 0)
        downhill = started & (vf > 0)
        mix = torch.where(downhill, a, 0.0)  # [B]
        scale = torch.where(grad2 > 0, vv.sqrt() / torch.where(grad2 > 0, grad2, 1.0).sqrt(), 0.0)
        v_new = (1.0 - mix)[structure, None] * v + (mix * scale)[structure, None] * f
        v_new = torch.where(uphill[structure, None], 0.0, v_new)
        grow = downhill & (nsteps_fire > par["Nmin"])
        dt_new = torch.where(grow, torch.clamp(dt * par["finc"], max=par["dtmax"]), dt)
        dt_new = torch.where(uphill, dt * par["fdec"], dt_new)
        a_new = torch.where(grow, a * par["fa"], a)
        a_new = torch.where(uphill, torch.full_like(a, par["astart"]), a_new)
        n_new = torch.where(downhill, nsteps_fire + 1, torch.where(uphill, 0, nsteps_fire))
        # the move
        v_new = v_new + dt_new[structure, None] * f
        dr = dt_new[structure, None] * v_new
        normdr = per_structure_sum((dr * dr).sum(dim=1)).sqrt()
        limit = torch.where(normdr > par["maxstep"], par["maxstep"] / torch.where(normdr > 0, normdr, 1.0), 1.0)
        dr = dr * limit[structure, None]
        # only active structures change state
        move = active[structure, None]
        x = torch.where(move, x + dr, x)
        v = torch.where(move, v_new, v)
        dt = torch.where(active, dt_new, dt)
        a = torch.where(active, a_new, a)
        nsteps_fire = torch.where(active, n_new, nsteps_fire)
        started = started | active
        steps = steps + active.to(torch.int64)

    positions = x.cpu().numpy()
    forces = out["forces"].cpu().numpy()
    energy = out["energy"].cpu().numpy()
    stress = out["stress"].cpu().numpy() if "stress" in out else None
    max_force = worst.sqrt().cpu().numpy()
    steps_np, converged_np = steps.cpu().numpy(), converged.cpu().numpy()
    results = []
    for i, atoms in enumerate(atoms_list):
        lo, hi = ptr[i], ptr[i + 1]
        atoms.positions = positions[lo:hi]
        results.append({
            "energy": float(energy[i]),
            "energy_per_atom": float(energy[i]) / max(len(atoms), 1),
            "forces": forces[lo:hi].astype(np.float64),
            "stress": stress[i].copy() if periodic[i] and stress is not None else None,
            "max_force": float(max_force[i]),
            "steps": int(steps_np[i]),
            "converged": bool(converged_np[i]),
        })
    return results
