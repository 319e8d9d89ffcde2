"""Static-shape energy + forces (+ stress) step of a Potential, replayable as a CUDA graph.

`StaticStep(model, numbers, ptr, cell, pbc, skin=1.0, stress=False)` evaluates a fixed set of B structures
(atoms ptr[b]:ptr[b+1] of one positions tensor) again and again at new positions, the way MD and relaxation do:

- Shapes are static. One padding ("dummy") atom is appended (index N, species 0, its own structure B with a
  zero cell); the edge arrays are padded to a bucket (the real count times `headroom`, rounded up to 256).
  Padding edges run dummy -> dummy and their vector is replaced by a constant of length 2 r_max + 1, so their
  radial envelope, edge features and radial weights are exactly 0: they add exactly nothing to any energy,
  force or stress. The dummy atom has no real neighbour, so its features are 0 and its energy (= E0 of
  species 0) is summed into structure B, which is dropped. Nothing padded reaches a real output.
- Neighbours: `potential.device_neighbors.BatchNeighbors` (Verlet list, r_max + skin, device-side displacement
  check, vesin on CUDA tensors). A rebuild refills the edge buffers in place; only when the real edge count
  outgrows the bucket are the buffers reallocated and the graph re-captured (`captures` counts captures).
- Active edges: of the Verlet list, only the edges shorter than r_max at the current positions contribute (the
  skin shell adds exactly 0), and a skin of 0.5 Å at r_max 5 Å lists 1.33x as many. Each evaluation first
  compacts them, in list order, into a second padded set (`num_active_edges`, bucketed like the list, padding
  dummy -> dummy) and builds its segment pointers on the device, so the radial MLP, the harmonics and the conv
  run over those only. `check(positions)` counts them along with the list's stale flags (one host read per
  step); a count above the bucket grows it (a re-capture) before the step runs, so nothing is ever cut off.
- Speculation: on CUDA the captured step is replayed right after its check, before the host reads the
  flags; a stale list or a full bucket discards that result and runs the step again. Near a rebuild (see
  SPECULATION_MARGIN) the host reads the flags first.
- On CUDA (cuda_graph=None -> True) the whole evaluation, autograd included, is captured once into a
  torch.cuda.CUDAGraph and replayed; on CPU the same padded computation runs eagerly (that is what CI tests).
- The model's node energy is re-expressed here without host syncs: the kernels Graph is built once per
  rebuild (not validated each call) and the symmetric contraction groups atoms by species with an ordering
  fixed at construction (the backends' ops count or check species on the host every call, which a graph cannot
  do): on CUDA with Triton, the Triton contraction with a species plan made once (contraction="auto"/"triton"),
  else the torch one of kernels/fixed_species.py ("grouped"); a capture that fails with the former is retried
  with the latter, and one that fails again falls back to eager with a warning.
  Spherical harmonics and the convolution are the model's own backend ops; the energy is the model's own
  `Potential.node_energies` with this step's graph and ops (tests/dynamics checks the two paths agree).

Call: `out = step(positions)` with positions [N, 3] (any float dtype, Å); returns a dict of tensors owned by
the step (overwritten by the next call; clone to keep): "energy" [B] float64 eV, "forces" [N, 3] float64 eV/Å,
"stress" [B, 3, 3] float64 eV/Å^3 (ASE sign; 0 for structures that are not 3D periodic; only if stress=True).
"""

from __future__ import annotations

import math
import warnings

import torch

import kernels
from kernels.fixed_species import grouped_contraction, triton_contraction
from kernels.graph import by_degree

from .device_neighbors import BatchNeighbors
from .model import edge_vectors, strained

EDGE_BUCKET = 256  # edge counts are padded to a multiple of this
# Above 2 x EDGE_CHUNK padded edges (~35k Cu atoms at r_max 5 Å) the conv runs over chunks of EDGE_CHUNK edges
# (Potential.set_edge_chunk): the [E, paths, channels] radial weights, the largest tensors by far, then exist for
# one chunk at a time (~7 GB at 128 channels, l <= 1), recomputed in the backward. Smaller systems are unchanged.
EDGE_CHUNK = 2**20
# A step is replayed before its list check is read (speculatively) unless, at the last step, an atom had moved
# more than this fraction of skin/2: a rebuild is then near, and a replay on a stale list would be wasted.
SPECULATION_MARGIN = 0.8


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


