"""The potential: MACE-style equivariant message passing with HIP-NN-style summed per-layer energies.

Energy model (eV), for atom i of species s_i:

    E_i = E0[s_i] + (shift + b[s_i]) * tanh(n_i) + scale * sum_t readout_t(h_i^t)   (accumulated in float64)
    n_i = sum_{j in N(i)} f_cut(r_ij)                                          (smooth coordination number)

- E0 (``atomic_energies``) are the isolated-atom reference energies. An atom with no neighbour inside r_max
  has n_i = 0 and all hidden features exactly 0 (no biases after the embedding), so it gets exactly E0[s_i].
- ``shift`` (eV/atom) is the mean per-atom energy above the E0s in condensed environments; the gate tanh(n_i)
  switches it off smoothly (C^2, like f_cut) as an atom loses its last neighbour, so isolated atoms stay at E0
  while bulk and molecular atoms (n_i >~ 3, tanh >~ 0.995) get the full shift.
- ``b`` (``species_shift``, eV/atom, one trainable number per element, zero at the start) corrects the shift per
  element during training. The loss is dominated by forces, which say nothing about a constant; without b, the
  mean energy is carried only by the readouts and drifts by tens of meV/atom (seen on AcAc). With b, the
  optimizer moves it by about lr eV per step, so the energy offset is fitted within the first epoch.
- ``scale`` (eV) multiplies the sum of the per-layer readouts (linear for hidden layers, an MLP on the last).
Forces are -dE/dpositions, stress = (1/V) dE/dstrain (ASE sign), both from one autograd call.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Literal

import torch
from torch import nn

import kernels

from .config_tree import check
from .irreps import Irreps
from .layers import Interaction, LinearReadout, NonLinearReadout, ProductBasis, SpeciesEmbedding
from .radial import BesselBasis, PolynomialEnvelope

DTYPES = {"float32": torch.float32, "float64": torch.float64}
BACKENDS = tuple(kernels.BACKENDS)  # "auto", "reference", "triton"
TENSOR_PRODUCTS = tuple(kernels.TENSOR_PRODUCTS)  # "cg", "gaunt"
MAX_Z = 118


def calling_thread_backward():
    """Context in which autograd runs backward passes on the calling thread instead of handing them to its CUDA
    device thread (torch.autograd.set_multithreading_enabled(False); thread-local). The hand-offs and wake-ups
    cost host time that the small steps of training and MD are made of: on an H200 host (bench/train_step.py) a
    force-training step of 3BPA x 8 took 17.3 ms against 25.0 ms, and a synced conv fwd+bwd at 20k edges 20-45%
    less for every backend (bench/sync_modes.py). On CPU the backward runs on the calling thread anyway."""
    return torch.autograd.set_multithreading_enabled(False)


def row_times(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Row vectors times per-row matrices: x [R, 3], m [R, 3, 3] -> x_r @ m_r [R, 3]. Elementwise, not an einsum:
    torch turns "ri,rij->rj" into R tiny batched matmuls, ~0.1 ms per call at 200k edges on an H200."""
    return (x.unsqueeze(-1) * m).sum(dim=1)


def edge_vectors(pos, senders, receivers, shifts, cell, structure) -> torch.Tensor:
    """Edge vectors r_sender - r_receiver + shift @ cell [E, 3] (Å), from pos [N, 3], senders/receivers [E],
    shifts [E, 3] (lattice-vector multiples), cell [B, 3, 3] (rows = lattice vectors), structure [N].

    index_select rather than pos[index]: its backward is an index_add, while advanced indexing's backward is a
    sort-based index_put that took 1.7 ms of a 7 ms MD step (864 Cu atoms, H200). The index_add uses atomics,
    so forces can differ run to run in the last bits (the conv kernels themselves are bitwise deterministic)."""
    lattice = cell.index_select(0, structure.index_select(0, receivers))  # [E, 3, 3]
    return pos.index_select(0, senders) - pos.index_select(0, receivers) + row_times(shifts, lattice)


