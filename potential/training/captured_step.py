"""One force-training optimizer step on a padded, static-shape batch; on CUDA captured once per bucket as a CUDA
graph and replayed.

`TrainStep(model, optimizer, weights, batch_size=B, forces=..., stress=..., clip_grad_norm=..., ema=...)` is
called with a data.Batch (on the model's device) and does, in this order, what potential/training/trainer.py's eager
loop does: the forward, the forces (and stress) by autograd with create_graph, the loss
(potential.training.metrics.compute_loss), the backward to the weights, gradient clipping (torch's clip_grad_norm_), the
optimizer step and the EMA update. It returns device tensors (loss [], gradient norm [], metric sums [13] in
potential.training.metrics' order) that stay valid until the next call. Nothing in it reads the device from the host.

Padding changes no number:
- Atoms: a batch of N atoms in b <= B structures fills an atom bucket A >= N + 1. The padding atoms (species 0,
  at the origin) belong to a dummy structure (slot B) without labels and with weight 0; slots b..B-1 of a short
  last batch have no atoms and no labels. Every loss term and metric is a masked mean or sum, so these add
  exact zeros; a slot without atoms counts 1 atom (`ptr`) only so that its masked per-atom energy stays finite.
- Edges: the E edges fill an edge bucket; padding edges join a padding atom to itself (spread over the padding
  atoms, so receivers stay sorted) and their vector is replaced by a constant of length 2 r_max + 1: envelope,
  edge features and radial weights are exactly 0 there, and no gradient reaches any position through them.
- Buckets: `bucket(n)` = the smallest m * 2**k >= n with 8 <= m < 16 (at most 1/8 padding, few distinct shapes).
- Stress: virial / volume where the structure is 3D periodic with a nonzero volume, else 0 (as Potential).

CUDA graphs (cuda_graph=None -> on CUDA): per (atom, edge) bucket, the step is run `warmup` times on a side stream
(lazy initialisation, Triton compilation and autotuning, DDP's bucket setup: torch's CUDA-graph notes ask for
11 eager iterations under DDP), every piece of state the warm-up changed is put back (weights, optimizer state,
EMA; optimizer state first made by the warm-up is zeroed: Adam's fresh state is all zeros), then one step is
captured (capturing runs nothing) and replayed from then on. Requirements: an optimizer with capturable=True
and a tensor learning rate (`tensor_lr`; torch's LR schedulers fill it in place, so schedules reach the graph),
and an EMA that is updated on the device (`ema_update`). The loss weights are baked in: `set_weights` after a
stage switch re-captures. A capture that fails warns and falls back to the padded step run eagerly. The Triton
contraction plans species on the device; the reference one counts them on the host, so captures with the
reference backend use `masked_contraction` instead.

Data parallel: ddp=True wraps the padded forward (`PaddedForward`) in torch's DistributedDataParallel, whose
gradient hooks average the gradients over the processes during the backward (captured too on CUDA).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

import kernels
from kernels.fixed_species import grouped_contraction
from .metrics import compute_loss
from ..model import calling_thread_backward, edge_vectors, row_times

__all__ = ["bucket", "PaddedBatch", "PaddedForward", "TrainStep", "ema_update", "metric_sums", "tensor_lr"]

DDP_WARMUP = 11  # eager DDP iterations before a capture (torch.cuda graphs notes, "Usage with DistributedDataParallel")


def bucket(n: int) -> int:
    """Smallest m * 2**k >= n with 8 <= m < 16 (and >= 8): at most 1/8 of a bucket is padding."""
    if n <= 8:
        return 8
    shift = n.bit_length() - 4  # n >> shift is in [8, 16)
    return -(-n // (1 << shift)) << shift


@dataclass
class PaddedBatch:
    """Static-shape buffers of a batch (A atoms, E edges, B structure slots + 1 dummy), filled in place by `load`.
    Field names follow data.Batch where the meaning is the same, so compute_loss reads it directly."""
    positions: torch.Tensor  # [A, 3] model dtype, Å
    species: torch.Tensor  # [A] int64, species index (padding: 0)
    batch: torch.Tensor  # [A] int64, structure slot of each atom (padding atoms: B)
    ptr: torch.Tensor  # [B+2] int64: ptr[s+1] - ptr[s] = atoms of slot s, at least 1 (only counts are used)
    real: torch.Tensor  # [B+1] bool, slot holds a structure of the batch
    cell: torch.Tensor  # [B+1, 3, 3] model dtype, Å
    volume_ok: torch.Tensor  # [B+1] bool, 3D periodic with a nonzero volume
    volume: torch.Tensor  # [B+1] model dtype, Å^3 (1 where not volume_ok)
    senders: torch.Tensor  # [E] int64
    receivers: torch.Tensor  # [E] int64, non-decreasing
    cell_shifts: torch.Tensor  # [E, 3] model dtype
    edge_mask: torch.Tensor  # [E] bool, a real edge
    energy: torch.Tensor  # [B+1] float64 eV (NaN where absent, 0 for padding)
    has_energy: torch.Tensor  # [B+1] bool
    forces: torch.Tensor  # [A, 3] model dtype, eV/Å
    has_forces: torch.Tensor  # [B+1] bool
    stress: torch.Tensor  # [B+1, 3, 3] model dtype, eV/Å^3
    has_stress: torch.Tensor  # [B+1] bool
    weight: torch.Tensor  # [B+1] float64

    @classmethod
    def empty(cls, atoms: int, edges: int, slots: int, dtype, device) -> "PaddedBatch":
        def z(*shape, dt=dtype):
            return torch.zeros(*shape, dtype=dt, device=device)
        b = slots + 1
        return cls(positions=z(atoms, 3), species=z(atoms, dt=torch.int64), batch=z(atoms, dt=torch.int64),
                   ptr=z(b + 1, dt=torch.int64), real=z(b, dt=torch.bool), cell=z(b, 3, 3),
                   volume_ok=z(b, dt=torch.bool), volume=z(b), senders=z(edges, dt=torch.int64),
                   receivers=z(edges, dt=torch.int64), cell_shifts=z(edges, 3), edge_mask=z(edges, dt=torch.bool),
                   energy=z(b, dt=torch.float64), has_energy=z(b, dt=torch.bool), forces=z(atoms, 3),
                   has_forces=z(b, dt=torch.bool), stress=z(b, 3, 3), has_stress=z(b, dt=torch.bool),
                   weight=z(b, dt=torch.float64))

    @property
    def slots(self) -> int:
        return int(self.real.shape[0]) - 1

    def load(self, batch, species: torch.Tensor) -> None:
        """Copy `batch` (data.Batch, same device) with its species indices [N] into these buffers, in place."""
        n, e, b = batch.num_atoms, batch.num_edges, batch.num_structures
        a, ep, slots = self.positions.shape[0], self.senders.shape[0], self.slots
        if n >= a or e > ep or b > slots:
            raise ValueError(f"PaddedBatch: a batch of {n} atoms, {e} edges, {b} structures does not fit "
                             f"{a} atoms (one kept for padding), {ep} edges, {slots} structures")
        dtype, dev = self.positions.dtype, self.positions.device

        def put(buf, value, count, pad=0):
            if isinstance(value, torch.Tensor):
                buf[:count].copy_(value)
            else:
                buf[:count] = value
            buf[count:] = pad

        put(self.positions, batch.positions, n)
        put(self.species, species, n)
        put(self.batch, batch.batch, n, slots)
        put(self.forces, batch.forces, n)
        # padding edges: padding atom n + j * (a - n) // (ep - e) to itself, in non-decreasing order
        pad = n + torch.arange(ep - e, device=dev) * (a - n) // max(ep - e, 1)  # [ep - e]
        self.senders[:e].copy_(batch.senders)
        self.senders[e:].copy_(pad)
        self.receivers[:e].copy_(batch.receivers)
        self.receivers[e:].copy_(pad)
        put(self.cell_shifts, batch.cell_shifts, e)
        put(self.edge_mask, True, e, False)
        counts = (batch.ptr[1:] - batch.ptr[:-1]).clamp(min=1)  # [b]
        self.ptr[0] = 0
        self.ptr[1:b + 1].copy_(torch.cumsum(counts, 0))
        self.ptr[b + 1:].copy_(self.ptr[b] + torch.arange(1, slots - b + 2, device=dev))  # empty slots: 1 each
        put(self.real, True, b, False)
        cell = batch.cell.to(dtype)  # [b, 3, 3]
        volume = torch.linalg.det(cell).abs()  # [b] Å^3, as Potential._forward
        ok = batch.pbc.all(dim=1) & (volume > 0)
        put(self.cell, cell, b)
        put(self.volume_ok, ok, b, False)
        put(self.volume, torch.where(ok, volume, torch.ones_like(volume)), b, 1)
        for name in ("energy", "has_energy", "stress", "has_stress", "has_forces", "weight"):
            put(getattr(self, name), getattr(batch, name), b)


class PaddedForward(nn.Module):
    """Energies [B+1] (float64), forces [A, 3] and stress [B+1, 3, 3] of a PaddedBatch, differentiable to the
    weights (create_graph): Potential._forward on padded buffers, with a graph built on the device (no checks,
    no host reads). A module, so that DistributedDataParallel can wrap it."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self._far = None  # [3] Å, made outside any capture (a host-to-device copy cannot be captured)

    def far(self, dtype, device) -> torch.Tensor:
        """The padding edges' vector: length 2 r_max + 1, beyond the cutoff."""
        if self._far is None or self._far.dtype != dtype or self._far.device != device:
            self._far = torch.tensor([2.0 * self.model.r_max + 1.0, 0.0, 0.0], dtype=dtype, device=device)
        return self._far

    def forward(self, p: PaddedBatch, forces: bool, stress: bool, ops=None) -> dict:
        model = self.model
        dtype, slots = model.dtype, p.real.shape[0]
        positions = p.positions.detach().requires_grad_(True)  # [A, 3]
        inputs, pos, cell = [positions], positions, p.cell
        if stress:  # x -> x (I + sym(eps)), as Potential._forward
            strain = torch.zeros(slots, 3, 3, dtype=dtype, device=positions.device, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))  # [B+1, 3, 3]
            pos = positions + row_times(positions, sym.index_select(0, p.batch))
            cell = cell + cell @ sym
            inputs.append(strain)
        vec = edge_vectors(pos, p.senders, p.receivers, p.cell_shifts, cell, p.batch)  # [E, 3] Å
        vec = torch.where(p.edge_mask[:, None], vec, self.far(dtype, vec.device))  # padding: constant, beyond r_max
        graph = kernels.make_graph(p.senders, p.receivers, positions.shape[0], check=False)
        node_energy = model.node_energies(p.species, vec, graph, ops)  # [A] float64
        energy = torch.zeros(slots, dtype=torch.float64, device=vec.device).index_add(0, p.batch, node_energy)
        out = {"energy": energy}
        if forces or stress:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
            if forces:
                out["forces"] = -grads[0]  # [A, 3] eV/Å
            if stress:
                virial = grads[1]  # [B+1, 3, 3] eV
                out["stress"] = torch.where(p.volume_ok[:, None, None], virial / p.volume[:, None, None],
                                            torch.zeros_like(virial))
        return out


