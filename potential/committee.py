"""A committee of Potentials: the mean energy, forces and stress of M models, and their spread (uncertainty).

``Committee([model_a, model_b, ...])`` (or ``load_committee([a.pt, b.pt, ...])``) is a drop-in for a Potential
wherever one is evaluated: ``potential.Calculator``, ``potential.evaluate``, md.py and screen.py. The members must
agree on elements, r_max and dtype (ValueError naming the first member and key that disagree, with both values);
everything else (width, layers, weights, E0s) may differ.

How the members run ("batched"): every member sees the same ``data.Batch``, i.e. one neighbour list (built once,
at the shared r_max), one host -> device copy and one kernels Graph. Positions are stacked per member,
[M, N, 3], each member's energy is a function of its own copy, and one ``torch.autograd.grad`` call over the
stack gives all member forces (and strain derivatives) at once. The members' own layers and kernels still run
one member after another (M launches of each kernel): the weights are not fused into one wider model, since
the custom kernel autograd Functions do not support ``torch.func.vmap``.
The static path (``Committee.static_step``, what potential.Calculator uses on CUDA): members of one size (the same
architecture; weights, E0s, scale, shift and avg_num_neighbors may differ) run as ``StackedStep``, one
potential.static_step.StaticStep for the whole committee: one device Verlet list, one list check per step, and
one captured CUDA graph that evaluates every member on member-stacked positions with one autograd call. Members
of different sizes fall back to ``CommitteeStep``: one StaticStep (list and graph) per member, called in turn.

Outputs (``Committee.forward``, ``StackedStep`` and ``CommitteeStep`` calls): the Potential's keys, as committee
means,
    energy [B] float64 eV, node_energy [N] eV, forces [N, 3] eV/Å, stress [B, 3, 3] eV/Å^3 (if stress),
plus, over the M members (standard deviations are population ones, ddof = 0, i.e. numpy's np.std default):
    member_energy        [M, B] eV      each member's energy
    member_forces        [M, N, 3] eV/Å each member's forces
    energy_per_atom_std  [B] eV/atom    std_m(E_m / n_atoms)
    force_spread         [N] eV/Å       sqrt(mean_m |F_m,i - mean_m F_m,i|^2): the per-atom force spread
    max_force_spread     [B] eV/Å       max over each structure's atoms of force_spread
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

import kernels

from .model import Potential, calling_thread_backward, edge_vectors, row_times
from .static_step import StaticStep

# the extra ASE results of a committee calculator (potential.Calculator); units as in the module docstring
COMMITTEE_PROPERTIES = ["energy_per_atom_std", "force_spread", "max_force_spread", "member_energies",
                        "member_forces"]


class Committee(nn.Module):
    """M Potentials that agree on elements, r_max and dtype, evaluated together (module docstring)."""

    def __init__(self, members: Sequence[Potential], names: Sequence[str] | None = None):
        super().__init__()
        members = list(members)
        names = [f"member {k}" for k in range(len(members))] if names is None else [str(n) for n in names]
        if len(members) < 2:
            raise ValueError(f"Committee: needs at least 2 members, got {len(members)}")
        for name, m in zip(names, members):
            if not isinstance(m, Potential):
                raise TypeError(f"Committee: {name} is a {type(m).__name__}, not a potential.Potential")
        first = members[0]
        for name, m in zip(names[1:], members[1:]):
            for key, a, b in (("elements", first.elements, m.elements), ("r_max", first.r_max, m.r_max),
                              ("dtype", first.dtype, m.dtype)):
                if a != b:
                    raise ValueError(f"Committee: {name} has {key} {b}, but {names[0]} has {key} {a}: "
                                     f"the members must agree on elements, r_max and dtype")
        self.members = nn.ModuleList(members)
        self.names = names

    def __len__(self) -> int:
        return len(self.members)

    @property
    def elements(self) -> list[int]:
        return self.members[0].elements

    @property
    def r_max(self) -> float:
        return self.members[0].r_max

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def config(self):
        """The first member's ModelConfig (elements, r_max, dtype are those of every member)."""
        return self.members[0].config

    @property
    def backend(self) -> str:
        return self.members[0].backend

    def species_index(self, numbers, structure=None, rows=None):
        return self.members[0].species_index(numbers, structure, rows)

    def forward(self, batch, forces: bool = True, stress: bool = False, training: bool = False) -> dict:
        """Committee means and spreads of a ``data.Batch`` (module docstring); inference only."""
        if training:
            raise ValueError("Committee: training=True is not supported; train each member on its own "
                             "(train.py with training.committee: N)")
        with torch.enable_grad() if (forces or stress) else torch.no_grad(), calling_thread_backward():
            return self._forward(batch, forces or stress, stress)

    def _forward(self, batch, derivatives: bool, stress: bool) -> dict:
        dtype, m_count = self.dtype, len(self.members)
        num_structures = int(batch.ptr.shape[0]) - 1
        structure = batch.batch  # [N]
        species = self.species_index(batch.numbers, structure, getattr(batch, "index", None))  # [N]
        positions = batch.positions.to(dtype).detach()  # [N, 3] Å
        stacked = positions.unsqueeze(0).repeat(m_count, 1, 1).requires_grad_(derivatives)  # [M, N, 3]
        cell = batch.cell.to(dtype)  # [B, 3, 3], rows = lattice vectors
        strain = torch.zeros(m_count, num_structures, 3, 3, dtype=dtype, device=positions.device,
                             requires_grad=stress)  # [M, B, 3, 3]
        shifts = batch.cell_shifts.to(dtype)  # [E, 3]
        graph = kernels.make_graph(batch.senders, batch.receivers, positions.shape[0])  # shared by the members
        node_energy = []
        for k, member in enumerate(self.members):
            pos, cell_eff = stacked[k], cell
            if stress:  # x -> x (I + sym(eps)), as Potential.forward
                sym = 0.5 * (strain[k] + strain[k].transpose(1, 2))  # [B, 3, 3]
                pos = pos + row_times(pos, sym.index_select(0, structure))
                cell_eff = cell + cell @ sym
            vec = edge_vectors(pos, batch.senders, batch.receivers, shifts, cell_eff, structure)  # [E, 3] Å
            node_energy.append(member.node_energies(species, vec, graph))  # [N] float64
        node_energy = torch.stack(node_energy)  # [M, N] float64 eV
        member_energy = torch.zeros(m_count, num_structures, dtype=torch.float64, device=positions.device)
        member_energy = member_energy.index_add(1, structure, node_energy)  # [M, B]
        out = {"member_energy": member_energy.detach(), "node_energy": node_energy.detach().mean(0)}
        if derivatives:
            inputs = [stacked] + ([strain] if stress else [])
            grads = (torch.autograd.grad(member_energy.sum(), inputs, allow_unused=True)
                     if member_energy.requires_grad else [None] * len(inputs))
            grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
            out["member_forces"] = -grads[0]  # [M, N, 3] eV/Å
            if stress:
                periodic = batch.pbc.all(dim=1)  # [B]
                volume = torch.linalg.det(cell).abs()  # [B] Å^3
                ok = periodic & (volume > 0)
                safe = torch.where(ok, volume, torch.ones_like(volume))
                member_stress = torch.where(ok[:, None, None], grads[1] / safe[:, None, None],
                                            torch.zeros_like(grads[1]))  # [M, B, 3, 3] eV/Å^3
                out["stress"] = member_stress.mean(0)
        counts = batch.ptr[1:] - batch.ptr[:-1]  # [B]
        out.update(statistics(out["member_energy"], out.get("member_forces"), structure, counts))
        return out

    def same_size(self) -> bool:
        """Whether the members share an architecture (and backend), so that one StackedStep serves them all."""
        free = ("atomic_energies", "scale", "shift", "avg_num_neighbors")
        first = {k: v for k, v in self.config.to_dict().items() if k not in free}
        return all({k: v for k, v in m.config.to_dict().items() if k not in free} == first
                   and m.backend == self.backend for m in self.members)

    def static_step(self, numbers, ptr, cell, pbc, skin: float = 1.0, stress: bool = False):
        """The static step for these structures (what ``potential.Calculator`` uses on CUDA): ``StackedStep``
        when the members share a size, else ``CommitteeStep`` (module docstring)."""
        kind = StackedStep if self.same_size() else CommitteeStep
        return kind(self, numbers, ptr, cell, pbc, skin=skin, stress=stress)