def shift_gate(cutoff: torch.Tensor, receivers: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """tanh(n_i) [N]: n_i is the sum of the cutoff envelope [E] over atom i's edges (receivers [E]), so the gate is
    0 exactly for an atom without neighbours and ~1 from about three neighbours on (module docstring)."""
    coordination = torch.zeros(num_nodes, dtype=cutoff.dtype, device=cutoff.device).index_add(0, receivers, cutoff)
    return torch.tanh(coordination)


def strained(positions: torch.Tensor, cell: torch.Tensor, structure: torch.Tensor):
    """A zero strain eps [B, 3, 3] (a leaf that requires grad) and the positions [N, 3] and cell [B, 3, 3] under the
    symmetric homogeneous deformation x -> x (I + sym(eps)) it stands for, structure [N] mapping atoms to cells.
    dE/deps at eps = 0 is the virial (eV); divided by the volume it is the stress in ASE's sign convention."""
    strain = torch.zeros(cell.shape[0], 3, 3, dtype=cell.dtype, device=cell.device, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(1, 2))  # [B, 3, 3]
    return strain, positions + row_times(positions, sym.index_select(0, structure)), cell + cell @ sym


@dataclass
class ModelConfig:
    """Hyperparameters of a Potential (all that is needed to rebuild it; saved in model files).

    elements: sorted atomic numbers; atomic_energies: E0 per element (eV, aligned with elements; [] = zeros);
    lmax: hidden feature l; lmax_sh: edge harmonics l; correlation: body order - 1 of the product basis;
    r_max (Å); radial_hidden: widths of the radial MLP; readout_hidden: width of the last readout MLP;
    avg_num_neighbors: divides each conv sum; scale (eV), shift (eV/atom): see the module docstring;
    dtype: "float32" | "float64" (parameters and features; energies are always summed in float64);
    backend: kernels backend ("auto" | "reference" | "triton");
    tensor_product: "cg" | "gaunt", the product of the edge conv and of the product basis (kernels/cg.py,
    kernels/coupling.py). Gaunt keeps only the even-sum (l1 + l2 + l3 even) couplings, the pointwise products of
    signals on the sphere: in the conv that is every path of our natural-parity features (same model), in the
    product basis it drops the couplings that weight intermediate degrees separately (fewer weights, a smaller
    function space; docs/tensor_products.md). Files written before this option load as "cg".
    """

    # The metadata checks are what train.py's `model:` section enforces (potential/config_tree.py);
    # __post_init__ checks every value again for models built in Python or read from files.
    elements: list[int]
    channels: int = field(default=32, metadata=check("positive"))
    lmax: int = field(default=1, metadata=check("nonnegative"))            # hidden node features l <= lmax
    lmax_sh: int = field(default=3, metadata=check("nonnegative"))         # edge spherical harmonics
    correlation: int = field(default=3, metadata=check("positive"))        # body order of the product basis - 1
    num_interactions: int = field(default=2, metadata=check("positive"))
    r_max: float = field(default=5.0, metadata=check("positive"))          # Å; also the neighbour-list cutoff
    num_bessel: int = field(default=8, metadata=check("positive"))
    envelope_p: int = field(default=6, metadata=check("positive"))
    radial_hidden: tuple[int, ...] = field(default=(64, 64, 64), metadata=check("positive"))
    readout_hidden: int = field(default=16, metadata=check("positive"))
    avg_num_neighbors: float = field(default=1.0, metadata=check("positive"))
    atomic_energies: list[float] = field(default_factory=list)            # eV per element, aligned with elements
    scale: float = field(default=1.0, metadata=check("positive"))          # eV
    shift: float = 0.0                                                     # eV per atom
    dtype: str = "float64"
    backend: str = "auto"                                                  # kernels backend: auto|reference|triton
    tensor_product: Literal["cg", "gaunt"] = "cg"                          # docs/tensor_products.md

    def __post_init__(self) -> None:
        def bad(key, value, why):
            return ValueError(f"ModelConfig: {key}={value!r}: {why}")

        def as_int(key, low):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, Integral) or v < low:
                raise bad(key, v, f"must be an integer >= {low}")
            setattr(self, key, int(v))

        def as_float(key, positive):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or (positive and v <= 0):
                raise bad(key, v, "must be a finite number" + (" > 0" if positive else ""))
            setattr(self, key, float(v))

        elements = self.elements
        if not isinstance(elements, (list, tuple)) or not elements:
            raise bad("elements", elements, "must be a non-empty list of atomic numbers")
        for z in elements:
            if isinstance(z, bool) or not isinstance(z, Integral) or not 1 <= z <= MAX_Z:
                raise bad("elements", elements, f"entry {z!r} is not an atomic number 1..{MAX_Z}")
        if len(set(elements)) != len(elements):
            raise bad("elements", elements, "has duplicates")
        energies = list(self.atomic_energies) if self.atomic_energies is not None else []
        if not energies:
            energies = [0.0] * len(elements)
        if len(energies) != len(elements):
            raise bad("atomic_energies", self.atomic_energies, f"needs one value per element ({len(elements)})")
        for e in energies:
            if isinstance(e, bool) or not isinstance(e, Real) or not math.isfinite(e):
                raise bad("atomic_energies", self.atomic_energies, f"entry {e!r} is not a finite number")
        order = sorted(range(len(elements)), key=lambda k: elements[k])  # sort elements, energies follow
        self.elements = [int(elements[k]) for k in order]
        self.atomic_energies = [float(energies[k]) for k in order]
        for key, low in (("channels", 1), ("lmax", 0), ("lmax_sh", 0), ("correlation", 1), ("num_interactions", 1),
                         ("num_bessel", 1), ("envelope_p", 2), ("readout_hidden", 1)):
            as_int(key, low)
        for key, positive in (("r_max", True), ("avg_num_neighbors", True), ("scale", False), ("shift", False)):
            as_float(key, positive)
        hidden = self.radial_hidden
        if not isinstance(hidden, (list, tuple)) or any(
                isinstance(h, bool) or not isinstance(h, Integral) or h < 1 for h in hidden):
            raise bad("radial_hidden", hidden, "must be a list of positive integers")
        self.radial_hidden = tuple(int(h) for h in hidden)
        if self.dtype not in DTYPES:
            raise bad("dtype", self.dtype, f"must be one of {sorted(DTYPES)}")
        if self.backend not in BACKENDS:
            raise bad("backend", self.backend, f"must be one of {list(BACKENDS)}")
        if self.tensor_product not in TENSOR_PRODUCTS:
            raise bad("tensor_product", self.tensor_product, f"must be one of {list(TENSOR_PRODUCTS)}")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a plain dict (YAML / model file); unknown keys are an error naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"ModelConfig.from_dict: expected a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown key(s) {unknown} (values {[d[k] for k in unknown]}); "
                             f"known keys: {sorted(known)}")
        if "elements" not in d:
            raise ValueError("ModelConfig: missing required key 'elements'")
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain-Python dict (lists, not tuples) that from_dict accepts."""
        d = dataclasses.asdict(self)
        d["radial_hidden"] = list(self.radial_hidden)
        return d


class Potential(nn.Module):
    """Equivariant interatomic potential. ``forward(batch)`` -> energies (float64), forces, stress."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"Potential expects a ModelConfig, got {type(config).__name__}")
        self.config = config
        dtype = DTYPES[config.dtype]
        c, num_species, lmax = config.channels, len(config.elements), config.lmax
        table = torch.full((MAX_Z + 1,), -1, dtype=torch.int64)  # atomic number -> species index, -1 unknown
        table[torch.tensor(config.elements)] = torch.arange(num_species)
        self.register_buffer("species_of_z", table)
        self.register_buffer("atomic_energies", torch.tensor(config.atomic_energies, dtype=torch.float64))  # [S] eV
        self.register_buffer("scale", torch.tensor(config.scale, dtype=torch.float64))  # eV
        self.register_buffer("shift", torch.tensor(config.shift, dtype=torch.float64))  # eV/atom
        self.species_shift = nn.Parameter(torch.zeros(num_species))  # [S] eV/atom, trained (module docstring)

        self.bessel = BesselBasis(config.r_max, config.num_bessel)
        self.envelope = PolynomialEnvelope(config.r_max, config.envelope_p)
        self.embedding = SpeciesEmbedding(num_species, c)
        self.interactions, self.products, self.readouts = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for t in range(config.num_interactions):
            last = t == config.num_interactions - 1
            lmax_in = 0 if t == 0 else lmax  # the embedding is l = 0 only
            lmax_hidden = 0 if last else lmax  # only scalars are read out after the last layer
            # messages carry every l the harmonics give (MACE's interaction irreps), at least lmax, and no l
            # that no path reaches (l_out <= l_in + l_sh)
            lmax_msg = min(max(config.lmax_sh, lmax), lmax_in + config.lmax_sh)
            self.interactions.append(Interaction(lmax_in, config.lmax_sh, lmax_msg, c, config.num_bessel,
                                                 config.radial_hidden, config.avg_num_neighbors,
                                                 config.tensor_product))
            self.products.append(ProductBasis(lmax_msg, lmax_hidden, config.correlation, num_species, c,
                                              skip_lmax=None if t == 0 else lmax_in,
                                              tensor_product=config.tensor_product))
            self.readouts.append(NonLinearReadout(c, config.readout_hidden) if last else LinearReadout(c))
        self.to(dtype)  # parameters and float buffers; the energy references stay float64 (see _apply)
        self.set_backend(config.backend)

    _FLOAT64_BUFFERS = ("atomic_energies", "scale", "shift")

    def _apply(self, fn, recurse=True):
        """Module.to/.float()/.cuda() hook: the energy references follow the device but stay float64."""
        saved = {name: self._buffers[name] for name in self._FLOAT64_BUFFERS}
        super()._apply(fn, recurse)
        for name, old in saved.items():
            self._buffers[name] = old.to(device=self._buffers[name].device, dtype=torch.float64)
        return self

    # ----------------------------------------------------------------- properties
    @property
    def elements(self) -> list[int]:
        return list(self.config.elements)

    @property
    def r_max(self) -> float:
        return self.config.r_max

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def set_backend(self, name: str) -> None:
        """Select the kernels backend at run time (results do not depend on it); config.backend is unchanged."""
        self.ops = kernels.get_ops(name)
        self.backend = name

    def set_edge_chunk(self, size: int | None) -> None:
        """Run each interaction's radial MLP and conv over chunks of at most `size` edges (None: off, the default).

        Trades compute for memory in inference (energy, forces, stress; also StaticStep, CUDA graphs included):
        the radial weights [E, P, C] and their gradient, by far the largest tensors, then exist for one chunk at a
        time, at the price of a second radial MLP + conv forward per chunk in the backward (checkpointing) and of
        node-sized work per chunk, so use few chunks (size ~ E / k for a small k). Results are unchanged. Applies
        in eval mode only; training with force losses (a double backward) must leave it off (train mode ignores it)."""
        if size is not None and (isinstance(size, bool) or not isinstance(size, Integral) or size < 1):
            raise ValueError(f"set_edge_chunk: size must be None or an integer >= 1, got {size!r}")
        for interaction in self.interactions:
            interaction.edge_chunk = None if size is None else int(size)

    def zero_readouts(self) -> None:
        """Zero the last weight of every readout, so that E_i = E0[s_i] + shift * tanh(n_i) exactly.

        Training calls this on a fresh model: the first predictions are then the fitted reference energies
        and shift (species_shift starts at zero), instead of carrying a random per-atom offset of order
        `scale` that takes many epochs to unlearn. The readouts' own gradients are non-zero, so everything trains from the first step on.
        (Random readouts are kept by the constructor: symmetry tests need a non-trivial energy.)
        """
        with torch.no_grad():
            for readout in self.readouts:
                last = readout.w2 if isinstance(readout, NonLinearReadout) else readout.weight
                last.zero_()

    def set_energy_reference(self, atomic_energies=None, scale=None, shift=None) -> None:
        """Replace E0s (list aligned with elements, eV), scale (eV) and/or shift (eV/atom), in config and buffers."""
        updates = {k: v for k, v in (("atomic_energies", atomic_energies), ("scale", scale), ("shift", shift))
                   if v is not None}
        self.config = dataclasses.replace(self.config, **{k: list(v) if k == "atomic_energies" else v
                                                          for k, v in updates.items()})
        self.atomic_energies.copy_(torch.tensor(self.config.atomic_energies, dtype=torch.float64))
        self.scale.fill_(self.config.scale)
        self.shift.fill_(self.config.shift)

    # ----------------------------------------------------------------- forward
    def species_index(self, numbers: torch.Tensor, structure: torch.Tensor | None = None,
                      rows: torch.Tensor | None = None) -> torch.Tensor:
        """Atomic numbers [N] -> species indices [N]; ValueError naming unknown elements and, given the
        structure of each atom ``structure`` [N] and dataset rows ``rows`` [B] (Batch.index), where they are."""
        from ase.data import chemical_symbols

        valid = (numbers >= 0) & (numbers <= MAX_Z)
        species = self.species_of_z[torch.where(valid, numbers, torch.zeros_like(numbers))]
        bad = (species < 0) | ~valid
        if bool(bad.any()):
            zs = sorted(set(numbers[bad].tolist()))
            names = ", ".join(f"{chemical_symbols[z] if 0 < z <= MAX_Z else '?'} (Z={z})" for z in zs)
            where = ""
            if structure is not None:
                at = structure[bad]
                found = sorted(set((rows[at] if rows is not None else at).tolist()))
                where = f" in structure(s) {found[:10]}{' ...' if len(found) > 10 else ''}"
            known = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in self.config.elements)
            raise ValueError(f"unknown element(s) {names}{where}: this model knows only {known}")
        return species

    def forward(self, batch, forces: bool = True, stress: bool = False, training: bool = False) -> dict:
        """Energies and derivatives of a ``data.Batch`` (the forces' backward runs on the calling thread:
        ``calling_thread_backward``).

        Returns "energy" [B] float64 (eV), "node_energy" [N] float64 (eV), "forces" [N, 3] (eV/Å, model dtype,
        if forces), "stress" [B, 3, 3] (eV/Å^3, ASE sign, 0 unless the structure is 3D periodic; if stress).
        training=True builds a differentiable graph (create_graph) so losses on forces/stress reach the
        weights; training=False is inference: outputs are detached and no second-order graph is kept.
        """
        need_grad = forces or stress
        grad_mode = torch.enable_grad() if (need_grad or training) else torch.no_grad()
        with grad_mode, calling_thread_backward():
            return self._forward(batch, forces, stress, training)

    def _forward(self, batch, forces: bool, stress: bool, training: bool) -> dict:
        dtype = self.dtype
        num_structures = int(batch.ptr.shape[0]) - 1
        species = self.species_index(batch.numbers, batch.batch, getattr(batch, "index", None))  # [N]
        structure = batch.batch  # [N]
        positions = batch.positions.to(dtype)  # [N, 3] Å
        if forces or stress:
            positions = positions.detach().requires_grad_(True)
        cell = batch.cell.to(dtype)  # [B, 3, 3], rows are lattice vectors
        strain = None
        pos, cell_eff = positions, cell
        if stress:
            strain, pos, cell_eff = strained(positions, cell, structure)

        senders, receivers = batch.senders, batch.receivers  # [E]
        shifts = batch.cell_shifts.to(dtype)  # [E, 3] integer multiples of the lattice vectors
        vec = edge_vectors(pos, senders, receivers, shifts, cell_eff, structure)  # [E, 3] Å
        graph = kernels.make_graph(senders, receivers, positions.shape[0])
        node_energy = self.node_energies(species, vec, graph, self.ops)  # [N] float64
        energy = torch.zeros(num_structures, dtype=torch.float64, device=node_energy.device)
        energy = energy.index_add(0, structure, node_energy)  # [B]

        out = {"energy": energy, "node_energy": node_energy}
        if forces or stress:
            inputs = [positions] + ([strain] if stress else [])
            if energy.requires_grad:
                grads = torch.autograd.grad(energy.sum(), inputs, create_graph=training, allow_unused=True)
            else:  # nothing depends on the inputs (e.g. frozen weights and no edges)
                grads = [None] * len(inputs)
            grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
            if forces:
                out["forces"] = -grads[0]  # [N, 3] eV/Å
            if stress:
                periodic = batch.pbc.all(dim=1)  # [B]
                volume = torch.linalg.det(cell).abs()  # [B] Å^3
                ok = periodic & (volume > 0)
                safe_volume = torch.where(ok, volume, torch.ones_like(volume))
                virial = grads[1]  # [B, 3, 3] eV, dE/dstrain
                out["stress"] = torch.where(ok[:, None, None], virial / safe_volume[:, None, None],
                                            torch.zeros_like(virial))
        if not training:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def node_energies(self, species: torch.Tensor, vec: torch.Tensor, graph, ops=None) -> torch.Tensor:
        """Per-atom energies [N] float64 (eV) from species indices [N], edge vectors [E, 3] (Å, sender minus
        receiver, in the graph's edge order) and a ``kernels.Graph``; ``ops`` defaults to the model's backend.

        The whole energy model lives here; ``forward`` adds positions, strain, derivatives. Callers that keep
        their own graph / ops (e.g. static-shape MD steps) use it directly instead of re-implementing it."""
        ops = self.ops if ops is None else ops
        num_nodes, receivers = graph.num_nodes, graph.receivers
        r2 = (vec * vec).sum(dim=-1)  # [E] Å^2
        nonzero = r2 > 0
        r = torch.where(nonzero, torch.sqrt(torch.where(nonzero, r2, torch.ones_like(r2))), torch.zeros_like(r2))
        cutoff = self.envelope(r)  # [E], exactly 0 for r >= r_max
        edge_feats = self.bessel(r) * cutoff.unsqueeze(-1)  # [E, num_bessel], exactly 0 for r >= r_max
        edge_sh = ops.spherical_harmonics(vec, self.config.lmax_sh)  # [E, (lmax_sh+1)**2]

        h = self.embedding(species)  # [N, 1, C]
        site = torch.zeros(num_nodes, dtype=h.dtype, device=h.device)  # [N] sum of readouts
        for interaction, product, readout in zip(self.interactions, self.products, self.readouts):
            m = interaction(h, edge_sh, edge_feats, graph, ops)  # [N, K_msg, C]
            h = product(m, h, species, ops)  # [N, K_hidden, C]
            site = site + readout(h)  # [N]
        gate = shift_gate(cutoff, receivers, num_nodes)  # [N]
        shift = self.shift + self.species_shift[species].double()  # [N] eV/atom
        return self.atomic_energies[species] + shift * gate.double() + self.scale * site.double()

    def shift_gates(self, batch) -> torch.Tensor:
        """tanh(n_i) [N] float64 for the atoms of a data.Batch: the factor of the shift in E_i (module docstring),
        so that dE/d species_shift[s] sums it over the atoms of element s. No gradients."""
        with torch.no_grad():
            vec = edge_vectors(batch.positions.to(self.dtype), batch.senders, batch.receivers,
                               batch.cell_shifts.to(self.dtype), batch.cell.to(self.dtype), batch.batch)  # [E, 3] Å
            cutoff = self.envelope(vec.norm(dim=-1))  # [E]
            return shift_gate(cutoff, batch.receivers, batch.positions.shape[0]).double()

    def extra_repr(self) -> str:
        cfg = self.config
        return (f"elements={cfg.elements}, channels={cfg.channels}, lmax={cfg.lmax}, lmax_sh={cfg.lmax_sh}, "
                f"correlation={cfg.correlation}, tensor_product={cfg.tensor_product}, r_max={cfg.r_max}, dtype={cfg.dtype}, "
                f"backend={self.backend}, "
                f"hidden={Irreps(cfg.lmax, cfg.channels)}")