def metric_sums(p: PaddedBatch, out: dict, loss: torch.Tensor) -> torch.Tensor:
    """[13] float64: what potential.training.metrics.ErrorMetrics.update adds for this batch, in its order (loss * b, b,
    |dE|, dE^2, |dE/N|, (dE/N)^2, count, |dF|, dF^2, count, |dS|, dS^2, count), with masks instead of host reads."""
    f64 = torch.float64
    zero = torch.zeros((), dtype=f64, device=loss.device)
    n_struct = p.real.sum().to(f64)
    mask = p.has_energy
    d = torch.where(mask, out["energy"].detach().to(f64) - torch.where(mask, p.energy, zero), zero)  # [B+1] eV
    da = d / (p.ptr[1:] - p.ptr[:-1]).to(f64)  # eV/atom
    sums = [loss.detach() * n_struct, n_struct, d.abs().sum(), (d * d).sum(), da.abs().sum(), (da * da).sum(),
            mask.sum().to(f64)]
    for key, atom_mask in (("forces", p.has_forces[p.batch]), ("stress", p.has_stress)):
        if key in out:
            m = atom_mask.view(-1, *[1] * (out[key].dim() - 1))
            d = torch.where(m, (out[key].detach() - getattr(p, key)).to(f64), zero)
            sums += [d.abs().sum(), (d * d).sum(), atom_mask.sum().to(f64) * (3 if key == "forces" else 9)]
        else:
            sums += [zero, zero, zero]
    return torch.stack(sums)


