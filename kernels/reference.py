"""Pure-PyTorch reference ops: the CPU path (any float dtype, any device) and the test oracle.

Every op is built from differentiable torch primitives (index_select, matmul, bmm, cat, index_add), so
ordinary autograd gives first and second derivatives in every floating input. Conventions (component
order, normalisation of the couplings) are in cg.py and coupling.py.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .cg import ConvSpec, conv_coupling, num_components, wigner_3j
from .checks import check_edge_conv, check_spherical_harmonics, check_symmetric_contraction
from .coupling import ContractionSpec, folded_coupling, sorted_index_tuples
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
# edge conv


@functools.lru_cache(maxsize=64)
def _conv_plan(spec: ConvSpec, dtype: torch.dtype, device: torch.device):
    """Per output l3: (2l3+1, in_idx [R], path_idx [R], G [K_sh, R*(2l3+1)]) with rows r = (path p, a),
    a over the 2l1+1 components of the path's input: G[j, r, d] = CG_p[a, j - l2*l2, d]; or
    (2l3+1, None, None, None) when no path ends in l3."""
    plan = []
    for l3 in range(spec.lmax_out + 1):
        d = 2 * l3 + 1
        in_idx, path_idx, cols = [], [], []
        for p, ((l1, l2, lo), cg) in enumerate(zip(spec.paths, conv_coupling(spec))):
            if lo != l3:
                continue
            for a in range(2 * l1 + 1):
                in_idx.append(l1 * l1 + a)
                path_idx.append(p)
                col = np.zeros((spec.dim_sh, d))
                col[l2 * l2:(l2 + 1) ** 2] = cg[a]  # [2l2+1, d]
                cols.append(col)
        if not in_idx:
            plan.append((d, None, None, None))
            continue
        g = np.stack(cols, axis=1).reshape(spec.dim_sh, len(cols) * d)
        as_index = functools.partial(torch.tensor, dtype=torch.int64, device=device)
        plan.append((d, as_index(in_idx), as_index(path_idx), torch.tensor(g, dtype=dtype, device=device)))
    return tuple(plan)


def edge_conv(node_feats: torch.Tensor, edge_sh: torch.Tensor, edge_weights: torch.Tensor,
              graph: Graph, spec: ConvSpec) -> torch.Tensor:
    """Channelwise CG tensor product over edges, summed into receivers -> [N, K_out, C]:
        out[i, (l3,m3), c] = sum_{e: receivers[e] = i} sum_{p = (l1,l2,l3)} edge_weights[e, p, c]
                             * sum_{m1,m2} CG_p[m1, m2, m3] node_feats[senders[e], (l1,m1), c] edge_sh[e, (l2,m2)]
    node_feats [N, K_in, C], edge_sh [E, K_sh], edge_weights [E, P, C]; CG_p = cg.conv_coupling(spec)[p].
    The sum over edges is an index_add over receivers (deterministic on CPU)."""
    n, e, c = check_edge_conv(node_feats, edge_sh, edge_weights, graph, spec)
    blocks = []
    for d, in_idx, path_idx, g in _conv_plan(spec, node_feats.dtype, node_feats.device):
        if in_idx is None:
            blocks.append(node_feats.new_zeros(e, d, c))
            continue
        x = node_feats.index_select(1, in_idx).index_select(0, graph.senders)  # [E, R, C]
        xw = x * edge_weights.index_select(1, path_idx)  # [E, R, C]
        y = (edge_sh @ g).view(e, in_idx.shape[0], d)  # [E, R, d]: sum_j sh[e, j] G[j, r, d]
        blocks.append(torch.bmm(y.transpose(1, 2), xw))  # [E, d, C]
    messages = torch.cat(blocks, dim=1)  # [E, K_out, C]
    return node_feats.new_zeros(n, spec.dim_out, c).index_add(0, graph.receivers, messages)


# ----------------------------------------------------------------------------------------------------
# symmetric contraction


@functools.lru_cache(maxsize=64)
def _contraction_plan(spec: ContractionSpec, dtype: torch.dtype, device: torch.device):
    """(tuples, blocks): tuples[t-1] [Q_t, t] int64 sorted index tuples of order t = 1..correlation-1;
    blocks: per l_out a list over nu of (weight_offset, P, F [M*K*Q_{nu-1}, P] or None, Q_{nu-1}) with
    F = folded_coupling(spec, l_out, nu) (rows (m, k, q))."""
    k = spec.dim_in
    tuples = tuple(torch.tensor(sorted_index_tuples(k, t)[0], device=device) for t in range(1, spec.correlation))
    blocks = []
    for l_out in range(spec.lmax_out + 1):
        row = []
        for lo, nu, offset, count in spec.blocks:
            if lo != l_out:
                continue
            q = math.comb(k + nu - 2, nu - 1)  # number of sorted (nu-1)-tuples
            f = None
            if count:
                f = torch.tensor(folded_coupling(spec, l_out, nu).reshape(-1, count), dtype=dtype, device=device)
            row.append((offset, count, f, q))
        blocks.append(row)
    return tuples, tuple(blocks)


def _monomials(x: torch.Tensor, tuples) -> torch.Tensor:
    """Z [N, Q_tot, C]: 1, x[i], x[i]x[j] (i<=j), ... up to order correlation-1, for x [N, K, C]."""
    parts = [x.new_ones(x.shape[0], 1, x.shape[2]), x]
    for tup in tuples[1:]:
        z = x.index_select(1, tup[:, 0])
        for s in range(1, tup.shape[1]):
            z = z * x.index_select(1, tup[:, s])
        parts.append(z)  # [N, Q_t, C]
    return torch.cat(parts[: len(tuples) + 1], dim=1)


def _coupled_weights(w: torch.Tensor, blocks, k: int) -> torch.Tensor:
    """Uw [M_tot*K, Q_tot, C] = folded couplings contracted with one species' weights w [num_weights, C]."""
    c = w.shape[-1]
    rows = []
    for l_out, row in enumerate(blocks):
        mk = (2 * l_out + 1) * k
        parts = [
            (f @ w[offset:offset + count]).view(mk, q, c) if f is not None else w.new_zeros(mk, q, c)
            for offset, count, f, q in row
        ]  # each [M*K, Q_{nu-1}, C]
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0)


