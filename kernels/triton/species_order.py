"""The atoms grouped by species in one kernel launch: the order the contraction kernels walk.

species_order(species [N], S) -> perm [N], ptr [S+1] (int64), with perm[ptr[s]:ptr[s+1]] the atoms of species s
in increasing index (what a stable sort gives), and ptr[S] the number of atoms whose species lies in [0, S).

Program s of S+1 reads the species vector twice: once to count the atoms of species below s (its start ptr[s]),
once to write its atoms' indices at their exclusive prefix-sum ranks. Program S only counts, so ptr[S] < N flags
an out-of-range species without a second pass. One launch and no host read, so it can be captured in a CUDA graph;
torch.sort + searchsorted took several launches (the radix sort's passes over 64-bit keys) and a range check that
read the device. Reads: (S+1) x 2 x N x 8 bytes, from L2 at the sizes of a training batch (10 species at 5k atoms:
0.9 MB); at a million atoms of one species it is two serial passes of about a thousand blocks each, paid once by
the MD engine's fixed plan.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .codegen import next_pow2


@triton.jit
def _species_order_kernel(SPECIES, PERM, PTR, N, S, BLOCK: tl.constexpr):
    s = tl.program_id(0)
    lanes = tl.arange(0, BLOCK)
    start = tl.zeros((), dtype=tl.int64)
    for base in range(0, N, BLOCK):
        sp = tl.load(SPECIES + base + lanes, mask=base + lanes < N, other=-1)
        start += tl.sum(((sp >= 0) & (sp < s)).to(tl.int64), axis=0)
    tl.store(PTR + s, start)
    if s < S:
        pos = start
        for base in range(0, N, BLOCK):
            sp = tl.load(SPECIES + base + lanes, mask=base + lanes < N, other=-1)
            hit = (sp == s).to(tl.int64)
            rank = tl.cumsum(hit, axis=0) - hit  # exclusive: earlier atoms of species s in this block
            tl.store(PERM + pos + rank, (base + lanes).to(tl.int64), mask=hit == 1)
            pos += tl.sum(hit, axis=0)


def species_order(species: torch.Tensor, num_species: int) -> tuple[torch.Tensor, torch.Tensor]:
    """perm [N], ptr [S+1] (int64, on species' device); see the module docstring."""
    n = species.shape[0]
    perm = torch.empty(n, dtype=torch.int64, device=species.device)
    ptr = torch.empty(num_species + 1, dtype=torch.int64, device=species.device)
    block = min(4096, max(128, next_pow2(n)))
    _species_order_kernel[(num_species + 1,)](species.contiguous(), perm, ptr, n, num_species, BLOCK=block,
                                              num_warps=4 if block <= 1024 else 8)
    return perm, ptr