def masked_contraction(num_atoms: int, num_species: int, device):
    """A symmetric contraction (public signature) for any species vector [num_atoms] that never reads the device:
    kernels/fixed_species.py's op for "every atom is species s", for each s, each atom keeping its own species'
    result. S times the work of one contraction; only for captures with the reference backend."""
    fixed = [grouped_contraction(torch.full((num_atoms,), s, dtype=torch.int64, device=device), num_species)
             for s in range(num_species)]

    def symmetric_contraction(node_feats, species, weights, spec):
        out = None
        for s, op in enumerate(fixed):
            result = op(node_feats, None, weights, spec)  # [A, K_out, C] with the weights of species s
            out = result if out is None else torch.where((species == s)[:, None, None], result, out)
        return out

    return symmetric_contraction


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    """AveragedModel.update_parameters(model) of an EMA made with get_ema_multi_avg_fn(decay), without host reads:
    the first update copies (lerp weight 1), later ones lerp with weight 1 - decay; buffers are copied (as with
    use_buffers=False); n_averaged (a device tensor, see TrainStep) counts the updates."""
    weight = torch.where(ema.n_averaged == 0, torch.ones((), dtype=torch.float64, device=ema.n_averaged.device),
                         torch.full((), 1.0 - decay, dtype=torch.float64, device=ema.n_averaged.device))
    for averaged, current in zip(ema.module.parameters(), model.parameters()):
        averaged.lerp_(current, weight.to(averaged.dtype))
    for averaged, current in zip(ema.module.buffers(), model.buffers()):
        averaged.copy_(current)
    ema.n_averaged += 1