class StaticStep:
    """Padded, capture-safe evaluation of `model` on a fixed batch of structures (see the module docstring)."""

    def __init__(self, model, numbers, ptr, cell, pbc, skin: float = 1.0, stress: bool = False,
                 cuda_graph: bool | None = None, headroom: float = 1.1, contraction: str = "auto",
                 edge_chunk: int | None = EDGE_CHUNK):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = model.dtype
        dev = self.device
        ptr = torch.as_tensor(ptr, dtype=torch.int64).tolist()
        self.num_structures = b = len(ptr) - 1
        self.num_atoms = n = ptr[-1]
        numbers = torch.as_tensor(numbers, dtype=torch.int64, device=dev)
        cell = torch.as_tensor(cell, dtype=torch.float64, device=dev).reshape(b, 3, 3)
        pbc = torch.as_tensor(pbc, dtype=torch.bool, device=dev).reshape(b, 3)
        sizes = torch.tensor([ptr[i + 1] - ptr[i] for i in range(b)], device=dev)
        structure = torch.repeat_interleave(torch.arange(b, device=dev), sizes)  # [N]
        species = model.species_index(numbers, structure)  # ValueError naming unknown elements
        self.species = torch.cat([species, species.new_zeros(1)])  # [N+1], dummy atom: species 0
        self.structure = torch.cat([structure, structure.new_full((1,), b)])  # [N+1], dummy: structure B
        self.cell = torch.zeros(b + 1, 3, 3, dtype=self.dtype, device=dev)  # [B+1, 3, 3] Å
        self.cell[:b] = cell.to(self.dtype)
        self.pbc = pbc
        self.stress = bool(stress)
        self.headroom = float(headroom)
        self.edge_chunk = edge_chunk  # conv over chunks of this many edges above 2 x this many (None: never)
        self.cuda_graph = (dev.type == "cuda") if cuda_graph is None else bool(cuda_graph)
        if self.cuda_graph and dev.type != "cuda":
            raise ValueError(f"StaticStep: cuda_graph=True needs a CUDA model, the model is on {dev}")
        self.neighbors = BatchNeighbors(ptr, cell, pbc, model.r_max, skin)
        self.positions = torch.zeros(n + 1, 3, dtype=self.dtype, device=dev)  # [N+1, 3] input buffer
        self.far = torch.tensor([2.0 * model.r_max + 1.0, 0.0, 0.0], dtype=self.dtype, device=dev)  # Å
        if contraction not in ("auto", "grouped", "triton"):
            raise ValueError(f"StaticStep: contraction={contraction!r}: choose 'auto', 'grouped' or 'triton'")
        self.contraction = "grouped"
        if contraction == "triton" or (contraction == "auto" and dev.type == "cuda" and model.backend != "reference"
                                       and kernels.triton_available()):
            try:
                self._set_ops(triton_contraction(self.species, len(model.elements), model.config.channels), "triton")
            except (ImportError, AttributeError) as exc:
                if contraction == "triton":
                    raise RuntimeError(f"StaticStep: the Triton contraction is unavailable ({exc})") from exc
        if self.contraction == "grouped":
            self._set_ops(grouped_contraction(self.species, len(model.elements)), "grouped")
        self._update_volume()
        self.nodes = torch.arange(n + 2, device=dev)  # [N+2] segment boundaries searched for
        self.num_pad_edges = 0  # Verlet list buffers
        self.num_active_edges = 0  # compacted edges (shorter than r_max), what the model evaluates
        self.captures = 0
        self._graph = self._check_graph = None
        self._out = self._flags = None
        self._speculate = True

    def _set_ops(self, contraction_op, name: str) -> None:
        """Spherical harmonics and conv from the model's backend; the species-fixed contraction `name`."""
        ops = self.model.ops
        self.ops = kernels.Ops("static", ops.spherical_harmonics, ops.edge_conv, contraction_op)
        self.contraction = name

    # ------------------------------------------------------------------ state
    def _update_volume(self) -> None:
        """periodic [B] and inv_volume [B] (1/Å^3, 0 unless 3D periodic), in place: a captured graph reads them."""
        volume = torch.linalg.det(self.cell[: self.num_structures].double()).abs()  # [B] Å^3
        periodic = self.pbc.all(dim=1) & (volume > 0)
        inv_volume = torch.where(periodic, 1.0 / torch.where(periodic, volume, 1.0), 0.0)
        if not hasattr(self, "inv_volume"):
            self.periodic, self.inv_volume = periodic, inv_volume
        else:
            self.periodic.copy_(periodic)
            self.inv_volume.copy_(inv_volume)

    def set_cell(self, cell) -> None:
        """New cells [B, 3, 3] (Å), e.g. for NPT: periodic structures get new lists at the next call."""
        cell = torch.as_tensor(cell, dtype=torch.float64, device=self.device).reshape(self.num_structures, 3, 3)
        self.cell[: self.num_structures].copy_(cell.to(self.dtype))  # in place: a captured graph sees it
        self.neighbors.set_cell(cell)
        self._update_volume()

    @property
    def rebuilds(self) -> int:
        return self.neighbors.rebuilds

    @property
    def num_edges(self) -> int:
        """Real edges (within r_max + skin) of the current list."""
        return int(self.neighbors.edges[0].shape[0]) if self.neighbors.edges is not None else 0

    def _load_edges(self) -> None:
        senders, receivers, shifts = self.neighbors.edges
        e, n, dev = senders.shape[0], self.num_atoms, self.device
        if e >= self.num_pad_edges:  # bucket overflow: new buffers, so the graphs must be captured again
            self.num_pad_edges = ep = _round_up(int(math.ceil(e * self.headroom)) + 1, EDGE_BUCKET)
            self.senders = torch.full((ep,), n, dtype=torch.int64, device=dev)
            self.receivers = torch.full((ep,), n, dtype=torch.int64, device=dev)
            self.shifts = torch.zeros(ep, 3, dtype=self.dtype, device=dev)
            self.edge_mask = torch.zeros(ep, dtype=torch.bool, device=dev)
            self.list_send_perm = torch.zeros(ep, dtype=torch.int64, device=dev)
            self._graph = self._check_graph = None
        # every buffer is written in place: the captured graphs keep reading these same tensors
        # at least one padding edge stays at the end (index num_pad_edges - 1): the compaction's fill value
        self.senders[:e] = senders
        self.senders[e:] = n
        self.receivers[:e] = receivers
        self.receivers[e:] = n  # the dummy atom has the largest index: receivers stay sorted
        self.shifts[:e] = shifts.to(self.dtype)
        self.shifts[e:] = 0
        self.edge_mask[:e] = True
        self.edge_mask[e:] = False
        self.list_send_perm.copy_(torch.argsort(self.senders, stable=True))  # [E_pad], padding (dummy) last

    def _inside(self, positions: torch.Tensor) -> torch.Tensor:
        """[E_pad] bool: listed edges shorter than r_max at positions [N+1, 3] (model dtype, no grad)."""
        vec = edge_vectors(positions, self.senders, self.receivers, self.shifts, self.cell, self.structure)
        return (vec.square().sum(dim=1) < self.model.r_max**2) & self.edge_mask

    def check(self, positions: torch.Tensor) -> torch.Tensor:
        """[B+2] int64, device only (capturable), at positions [N, 3] (Å): per structure 1 if its neighbour list
        is stale; 1 if some atom has moved more than SPECULATION_MARGIN of the allowed displacement (the next
        step may need a rebuild); the number of listed edges shorter than r_max (the active edges a step needs)."""
        displacement2 = self.neighbors.displacement2(positions)  # [B] Å^2
        stale = self.neighbors.check(positions, displacement2).to(torch.int64)  # [B]
        near = (displacement2 > (SPECULATION_MARGIN * 0.5 * self.neighbors.skin) ** 2).any().to(torch.int64)
        if self.neighbors.edges is None:
            inside = stale.new_zeros(())
        else:
            pos = torch.cat([positions.detach().to(self.dtype), self.positions[self.num_atoms:]])  # [N+1, 3]
            inside = self._inside(pos).sum()
        return torch.cat([stale, near.view(1), inside.view(1)])

    def _grow_active(self, inside: int) -> None:
        """A bucket of active edges that holds `inside` (+ headroom) and at least one padding edge."""
        if inside >= self.num_active_edges:
            self.num_active_edges = _round_up(int(math.ceil(inside * self.headroom)) + 1, EDGE_BUCKET)
            self._graph = None

    # ------------------------------------------------------------------ evaluation
    def __call__(self, positions: torch.Tensor) -> dict:
        """Energies, forces (and stress) at positions [N, 3] Å."""
        self.positions[: self.num_atoms].copy_(positions.detach())
        flags = self._checked()
        # speculate that the list holds (the GPU then never waits for the host's read of the flags), unless the
        # last step came near a rebuild: a discarded speculative step costs a whole step
        speculate = self._graph is not None and self._speculate
        if speculate:
            self._graph.replay()
        values = flags.tolist()  # the one host sync of a step
        stale, inside = values[: self.num_structures], values[-1]
        self._speculate = not values[-2]
        if not any(stale) and inside < self.num_active_edges and self._graph is not None:
            if not speculate:
                self._graph.replay()
            return self._out
        # a stale list or too many active edges (the speculative results, if any, are discarded)
        if self.neighbors.update(positions, stale) or self.neighbors.edges is None:
            self._speculate = True  # fresh lists
            self._load_edges()
            inside = int(self._inside(self.positions).sum())  # the new list's count (a rebuild: rare)
        self._grow_active(inside)
        if not self.cuda_graph:
            return self._compute()
        if self._graph is None:
            self._capture()
            if not self.cuda_graph:
                return self._compute()
        self._graph.replay()
        return self._out

    def _checked(self) -> torch.Tensor:
        """check() of the positions buffer: replayed as its own CUDA graph (a dozen small kernels whose launches
        would otherwise cost an ASE step ~0.1 ms of host time), eager before the first list or without graphs."""
        if not self.cuda_graph or self.neighbors.edges is None:
            return self.check(self.positions[: self.num_atoms])
        if self._check_graph is None:
            try:
                self._check_graph, self._flags = _captured(lambda: self.check(self.positions[: self.num_atoms]),
                                                           self.device)
            except RuntimeError as exc:
                torch.cuda.synchronize(self.device)
                warnings.warn(f"StaticStep: CUDA graph capture of the check failed ({exc}); running the padded "
                              "step eagerly", RuntimeWarning, stacklevel=3)
                self.cuda_graph = False
                return self.check(self.positions[: self.num_atoms])
        self._check_graph.replay()
        return self._flags

    def _capture(self) -> None:
        self._graph = None
        try:
            graph, out = _captured(self._compute, self.device)
        except RuntimeError as exc:  # an op that syncs the host cannot be captured
            torch.cuda.synchronize(self.device)
            if self.contraction != "grouped":  # retry with the torch contraction before giving up on graphs
                warnings.warn(f"StaticStep: CUDA graph capture failed with the {self.contraction} contraction "
                              f"({exc}); retrying with the grouped one", RuntimeWarning, stacklevel=3)
                self._set_ops(grouped_contraction(self.species, len(self.model.elements)), "grouped")
                return self._capture()
            warnings.warn(f"StaticStep: CUDA graph capture failed ({exc}); running the padded step eagerly",
                          RuntimeWarning, stacklevel=3)
            self.cuda_graph = False
            self._out = None
            return
        self._graph, self._out = graph, out
        self.captures += 1

    def _compute(self) -> dict:
        """The padded evaluation; only device ops on fixed-shape buffers (capturable).

        The model's parameters are frozen for the call (requires_grad restored after): forces need gradients
        with respect to positions (and strain) only, and custom autograd Functions (the Triton ops) would
        otherwise also compute the unused weight gradients."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            for p in params:
                p.requires_grad_(False)
            chunk = self.edge_chunk
            self.model.set_edge_chunk(chunk if chunk is not None and self.num_active_edges > 2 * chunk else None)
            with torch.enable_grad():  # forces are gradients, also when the caller is under no_grad
                return self._compute_grad()
        finally:
            self.model.set_edge_chunk(None)
            for p in params:
                p.requires_grad_(True)

    def _compute_grad(self) -> dict:
        b, n = self.num_structures, self.num_atoms
        structure = self.structure
        positions = self.positions.detach().requires_grad_(True)  # [N+1, 3]
        inputs = [positions]
        pos, cell = positions, self.cell
        if self.stress:  # x -> x (I + sym(eps)), as Potential._forward; cell [B+1, 3, 3]
            strain, pos, cell = strained(positions, cell, structure)
            inputs.append(strain)
        # active edges: the listed ones shorter than r_max, in list order (receiver-sorted), then padding
        inside = self._inside(self.positions)  # [E_pad]
        active = torch.nonzero_static(inside, size=self.num_active_edges,
                                      fill_value=self.num_pad_edges - 1).squeeze(1)  # [A] into the list
        snd, rcv = self.senders.index_select(0, active), self.receivers.index_select(0, active)  # [A]
        vec = edge_vectors(pos, snd, rcv, self.shifts.index_select(0, active), cell, structure)  # [A, 3] Å
        vec = torch.where(self.edge_mask.index_select(0, active)[:, None], vec, self.far)  # padding: 2 r_max + 1
        graph = self._graph_of(snd, rcv, self._active_send_perm(inside))
        node_energy = self._node_energy(vec, graph)  # [N+1] float64
        energy = torch.zeros(b + 1, dtype=torch.float64, device=self.device).index_add(0, structure, node_energy)
        grads = torch.autograd.grad(energy.sum(), inputs)
        out = {"energy": energy[:b].detach(), "node_energy": node_energy[:n].detach(),
               "forces": (-grads[0][:n]).to(torch.float64)}
        if self.stress:
            virial = grads[1][:b].to(torch.float64)  # [B, 3, 3] eV
            out["stress"] = virial * self.inv_volume[:, None, None]
        return out

    def _active_send_perm(self, inside: torch.Tensor) -> torch.Tensor:
        """[A] sender-sorted (stable) order of the active edges, from the list's own (made at its rebuild):
        a compaction (two prefix sums and a scatter) instead of a sort per step. Positions past the active count
        hold the padding edges, in order (their sender, the dummy atom, is the largest)."""
        a = self.num_active_edges
        # the clamps only matter in a speculative replay with more active edges than slots (then discarded):
        # indices stay in bounds
        active_index = (torch.cumsum(inside, 0) - 1).clamp_(max=a - 1)  # [E_pad] place among the active
        in_send_order = inside.index_select(0, self.list_send_perm)  # [E_pad]
        slot = torch.where(in_send_order, torch.cumsum(in_send_order, 0) - 1, a).clamp_(max=a)  # dump slot a
        perm = torch.arange(a + 1, device=self.device)  # identity: right for the padding tail
        perm.scatter_(0, slot, active_index.index_select(0, self.list_send_perm))
        return perm[:a]

    def _graph_of(self, senders: torch.Tensor, receivers: torch.Tensor, send_perm: torch.Tensor):
        """kernels.Graph of the receiver-sorted active edges, built on the device. The dummy atom's segments are
        left empty: its padding edges add exactly 0, and one GPU program walking all of them (tens of thousands,
        serially) was most of the conv time (6 of 7 ms at 4000 Cu atoms); per-edge ops still see them."""
        n = self.num_atoms
        recv_ptr = torch.searchsorted(receivers, self.nodes)  # [N+2]
        send_ptr = torch.searchsorted(senders.index_select(0, send_perm), self.nodes)
        recv_ptr = torch.cat([recv_ptr[: n + 1], recv_ptr[n : n + 1]])  # dummy segment emptied
        send_ptr = torch.cat([send_ptr[: n + 1], send_ptr[n : n + 1]])
        return kernels.Graph(senders, receivers, n + 1, recv_ptr, send_perm, send_ptr, by_degree(send_ptr))

    def _node_energy(self, vec: torch.Tensor, graph) -> torch.Tensor:
        """Per-atom energies [N+1] float64: the model's own energy model (Potential.node_energies), with this
        step's padded graph and capture-safe ops, so the two can never drift apart."""
        return self.model.node_energies(self.species, vec, graph, self.ops)


def _captured(fn, device):
    """(CUDAGraph, outputs) of fn() captured on `device`, after two warm-up calls on a side stream (allocator,
    lazy initialisation, autotuning happen outside the graph). RuntimeError if fn cannot be captured."""
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
