"""The species plan of the contraction kernels: atoms grouped by species, cut into chunks, in one launch.

`species_plan(species [N], S, ch)` -> Plan with
- perm [N]: perm[ptr[s]:ptr[s+1]] are the atoms of species s in increasing index (what a stable sort gives);
- ptr [S+1]: ptr[S] is the number of atoms whose species lies in [0, S), so ptr[S] < N flags a bad species;
- chunk_ptr [S+1]: species s owns chunks chunk_ptr[s] .. chunk_ptr[s+1]-1, each of at most `ch` of its atoms.
The kernels run one program per chunk over `nchunk` = ceil(N / ch) + S slots, an upper bound known on the host
(sum_s ceil(n_s / ch) <= N / ch + S); the slots past chunk_ptr[S] find no atoms. A weight gradient is written as
one partial per chunk [nchunk, K, C] and summed per species in chunk order by `species_sum` (deterministic).

Program s of S+1 reads the species vector twice: once for the histogram of species (its starts ptr[s] and
chunk_ptr[s]), once to write its atoms' indices at their exclusive prefix-sum ranks; program S only counts.
One launch and no host read, so it can be captured in a CUDA graph. It replaced torch.sort + searchsorted and a
grid of (species x ceil(N / ch)) programs, nine in ten of them empty at 10 species, whose weight partials
[ceil(N / ch), S, K, C] were written and summed whole (23 MB for the l<=3 -> l<=1 dW at 5k atoms).
Reads: (S+1) x 2 x N x 8 bytes, from L2 at the size of a training batch (0.9 MB for 10 species and 5k atoms).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .codegen import next_pow2


@dataclass(frozen=True)
class Plan:
    perm: torch.Tensor  # [N] int64
    ptr: torch.Tensor  # [S+1] int64
    chunk_ptr: torch.Tensor  # [S+1] int64
    num_species: int
    num_nodes: int
    ch: int  # atoms per chunk
    nchunk: int  # chunk slots, an upper bound on chunk_ptr[S]


@triton.jit
def _species_plan_kernel(SPECIES, PERM, PTR, CHUNK_PTR, N, S, CH, BLOCK: tl.constexpr, SP2: tl.constexpr):
    s = tl.program_id(0)
    lanes = tl.arange(0, BLOCK)
    hist = tl.zeros([SP2], dtype=tl.int32)  # bin S: out of range, and the padding lanes
    for base in range(0, N, BLOCK):
        sp = tl.load(SPECIES + base + lanes, mask=base + lanes < N, other=-1)
        hist += tl.histogram(tl.where((sp >= 0) & (sp < S), sp, S).to(tl.int32), SP2)
    below = tl.arange(0, SP2) < s
    start = tl.sum(tl.where(below, hist, 0).to(tl.int64), axis=0)
    tl.store(PTR + s, start)
    tl.store(CHUNK_PTR + s, tl.sum(tl.where(below, (hist + CH - 1) // CH, 0).to(tl.int64), axis=0))
    if s < S:
        pos = start
        for base in range(0, N, BLOCK):
            sp = tl.load(SPECIES + base + lanes, mask=base + lanes < N, other=-1)
            hit = (sp == s).to(tl.int64)
            rank = tl.cumsum(hit, axis=0) - hit  # exclusive: earlier atoms of species s in this block
            tl.store(PERM + pos + rank, (base + lanes).to(tl.int64), mask=hit == 1)
            pos += tl.sum(hit, axis=0)


def species_plan(species: torch.Tensor, num_species: int, ch: int) -> Plan:
    """The plan of `species` [N] (any integer dtype) for S = num_species and chunks of `ch` atoms."""
    n = species.shape[0]
    dev = species.device
    perm = torch.empty(n, dtype=torch.int64, device=dev)
    ptr = torch.empty(num_species + 1, dtype=torch.int64, device=dev)
    chunk_ptr = torch.empty(num_species + 1, dtype=torch.int64, device=dev)
    block = min(4096, max(128, next_pow2(n)))
    _species_plan_kernel[(num_species + 1,)](species.contiguous(), perm, ptr, chunk_ptr, n, num_species, ch,
                                             BLOCK=block, SP2=next_pow2(num_species + 1),
                                             num_warps=4 if block <= 1024 else 8)
    return Plan(perm, ptr, chunk_ptr, num_species, n, ch, max(1, -(-n // ch) + num_species))


@triton.jit
def _species_sum_kernel(PART, CHUNK_PTR, OUT, KC, BLOCK: tl.constexpr):
    s = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < KC
    acc = tl.zeros([BLOCK], dtype=PART.dtype.element_ty)
    for j in range(tl.load(CHUNK_PTR + s), tl.load(CHUNK_PTR + s + 1)):
        acc += tl.load(PART + j * KC + cols, mask=m, other=0.0)
    tl.store(OUT + s * KC + cols, acc, mask=m)


def species_sum(partials: torch.Tensor, plan: Plan) -> torch.Tensor:
    """[nchunk, K, C] per-chunk partials -> [S, K, C]: each species' chunks summed in order (deterministic)."""
    _, K, C = partials.shape
    out = torch.empty(plan.num_species, K, C, dtype=partials.dtype, device=partials.device)
    block = min(1024, next_pow2(K * C))
    _species_sum_kernel[(plan.num_species, -(-(K * C) // block))](partials, plan.chunk_ptr, out, K * C, BLOCK=block,
                                                                   num_warps=4)
    return out