def tensor_lr(optimizer, device) -> None:
    """Each param group's learning rate as a float64 tensor on `device` (kept in place from then on: torch's LR
    schedulers fill a tensor lr, and a captured optimizer step reads that same tensor)."""
    for group in optimizer.param_groups:
        lr = group["lr"]
        if not (isinstance(lr, torch.Tensor) and lr.device == torch.device(device)):
            group["lr"] = torch.tensor(float(lr), dtype=torch.float64, device=device)


class TrainStep:
    """Padded force-training step (see the module docstring); `step(batch)` -> (loss, grad_norm, metric_sums)."""

    def __init__(self, model, optimizer, weights, *, batch_size: int, forces: bool, stress: bool,
                 clip_grad_norm: float | None = None, ema=None, ema_decay: float | None = None, ddp: bool = False,
                 cuda_graph: bool | None = None):
        self.model, self.optimizer, self.weights = model, optimizer, weights
        self.device = next(model.parameters()).device
        self.slots, self.forces, self.stress = int(batch_size), bool(forces), bool(stress)
        self.max_norm = math.inf if clip_grad_norm is None else float(clip_grad_norm)
        self.ema, self.ema_decay = ema, ema_decay
        if ema is not None and ema.n_averaged.device != self.device:
            ema.n_averaged = ema.n_averaged.to(self.device)  # the update counter lives beside the weights
        self.net = PaddedForward(model)
        if ddp:
            # the model's buffers (species table, reference energies) are constants: nothing to broadcast per step
            self.net = nn.parallel.DistributedDataParallel(self.net, broadcast_buffers=False)
        self.warmup = DDP_WARMUP if ddp else 2
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else bool(cuda_graph)
        if self.cuda_graph:
            if self.device.type != "cuda":
                raise ValueError(f"TrainStep: cuda_graph=True needs a CUDA model, the model is on {self.device}")
            if not all(g.get("capturable", False) for g in optimizer.param_groups):
                raise ValueError("TrainStep: a captured step needs an optimizer made with capturable=True")
            tensor_lr(optimizer, self.device)
        self.params = list(model.parameters())
        # the backend's own ops, unless a capture needs a contraction that reads no species on the host
        self.masked = self.cuda_graph and (model.backend == "reference" or not kernels.triton_available())
        self._ops: dict = {}  # atom bucket -> kernels.Ops with the masked contraction
        self._ops_now = None  # the ops of the current bucket (None: the model's)
        self._buffers: dict = {}  # (atoms, edges) bucket -> PaddedBatch
        self._graphs: dict = {}  # (atoms, edges) bucket -> (CUDAGraph, outputs)
        self.captures = 0

    def set_weights(self, weights, forces: bool, stress: bool) -> None:
        """New loss weights and outputs (stage two): the captured graphs hold the old ones, so they are captured
        again."""
        self.weights, self.forces, self.stress = weights, bool(forces), bool(stress)
        self._graphs.clear()

    def __call__(self, batch):
        key = (bucket(batch.num_atoms + 1), bucket(batch.num_edges))
        if key not in self._buffers:
            self._buffers[key] = PaddedBatch.empty(*key, self.slots, self.model.dtype, self.device)
        p = self._buffers[key]
        p.load(batch, self.model.species_of_z[batch.numbers])  # elements checked when the data were prepared
        if self.masked:
            if key[0] not in self._ops:
                ops = self.model.ops
                self._ops[key[0]] = kernels.Ops("padded", ops.spherical_harmonics, ops.edge_conv,
                                                masked_contraction(key[0], len(self.model.elements), self.device))
            self._ops_now = self._ops[key[0]]
        if not self.cuda_graph:
            return self._step(p)
        if key not in self._graphs:
            self._capture(key, p)
            if not self.cuda_graph:
                return self._step(p)
        graph, out = self._graphs[key]
        graph.replay()
        return out

    def _step(self, p: PaddedBatch):
        self.optimizer.zero_grad(set_to_none=False)  # in place: a captured graph keeps its gradient tensors
        with calling_thread_backward():
            out = self.net(p, self.forces, self.stress, self._ops_now)
            loss, _ = compute_loss(p, out, self.weights)
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.optimizer.step()
        if self.ema is not None:
            ema_update(self.ema, self.model, self.ema_decay)
        return loss.detach(), norm, metric_sums(p, out, loss)

    # ------------------------------------------------------------------ capture
    def _state(self) -> list:
        """Every tensor a step changes (weights, optimizer state, EMA), to put back after the warm-up."""
        tensors = list(self.params)
        for param in self.params:
            tensors += [v for v in self.optimizer.state.get(param, {}).values() if isinstance(v, torch.Tensor)]
        if self.ema is not None:
            tensors += list(self.ema.module.parameters()) + [self.ema.n_averaged]
        return tensors

    def _capture(self, key, p: PaddedBatch) -> None:
        before = self._state()
        saved = [t.detach().clone() for t in before]
        current = torch.cuda.current_stream(self.device)
        try:
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self._step(p)
            current.wait_stream(side)
            self._put_back(before, saved)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._step(p)
        except RuntimeError as exc:  # something in the step syncs the host: run it eagerly
            torch.cuda.synchronize(self.device)
            self._put_back(before, saved)
            warnings.warn(f"TrainStep: CUDA graph capture failed ({exc}); running the padded step eagerly",
                          RuntimeWarning, stacklevel=3)
            self.cuda_graph = False
            return
        self._graphs[key] = (graph, out)
        self.captures += 1

    def _put_back(self, before: list, saved: list) -> None:
        with torch.no_grad():
            for t, s in zip(before, saved):
                t.copy_(s)
            known = {id(t) for t in before}
            for param in self.params:  # optimizer state the warm-up created: fresh Adam state is all zeros
                for v in self.optimizer.state.get(param, {}).values():
                    if isinstance(v, torch.Tensor) and id(v) not in known:
                        v.zero_()
