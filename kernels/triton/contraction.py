"""Symmetric contraction on generated Triton kernels: forms -> kernels -> launchers (no autograd).

x [N, K_in, C] node features, species [N] int64 in [0, S), W [S, num_weights, C], out [N, K_out, C].
`base_form(spec)` is F(x, W, g) of poly.py built from kernels.coupling.contraction_path_table;
the contraction is dF/dg. `run_form(form, outs, tensors, plan)` evaluates dF/ds for the slots in
`outs` with one generated kernel; autograd.py builds the derivative forms (Form.pullback).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

from .codegen import load_source, next_pow2
from .poly import Form, contraction_form, kernel_source
from .species_plan import Plan, species_plan, species_sum
from . import autotune
from .launch import launch
from .tuning import knob


@lru_cache(maxsize=None)
def base_form(lmax_in: int, lmax_out: int, correlation: int, tensor_product: str = "cg") -> Form:
    from ..coupling import ContractionSpec, contraction_path_table
    spec = ContractionSpec(lmax_in, lmax_out, correlation, tensor_product)
    return contraction_form(contraction_path_table(spec), spec.dim_in, spec.dim_out, spec.num_weights)


@lru_cache(maxsize=None)
def pullback(form: Form, s: int) -> Form:
    return form.pullback(s)


@lru_cache(maxsize=None)
def _form_key(form: Form, outs: tuple, comps: tuple | None = None) -> str:
    """A stable name of dF/ds for s in outs (components comps): of a generated kernel, and of an autotune problem."""
    return hashlib.sha1(repr((form, outs) if comps is None else (form, outs, comps)).encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def _kernel(form: Form, outs: tuple, comps: tuple | None = None):
    name = f"poly_{_form_key(form, outs, comps)}"
    return load_source(kernel_source(name, form, outs, comps), name)


# Monomials per generated kernel. Above this, one kernel per output slot, and a node slot's components split
# into balanced groups. A kernel of thousands of monomials holds 255 registers and spills: the l<=3 -> l<=1
# backward (1,368 monomials for dx, 552 for dW) as one kernel took 0.401 ms on the H200 (CUDA-graph replay,
# fwd+bwd at 5k nodes), as three (dx in two component groups, dW) 0.284 ms; its second order went from one
# kernel to seven, 0.487 -> 0.508 ms. The l<=3 -> l<=2 second order (14,566 monomials) compiled for sm_90 in
# 241 s as one kernel, 113 s as four, 119 s as the eleven of this limit (docs/performance.md).
MAX_MONOMIALS = 1200


@lru_cache(maxsize=None)
def launch_plan(form: Form, outs: tuple) -> tuple:
    """((outs, comps), ...): the kernels that evaluate dF/ds for s in outs (see MAX_MONOMIALS)."""
    derivs = {s: form.derivative_terms(s) for s in outs}
    sizes = {s: sum(len(t) for t in d.values()) for s, d in derivs.items()}
    if sum(sizes.values()) <= MAX_MONOMIALS:
        return ((outs, None),)
    plan = []
    for s in outs:
        kind, K = form.slots[s]
        if kind == "weight" or sizes[s] <= MAX_MONOMIALS:
            plan.append(((s,), None))
            continue
        groups = -(-sizes[s] // MAX_MONOMIALS)
        target, cur, n = sizes[s] / groups, [], 0
        for i in range(K):  # contiguous runs of components, cut near the balanced size
            m = len(derivs[s].get(i, ()))
            if cur and n + m / 2 > target:
                plan.append(((s,), tuple(cur)))
                cur, n = [], 0
            cur.append(i)
            n += m
        plan.append(((s,), tuple(cur)))
    return tuple(plan)


CH = 32  # nodes per chunk of the species plan (each program walks one chunk of one species' atoms). H200, CUDA-graph
# ms at 5k nodes and 10 species, fwd+bwd l<=3 -> l<=1 / l<=3 -> l0 (docs/performance.md): 0.225 / 0.092 with 16,
# 0.233 / 0.083 with 32, 0.243 / 0.084 with 64. Fixed: the plan is made before the kernels are chosen.


def tile_config(C: int) -> tuple[int, int, int]:
    """(NB nodes per tile, BC channels per tile, num_warps): the measured default, or TUMBLER_SC_CFG."""
    env = knob("TUMBLER_SC_CFG")
    if env:
        nb, bc, nw = (int(v) for v in env.split(","))
        return nb, min(bc, next_pow2(C)), nw
    bc = min(next_pow2(C), 32)
    nb = 4  # one tile element per thread: the derivative forms hold hundreds of monomials live
    return nb, bc, max(1, nb * bc // 32)


def tile_candidates(C: int) -> list:
    """Autotune candidates: one tile element per thread in each (more spill), 32 to 256 threads."""
    out = [tile_config(C)]
    for nb, bc in ((2, 32), (8, 32), (4, 16)):
        bc = min(bc, next_pow2(C))
        tile = (nb, bc, nb * bc // 32)
        if tile[2] >= 1 and tile not in out:
            out.append(tile)
    return out



def make_plan(species: torch.Tensor, num_species: int, C: int) -> Plan:
    """The species plan of one call (species_plan.py: one launch). Outside CUDA-graph capture it reads one
    number back, ptr[S], the count of atoms whose species lies in [0, S), and names the bad ones; inside a
    capture it cannot read the device, so the species are not checked there (the MD engine captures with a
    plan made beforehand from checked species)."""
    n = species.shape[0]
    plan = species_plan(species, num_species, CH)
    capturing = species.is_cuda and torch.cuda.is_current_stream_capturing()
    if n and not capturing and int(plan.ptr[num_species]) != n:
        raise ValueError(f"kernels/triton/contraction.py: species must lie in [0, {num_species}) "
                         f"(weights has {num_species} species), got min {int(species.min())}, max {int(species.max())}")
    return plan


def run_form(form: Form, outs: tuple, tensors: tuple, plan: Plan) -> tuple:
    """dF/d(slot s) for s in outs; node slots [N, K, C], weight slots [S, K, C]; same shapes out."""
    ref = next(t for t in tensors if t is not None)
    C = ref.shape[-1]
    dt, dev = ref.dtype, ref.device
    N, S = plan.num_nodes, plan.num_species
    results, kargs = [], []
    for s in outs:
        kind, K = form.slots[s]
        if kind == "node":
            results.append(torch.empty(N, K, C, dtype=dt, device=dev))
            kargs.append(results[-1])
        else:
            results.append(torch.empty(plan.nchunk, K, C, dtype=dt, device=dev))  # per-chunk partials
            kargs.append(results[-1])
    if N > 0 and C > 0:
        ins = [t.contiguous() if t is not None else ref for t in tensors]
        outs = tuple(outs)
        parts = launch_plan(form, outs)

        def run(tile):
            nb, bc, nw = tile
            grid = (plan.nchunk, -(-C // bc))
            for part, comps in parts:
                launch(_kernel(form, part, comps), grid, *ins, *(kargs[outs.index(s)] for s in part),
                       plan.perm, plan.ptr, S, C, CH=plan.ch, NB=nb, BC=bc, SP2=next_pow2(S + 1), num_warps=nw)

        # A form split into several kernels (MAX_MONOMIALS) keeps the default tile: tuning compiles every
        # candidate, and the largest forms take minutes each to compile (the second order at l<=3 -> l<=2).
        tuned = len(parts) == 1 and not knob("TUMBLER_SC_CFG")
        run(autotune.choose("contraction", (_form_key(form, outs), C, dt, N.bit_length()),
                            lambda: tile_candidates(C), run, dev) if tuned else tile_config(C))
    final = []
    for s, r in zip(outs, results):
        if form.slots[s][0] == "weight":
            final.append(species_sum(r, plan) if N > 0 and C > 0 else r.new_zeros(S, *r.shape[1:]))
        else:
            final.append(r)
    return tuple(final)