def statistics(member_energy: torch.Tensor, member_forces: torch.Tensor | None, structure: torch.Tensor,
               counts: torch.Tensor) -> dict:
    """Committee means and spreads (module docstring) from member_energy [M, B] eV, member_forces [M, N, 3] eV/Å
    (or None), structure [N] (the structure of each atom) and counts [B] (atoms per structure)."""
    out = {"energy": member_energy.mean(0)}  # [B]
    per_atom = member_energy / counts.clamp(min=1).to(member_energy.dtype)  # [M, B] eV/atom
    out["energy_per_atom_std"] = per_atom.std(0, correction=0)  # [B]
    if member_forces is not None:
        mean = member_forces.mean(0)  # [N, 3]
        spread = ((member_forces - mean) ** 2).sum(-1).mean(0).sqrt()  # [N] eV/Å
        worst = torch.zeros(counts.shape[0], dtype=spread.dtype, device=spread.device)
        out.update(forces=mean, force_spread=spread, member_forces=member_forces,
                   max_force_spread=worst.scatter_reduce(0, structure, spread, "amax", include_self=True))
    return out


class CommitteeStep:
    """``potential.static_step.StaticStep`` for a committee: one StaticStep (its own device Verlet list and, on
    CUDA, its own captured graph) per member, called in turn; the outputs combined as ``Committee.forward``."""

    def __init__(self, committee: Committee, numbers, ptr, cell, pbc, skin: float = 1.0, stress: bool = False):
        self.steps = [StaticStep(m, numbers, ptr, cell, pbc, skin=skin, stress=stress) for m in committee.members]
        self.stress = bool(stress)
        ptr = torch.as_tensor(ptr, dtype=torch.int64)
        device = self.steps[0].device
        self.counts = (ptr[1:] - ptr[:-1]).to(device)  # [B]
        self.structure = torch.repeat_interleave(torch.arange(len(self.counts), device=device), self.counts)  # [N]

    @property
    def rebuilds(self) -> int:
        return self.steps[0].rebuilds

    def set_cell(self, cell) -> None:
        for step in self.steps:
            step.set_cell(cell)

    def __call__(self, positions: torch.Tensor) -> dict:
        outs = [step(positions) for step in self.steps]
        member_energy = torch.stack([o["energy"] for o in outs])  # [M, B]
        member_forces = torch.stack([o["forces"] for o in outs])  # [M, N, 3]
        result = statistics(member_energy, member_forces, self.structure, self.counts)
        result["member_energy"] = member_energy
        if "node_energy" in outs[0]:
            result["node_energy"] = torch.stack([o["node_energy"] for o in outs]).mean(0)
        if self.stress:
            result["stress"] = torch.stack([o["stress"] for o in outs]).mean(0)
        return result