def symmetric_contraction(node_feats: torch.Tensor, species: torch.Tensor, weights: torch.Tensor,
                          spec: ContractionSpec) -> torch.Tensor:
    """MACE product basis -> [N, K_out, C]: for every output l,
        out[n, (l,m), c] = sum_{nu=1..correlation} sum_p weights[species[n], w(l,nu,p), c]
                           * sum_{i1..inu} U_{l,nu}[m, i1, ..., inu, p] prod_t node_feats[n, i_t, c]
    node_feats [N, K_in, C], species [N] int64 in [0, S), weights [S, spec.num_weights, C];
    U = coupling.contraction_coupling (normalised, symmetric). Nodes are grouped by species; per group one
    batched matmul over channels of the folded couplings [M*K, Q] with the monomials Z [Q, n] of order
    < correlation, then the last input is contracted: the largest intermediate is N x M_tot x K x C."""
    n, s, c = check_symmetric_contraction(node_feats, species, weights, spec)
    m_tot, k = spec.dim_out, spec.dim_in
    if n == 0:
        return node_feats.new_zeros(0, m_tot, c)
    counts = torch.bincount(species, minlength=s)
    low = int(species.min())
    if low < 0 or counts.shape[0] > s:
        raise ValueError(f"symmetric_contraction: species must lie in [0, {s}) (weights has {s} species), "
                         f"got min {low}, max {int(species.max())}")
    tuples, blocks = _contraction_plan(spec, node_feats.dtype, node_feats.device)
    order = torch.argsort(species, stable=True)
    x = node_feats.index_select(0, order)  # [N, K, C] grouped by species
    z = _monomials(x, tuples)  # [N, Q_tot, C]
    outs, start = [], 0
    for sp, cnt in enumerate(counts.tolist()):
        if cnt == 0:
            continue
        uw = _coupled_weights(weights[sp], blocks, k)  # [M_tot*K, Q_tot, C]
        zs = z[start:start + cnt].permute(2, 1, 0)  # [C, Q_tot, n]
        r = torch.bmm(uw.permute(2, 0, 1), zs)  # [C, M_tot*K, n]
        xs = x[start:start + cnt].permute(2, 1, 0)  # [C, K, n]
        outs.append((r.view(c, m_tot, k, cnt) * xs[:, None]).sum(2).permute(2, 1, 0))  # [n, M_tot, C]
        start += cnt
    out = torch.cat(outs, dim=0)  # [N, M_tot, C] in species order
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=order.device)
    return out.index_select(0, inverse)


__all__ = ["spherical_harmonics", "edge_conv", "symmetric_contraction", "num_components"]
