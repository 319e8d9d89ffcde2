"""Pure-PyTorch reference ops: the CPU path (any float dtype, any device) and the test oracle.

Every op is built from differentiable torch primitives (index_select, matmul, bmm, cat, index_add), so
ordinary autograd gives first and second derivatives in every floating input. Conventions (component
order, normalisation of the couplings) are in cg.py and coupling.py.
"""
from __future__ import annotations

import functools
import math
import weakref

import numpy as np
import torch

from .cg import ConvSpec, conv_coupling, wigner_3j
from .checks import check_edge_conv, check_spherical_harmonics, check_symmetric_contraction
from .coupling import ContractionSpec, folded_coupling
from .graph import Graph

# ----------------------------------------------------------------------------------------------------
# spherical harmonics


def _sh_polynomials(x, y, z, lmax: int) -> list:
    """Component-normalised real harmonics for l <= min(lmax, 3) of a unit vector (e3nn's polynomials:
    y is the polar axis). Works on torch tensors and numpy arrays alike; returns a list of components."""
    out = [x * 0 + 1]
    if lmax >= 1:
        s3 = math.sqrt(3.0)
        out += [s3 * x, s3 * y, s3 * z]
    if lmax >= 2:
        s15, s5 = math.sqrt(15.0), math.sqrt(5.0)
        y2, x2z2 = y * y, x * x + z * z
        out += [s15 * x * z, s15 * x * y, s5 * (y2 - 0.5 * x2z2), s15 * y * z, 0.5 * s15 * (z * z - x * x)]
    if lmax >= 3:
        s2_0, s2_4 = out[4], out[8]
        a, b, p = math.sqrt(42.0) / 6, math.sqrt(168.0) / 8, 4.0 * y2 - x2z2
        out += [
            a * (s2_0 * z + s2_4 * x),
            math.sqrt(7.0) * s2_0 * y,
            b * p * x,
            0.5 * math.sqrt(7.0) * y * (2.0 * y2 - 3.0 * x2z2),
            b * p * z,
            math.sqrt(7.0) * s2_4 * y,
            a * (s2_4 * z - s2_0 * x),
        ]
    return out


@functools.lru_cache(maxsize=None)
def _sh_recursion(l: int) -> np.ndarray:
    """G [(2l+1)*3, 2l+3]: Y^{l+1}(u) = (Y^l(u) kron u) @ G, from wigner_3j(l+1, l, 1) as in e3nn,
    scaled so that |Y^{l+1}|^2 = 2l+3 on the unit sphere (the norm is rotation invariant)."""
    g = np.ascontiguousarray(np.transpose(wigner_3j(l + 1, l, 1), (1, 2, 0))).reshape(3 * (2 * l + 1), 2 * l + 3)
    u = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    y = np.array(_sh_polynomials(*u, 3)[9:16])
    for k in range(3, l):
        y = np.kron(y, u) @ _sh_recursion(k)
    raw = np.kron(y, u) @ g
    return g * (math.sqrt(2 * l + 3) / np.linalg.norm(raw))


def spherical_harmonics(vectors: torch.Tensor, lmax: int) -> torch.Tensor:
    """Real spherical harmonics of the unit vector along `vectors` [E, 3] -> [E, (lmax+1)**2].

    e3nn order and signs (matches e3nn.o3.spherical_harmonics(normalize=True, normalization="component")),
    |Y^l|^2 = 2l+1. At vectors = 0 the result is Y^0 = 1 and Y^{l>0} = 0 with zero gradient (no NaN)."""
    check_spherical_harmonics(vectors, lmax)
    r2 = (vectors * vectors).sum(-1, keepdim=True)  # [E, 1]
    nonzero = r2 > 0
    r = torch.sqrt(torch.where(nonzero, r2, torch.ones_like(r2)))
    u = torch.where(nonzero, vectors / r, torch.zeros_like(vectors))  # [E, 3] unit (or 0)
    comps = _sh_polynomials(u[:, 0], u[:, 1], u[:, 2], lmax)
    out = torch.stack(comps, dim=-1)  # [E, min(lmax,3) components]
    if lmax <= 3:
        return out
    blocks, y = [out], out[:, 9:16]
    for l in range(3, lmax):
        g = torch.tensor(_sh_recursion(l), dtype=vectors.dtype, device=vectors.device)
        y = (y[:, :, None] * u[:, None, :]).reshape(u.shape[0], -1) @ g  # [E, 2l+3]
        blocks.append(y)
    return torch.cat(blocks, dim=-1)


