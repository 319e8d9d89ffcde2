"""The species plan of the contraction kernels: atoms grouped by species, cut into chunks, in one launch.

`species_plan(species [N], S, ch)` -> Plan with
- perm [N]: perm[ptr[s]:ptr[s+1]] are the atoms of species s in increasing index (what a stable sort gives);
- ptr [S+1]: ptr[S] is the number of atoms whose species lies in [0, S), so ptr[S] < N flags a bad species.
Species s owns ceil(n_s / ch) chunks of at most `ch` of its atoms, numbered after those of the species before it.
The kernels run one program per chunk over `nchunk` = ceil(N / ch) + S slots, an upper bound known on the host
(sum_s ceil(n_s / ch) <= N / ch + S); each program finds its species and atoms from ptr (`chunk_atoms`), and
the slots past the last chunk find none. A weight gradient is written as one partial per chunk [nchunk, K, C]
and summed per species in chunk order by `species_sum` (deterministic).

Program s of S+1 counts the atoms of species below s (ptr[s]), then writes its atoms' indices at their
exclusive prefix-sum ranks; program S only counts. With N <= BLOCK it reads the species once. One launch and no
host read, so it can be captured in a CUDA graph. It replaced torch.sort + searchsorted and a grid of
(species x ceil(N / ch)) programs, nine in ten of them empty at 10 species, whose weight partials
[ceil(N / ch), S, K, C] were written and summed whole (23 MB for the l<=3 -> l<=1 dW at 5k atoms).
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
    num_species: int
    num_nodes: int
    ch: int  # atoms per chunk
    nchunk: int  # chunk slots, an upper bound on the number of chunks


@triton.jit
def _in_range(sp, S):
    return tl.where((sp >= 0) & (sp < S), sp, -1).to(tl.int32)


@triton.jit
def _species_plan_kernel(SPECIES, PERM, PTR, N, S, BLOCK: tl.constexpr, ONE_BLOCK: tl.constexpr):
    # species outside [0, S) become -1 before the int32 cast (which would wrap 2**32 + 1 to 1); counts and ranks in
    # int32 (N < 2**31), stored as int64
    s = tl.program_id(0)
    lanes = tl.arange(0, BLOCK)
    if ONE_BLOCK:  # N <= BLOCK: the species are read once
        sp = _in_range(tl.load(SPECIES + lanes, mask=lanes < N, other=-1), S)
        start = tl.sum(((sp >= 0) & (sp < s)).to(tl.int32), axis=0)
        tl.store(PTR + s, start.to(tl.int64))
        if s < S:
            hit = (sp == s).to(tl.int32)
            rank = tl.cumsum(hit, axis=0) - hit  # exclusive: earlier atoms of species s
            tl.store(PERM + start + rank, lanes.to(tl.int64), mask=hit == 1)
    else:
        start = tl.zeros([], dtype=tl.int32)
        for base in range(0, N, BLOCK):
            sp = _in_range(tl.load(SPECIES + base + lanes, mask=base + lanes < N, other=-1), S)
            start += tl.sum(((sp >= 0) & (sp < s)).to(tl.int32), axis=0)
        tl.store(PTR + s, start.to(tl.int64))
        if s < S:
            pos = start
            for base in range(0, N, BLOCK):
                sp = _in_range(tl.load(SPECIES + base + lanes, mask=base + lanes < N, other=-1), S)
                hit = (sp == s).to(tl.int32)
                rank = tl.cumsum(hit, axis=0) - hit
                tl.store(PERM + pos + rank, (base + lanes).to(tl.int64), mask=hit == 1)
                pos += tl.sum(hit, axis=0)


def species_plan(species: torch.Tensor, num_species: int, ch: int) -> Plan:
    """The plan of `species` [N] (any integer dtype) for S = num_species and chunks of `ch` atoms."""
    n = species.shape[0]
    dev = species.device
    perm = torch.empty(n, dtype=torch.int64, device=dev)
    ptr = torch.empty(num_species + 1, dtype=torch.int64, device=dev)
    block = min(8192, max(128, next_pow2(n)))
    _species_plan_kernel[(num_species + 1,)](species.contiguous(), perm, ptr, n, num_species, BLOCK=block,
                                             ONE_BLOCK=n <= block, num_warps=max(4, block // 512) if n <= block else 8)
    return Plan(perm, ptr, num_species, n, ch, max(1, -(-n // ch) + num_species))


@triton.jit
def _chunk_table(PTR, NSPECIES, CH, SP2: tl.constexpr):
    """Per species s (lanes of SP2 >= NSPECIES): atoms ptr[s], ptr[s+1] and its first chunk and chunk end."""
    ss = tl.arange(0, SP2)
    lo = tl.load(PTR + ss, mask=ss < NSPECIES, other=0)
    hi = tl.load(PTR + 1 + ss, mask=ss < NSPECIES, other=0)
    count = (hi - lo + CH - 1) // CH
    ends = tl.cumsum(count, axis=0)
    return ss, lo, hi, ends - count, ends


@triton.jit
def chunk_atoms(PTR, NSPECIES, j, CH, SP2: tl.constexpr):
    """(species, first, end) of chunk j: its atoms are PERM[first:end]; past the last chunk, first >= end."""
    ss, lo, hi, first_chunk, end_chunk = _chunk_table(PTR, NSPECIES, CH, SP2)
    sp = tl.minimum(tl.sum((end_chunk <= j).to(tl.int64), axis=0), NSPECIES - 1)
    pick = ss == sp
    first = tl.sum(tl.where(pick, lo, 0), axis=0) + (j - tl.sum(tl.where(pick, first_chunk, 0), axis=0)) * CH
    return sp, first, tl.minimum(first + CH, tl.sum(tl.where(pick, hi, 0), axis=0))


@triton.jit
def _species_sum_kernel(PART, PTR, OUT, NSPECIES, KC, CH, SP2: tl.constexpr, ROWS: tl.constexpr,
                        BLOCK: tl.constexpr):
    s = tl.program_id(0)
    ss, lo, hi, first_chunk, end_chunk = _chunk_table(PTR, NSPECIES, CH, SP2)
    c0 = tl.sum(tl.where(ss == s, first_chunk, 0), axis=0)
    c1 = tl.sum(tl.where(ss == s, end_chunk, 0), axis=0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    rows = tl.arange(0, ROWS)
    acc = tl.zeros([BLOCK], dtype=PART.dtype.element_ty)
    for j in range(c0, c1, ROWS):  # ROWS chunks per step, summed in a fixed tree order (deterministic)
        m = ((j + rows) < c1)[:, None] & (cols < KC)[None, :]
        acc += tl.sum(tl.load(PART + (j + rows)[:, None] * KC + cols[None, :], mask=m, other=0.0), axis=0)
    tl.store(OUT + s * KC + cols, acc, mask=cols < KC)


def species_sum(partials: torch.Tensor, plan: Plan) -> torch.Tensor:
    """[nchunk, K, C] per-chunk partials -> [S, K, C]: each species' chunks summed in order (deterministic)."""
    _, K, C = partials.shape
    out = torch.empty(plan.num_species, K, C, dtype=partials.dtype, device=partials.device)
    block = min(256, next_pow2(K * C))
    _species_sum_kernel[(plan.num_species, -(-(K * C) // block))](
        partials, plan.ptr, out, plan.num_species, K * C, plan.ch, SP2=next_pow2(plan.num_species + 1), ROWS=16,
        BLOCK=block, num_warps=4)
    return out