class StackedStep(StaticStep):
    """One StaticStep for a committee of one size (module docstring): the base class's padded buffers, list and
    capture-safe ops (made for the first member; the others have the same architecture and backend), with an
    evaluation that runs every member on its copy of the positions, [M, N+1, 3], and one autograd call."""

    def __init__(self, committee: Committee, numbers, ptr, cell, pbc, skin: float = 1.0, stress: bool = False):
        if not committee.same_size():
            raise ValueError("StackedStep: the members must share an architecture; use CommitteeStep")
        super().__init__(committee.members[0], numbers, ptr, cell, pbc, skin=skin, stress=stress)
        self.members = list(committee.members)
        self.counts = (torch.as_tensor(ptr, dtype=torch.int64)[1:] - torch.as_tensor(ptr, dtype=torch.int64)[:-1]
                       ).to(self.device)  # [B]

    def _compute(self) -> dict:
        """As StaticStep._compute, with every member's parameters frozen (forces need no weight gradients)."""
        params = [p for m in self.members for p in m.parameters() if p.requires_grad]
        try:
            for p in params:
                p.requires_grad_(False)
            with torch.enable_grad():
                return self._compute_grad()
        finally:
            for p in params:
                p.requires_grad_(True)

    def _compute_grad(self) -> dict:
        b, n, m_count = self.num_structures, self.num_atoms, len(self.members)
        structure = self.structure  # [N+1], the dummy atom in structure B
        stacked = self.positions.detach().unsqueeze(0).repeat(m_count, 1, 1).requires_grad_(True)  # [M, N+1, 3]
        inputs = [stacked]
        if self.stress:
            strain = torch.zeros(m_count, b + 1, 3, 3, dtype=self.dtype, device=self.device, requires_grad=True)
            inputs.append(strain)
        # the active edges and their graph, as StaticStep._compute_grad, once for every member
        inside = self._inside(self.positions)  # [E_pad]
        active = torch.nonzero_static(inside, size=self.num_active_edges,
                                      fill_value=self.num_pad_edges - 1).squeeze(1)  # [A]
        snd, rcv = self.senders.index_select(0, active), self.receivers.index_select(0, active)  # [A]
        shifts, real = self.shifts.index_select(0, active), self.edge_mask.index_select(0, active)[:, None]
        graph = self._graph_of(snd, rcv, self._active_send_perm(inside))
        energies, nodes = [], []
        for k, member in enumerate(self.members):
            pos, cell = stacked[k], self.cell
            if self.stress:  # x -> x (I + sym(eps)), as Potential._forward
                sym = 0.5 * (strain[k] + strain[k].transpose(1, 2))  # [B+1, 3, 3]
                pos = pos + row_times(pos, sym.index_select(0, structure))
                cell = cell + cell @ sym
            vec = torch.where(real, edge_vectors(pos, snd, rcv, shifts, cell, structure), self.far)  # [A, 3] Å
            node = member.node_energies(self.species, vec, graph, self.ops)  # [N+1] float64
            nodes.append(node[:n])
            energies.append(torch.zeros(b + 1, dtype=torch.float64, device=self.device).index_add(0, structure, node))
        energy = torch.stack(energies)  # [M, B+1] eV
        grads = torch.autograd.grad(energy.sum(), inputs)
        member_energy = energy[:, :b].detach()  # [M, B]
        member_forces = (-grads[0][:, :n]).to(torch.float64)  # [M, N, 3] eV/Å
        out = statistics(member_energy, member_forces, structure[:n], self.counts)
        out.update(member_energy=member_energy, node_energy=torch.stack(nodes).detach().mean(0))
        if self.stress:  # [B, 3, 3] eV/Å^3, the members' mean
            out["stress"] = grads[1][:, :b].to(torch.float64).mean(0) * self.inv_volume[:, None, None]
        return out


def load_committee(paths: Sequence, device: str | torch.device = "cpu") -> Committee:
    """A Committee of model files (``potential.save_model``); errors name the file (and, for a mismatch, the key)."""
    from .io import load_model

    paths = [str(p) for p in paths]
    return Committee([load_model(p, device=device) for p in paths], names=paths)


def host_results(out: dict) -> dict:
    """The committee's extra ASE results (COMMITTEE_PROPERTIES) of one structure, as float64 numpy."""
    return {
        "energy_per_atom_std": float(out["energy_per_atom_std"][0]),
        "force_spread": out["force_spread"].detach().double().cpu().numpy(),  # [N] eV/Å
        "max_force_spread": float(out["max_force_spread"][0]),
        "member_energies": out["member_energy"][:, 0].detach().double().cpu().numpy(),  # [M] eV
        "member_forces": out["member_forces"].detach().double().cpu().numpy(),  # [M, N, 3] eV/Å
    }