# ----------------------------------------------------------------------------------------------------
# helpers: on CPU, index_select on a 2-D view is many times faster than on a 3-D tensor


def _take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t[index] for t [N, ...] and index [E] int64 -> [E, ...] (through a 2-D view)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).index_select(0, index).view(index.shape[0], *t.shape[1:])


def _sum_rows(src: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """out[i] = sum_{e: index[e] = i} src[e] for src [E, ...] -> [num, ...] (index_add, 2-D view)."""
    flat = src.reshape(src.shape[0], math.prod(src.shape[1:]))
    return flat.new_zeros(num, flat.shape[1]).index_add(0, index, flat).view(num, *src.shape[1:])


# ----------------------------------------------------------------------------------------------------
# edge conv


@functools.lru_cache(maxsize=64)
def _conv_plan(spec: ConvSpec, dtype: torch.dtype, device: torch.device):
    """(split sizes of the path axis, groups): paths are sorted by (l3, l1, l2) (cg.ConvSpec), so the paths
    of one (l3, l1) are a contiguous run of the path axis. groups: one (l3, l1, G) per run, in path order,
    with G [K_sh, n*(2l1+1)*(2l3+1)] for the n paths of the run, rows (path, a):
    G[j, (q, a), d] = CG_q[a, j - l2_q**2, d] (zero outside the l2_q block)."""
    runs: dict[tuple[int, int], list[int]] = {}
    for p, (l1, _, l3) in enumerate(spec.paths):
        runs.setdefault((l3, l1), []).append(p)
    couplings = conv_coupling(spec)
    groups, sizes = [], []
    for (l3, l1), ps in runs.items():
        g = np.zeros((spec.dim_sh, len(ps), 2 * l1 + 1, 2 * l3 + 1))
        for q, p in enumerate(ps):
            l2 = spec.paths[p][1]
            g[l2 * l2:(l2 + 1) ** 2, q] = couplings[p].transpose(1, 0, 2)  # [2l2+1, 2l1+1, 2l3+1]
        groups.append((l3, l1, torch.tensor(g.reshape(spec.dim_sh, -1), dtype=dtype, device=device)))
        sizes.append(len(ps))
    return tuple(sizes), tuple(groups)


def edge_conv(node_feats: torch.Tensor, edge_sh: torch.Tensor, edge_weights: torch.Tensor,
              graph: Graph, spec: ConvSpec) -> torch.Tensor:
    """Channelwise CG tensor product over edges, summed into receivers -> [N, K_out, C]:
        out[i, (l3,m3), c] = sum_{e: receivers[e] = i} sum_{p = (l1,l2,l3)} edge_weights[e, p, c]
                             * sum_{m1,m2} CG_p[m1, m2, m3] node_feats[senders[e], (l1,m1), c] edge_sh[e, (l2,m2)]
    node_feats [N, K_in, C], edge_sh [E, K_sh], edge_weights [E, P, C]; CG_p = cg.conv_coupling(spec)[p].
    Per (l3, l1) run of paths: one batched matmul over edges; then an index_add over receivers
    (deterministic on CPU). Largest intermediates: [E, n_paths(l3,l1)*(2l1+1), C]."""
    n, e, c = check_edge_conv(node_feats, edge_sh, edge_weights, graph, spec)
    sizes, groups = _conv_plan(spec, node_feats.dtype, node_feats.device)
    w_runs = edge_weights.split(sizes, dim=1) if sizes else ()  # each [E, n, C]
    x_send = {l1: _take_rows(node_feats[:, l1 * l1:(l1 + 1) ** 2], graph.senders)  # [E, 2l1+1, C]
              for l1 in {l1 for _, l1, _ in groups}}
    acc: dict[int, torch.Tensor] = {}
    for (l3, l1, g), w in zip(groups, w_runs):
        rows = w.shape[1] * (2 * l1 + 1)
        xw = (x_send[l1][:, None] * w[:, :, None]).view(e, rows, c)  # [E, n*(2l1+1), C]
        y = (edge_sh @ g).view(e, rows, 2 * l3 + 1).transpose(1, 2)  # [E, 2l3+1, n*(2l1+1)]
        acc[l3] = torch.baddbmm(acc[l3], y, xw) if l3 in acc else torch.bmm(y, xw)  # [E, 2l3+1, C]
    # sum each l3 block over receivers (N-sized results, so the concatenation is cheap)
    blocks = [_sum_rows(acc[l3], graph.receivers, n) if l3 in acc else node_feats.new_zeros(n, 2 * l3 + 1, c)
              for l3 in range(spec.lmax_out + 1)]
    return torch.cat(blocks, dim=1)  # [N, K_out, C]


# ----------------------------------------------------------------------------------------------------
# symmetric contraction


@functools.lru_cache(maxsize=64)
def _contraction_plan(spec: ContractionSpec, dtype: torch.dtype, device: torch.device):
    """Per l_out a list over nu of (weight_offset, P, F [M*K*Q_{nu-1}, P] or None, Q_{nu-1}) with
    F = folded_coupling(spec, l_out, nu) (rows (m, k, q)), Q_t = number of sorted t-tuples."""
    k = spec.dim_in
    blocks = []
    for l_out in range(spec.lmax_out + 1):
        row = []
        for lo, nu, offset, count in spec.blocks:
            if lo != l_out:
                continue
            f = None
            if count:
                f = torch.tensor(folded_coupling(spec, l_out, nu).reshape(-1, count), dtype=dtype, device=device)
            row.append((offset, count, f, math.comb(k + nu - 2, nu - 1)))
        blocks.append(row)
    return tuple(blocks)


def _monomials(xt: torch.Tensor, max_order: int) -> list[torch.Tensor]:
    """[Z_1, ..., Z_max_order], Z_t [C, Q_t, n] = prod of x over each sorted t-tuple (sorted_index_tuples
    order), for xt [C, K, n]. The t-tuples starting with i are x_i times the (t-1)-tuples whose first index
    is >= i, a contiguous suffix of Z_{t-1}."""
    k = xt.shape[1]
    out, starts = [], list(range(k))  # starts[i]: first (t-1)-tuple of Z_{t-1} that begins with i
    for order in range(1, max_order + 1):
        if order == 1:
            out.append(xt)
            continue
        prev, chunks, new_starts, pos = out[-1], [], [], 0
        for i in range(k):
            chunks.append(xt[:, i:i + 1] * prev[:, starts[i]:])  # [C, Q_{t-1} - starts[i], n]
            new_starts.append(pos)
            pos += chunks[-1].shape[1]
        out.append(torch.cat(chunks, dim=1))
        starts = new_starts
    return out


def _coupled_weights(w: torch.Tensor, blocks, k: int, correlation: int) -> list:
    """Per nu = 1..correlation: Uw_nu [C, M_tot*K, Q_{nu-1}], the folded couplings contracted with one
    species' weights w [W, C] (rows (l_out, m, k)), or None when no l_out has a path of that nu."""
    c = w.shape[-1]
    out = []
    for nu in range(1, correlation + 1):
        parts, any_path = [], False
        for l_out, row in enumerate(blocks):
            offset, count, f, q = row[nu - 1]
            if f is None:
                parts.append(w.new_zeros(c, (2 * l_out + 1) * k, q))
            else:
                parts.append((w[offset:offset + count].T @ f.T).view(c, (2 * l_out + 1) * k, q))
                any_path = True
        out.append(torch.cat(parts, dim=1) if any_path else None)
    return out


# Coupled weights of frozen weight tensors (requires_grad False: a model evaluated for forces only, as the
# ASE calculator and the static step do), per tensor object (by id, checked through a weak reference; an entry
# dies with its tensor) and in-place version counter. They depend only on the weights, and recomputing them was
# about a third of a CPU MD step of 27-atom 3BPA at 128 channels. Trainable weights are never cached (also not
# under no_grad), so a training loop can never read couplings of stale weights. Memory: C * M_tot * K * Q_2
# floats per species and layer (4.5 MB at 128 channels, l_in <= 3, l_out <= 1, float32).
_UW_CACHE: dict = {}  # id(weights) -> (weakref, (version, spec, dtype, device), {species: Uw list})


def _species_coupled_weights(weights: torch.Tensor, sp: int, blocks, k: int, spec: ContractionSpec) -> list:
    """_coupled_weights of species sp's weights, cached while `weights` is frozen and unchanged."""
    if weights.requires_grad:
        return _coupled_weights(weights[sp], blocks, k, spec.correlation)
    key, wid = (weights._version, spec, weights.dtype, weights.device), id(weights)
    entry = _UW_CACHE.get(wid)
    if entry is None or entry[0]() is not weights or entry[1] != key:
        entry = (weakref.ref(weights, lambda _, wid=wid: _UW_CACHE.pop(wid, None)), key, {})
        _UW_CACHE[wid] = entry
    per_species = entry[2]
    if sp not in per_species:
        per_species[sp] = _coupled_weights(weights[sp], blocks, k, spec.correlation)
    return per_species[sp]


def symmetric_contraction(node_feats: torch.Tensor, species: torch.Tensor, weights: torch.Tensor,
                          spec: ContractionSpec) -> torch.Tensor:
    """MACE product basis -> [N, K_out, C]: for every output l,
        out[n, (l,m), c] = sum_{nu=1..correlation} sum_p weights[species[n], w(l,nu,p), c]
                           * sum_{i1..inu} U_{l,nu}[m, i1, ..., inu, p] prod_t node_feats[n, i_t, c]
    node_feats [N, K_in, C], species [N] int64 in [0, S), weights [S, spec.num_weights, C];
    U = coupling.contraction_coupling (normalised, symmetric). Nodes are grouped by species; per group and
    nu, a matmul batched over channels of the folded couplings [M_tot*K, Q_{nu-1}] with the monomials
    Z_{nu-1} [Q_{nu-1}, n] of the first nu-1 inputs (sorted tuples: Q_2 = K(K+1)/2), summed over nu, then
    the last input is contracted. Largest intermediates: N x Q_{correlation-1} x C and N x M_tot x K x C."""
    n, s, c = check_symmetric_contraction(node_feats, species, weights, spec)
    m_tot, k = spec.dim_out, spec.dim_in
    if n == 0:
        return node_feats.new_zeros(0, m_tot, c)
    counts = torch.bincount(species, minlength=s)
    low = int(species.min())
    if low < 0 or counts.shape[0] > s:
        raise ValueError(f"symmetric_contraction: species must lie in [0, {s}) (weights has {s} species), "
                         f"got min {low}, max {int(species.max())}")
    blocks = _contraction_plan(spec, node_feats.dtype, node_feats.device)
    present = [(sp, cnt) for sp, cnt in enumerate(counts.tolist()) if cnt]
    order = torch.argsort(species, stable=True) if len(present) > 1 else None
    x = node_feats if order is None else _take_rows(node_feats, order)  # [N, K, C] grouped by species
    xt = x.permute(2, 1, 0).contiguous()  # [C, K, N]
    sizes = [cnt for _, cnt in present]
    z_groups = [z.split(sizes, dim=2) for z in _monomials(xt, spec.correlation - 1)]  # Z_t per group
    x_groups = xt.split(sizes, dim=2)
    outs = []
    for g, ((sp, cnt), xs) in enumerate(zip(present, x_groups)):
        uw = _species_coupled_weights(weights, sp, blocks, k, spec)  # Uw_nu [C, M_tot*K, Q_{nu-1}]
        r = uw[0]  # nu = 1 (the empty monomial is 1): [C, M_tot*K, 1]
        for nu in range(2, spec.correlation + 1):
            if uw[nu - 1] is not None:
                zg = z_groups[nu - 2][g]  # [C, Q_{nu-1}, n]
                r = torch.bmm(uw[nu - 1], zg) if r is None else torch.baddbmm(r, uw[nu - 1], zg)
        if r is None:
            outs.append(xs.new_zeros(c, m_tot, cnt))
            continue
        r = r.expand(c, m_tot * k, cnt).reshape(c, m_tot, k, cnt)  # [C, M_tot, K, n]
        outs.append((r * xs[:, None]).sum(2))  # contract the last input: [C, M_tot, n]
    out = (outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)).permute(2, 1, 0)  # [N, M_tot, C]
    if order is None:
        return out.contiguous()
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=order.device)
    return _take_rows(out, inverse)


__all__ = ["spherical_harmonics", "edge_conv", "symmetric_contraction"]
