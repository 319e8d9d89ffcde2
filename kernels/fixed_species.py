"""Symmetric contractions for a fixed species vector that never read the device (CUDA-graph capturable).

`symmetric_contraction` of every backend looks at the species on the host at each call (the reference counts
the atoms of each species; Triton checks their range, except inside a capture, where it cannot), which a captured
graph cannot do or must skip. In MD and relaxation
the species never change, so these build the species plan once and return an op with the public signature
`(node_feats [N, K_in, C], species [N], weights [S, W, C], spec) -> [N, K_out, C]`, where the species argument
must be the vector given here:
- `grouped_contraction(species, S)`: PyTorch, any device; the atoms sorted by species once. It uses only the
  coupling tables (spec.blocks, folded_coupling, sorted_index_tuples), so its numbers are the reference's:

    out[n, (l,m), c] = sum_{(l, nu, offset, P)} sum_{k, q, p} F[m, k, q, p] weights[s_n, offset + p, c]
                       * x[n, k, c] * prod_t x[n, tuple_q[t], c]
  with F = folded_coupling(spec, l, nu) [2l+1, K, Q_{nu-1}, P] over the sorted (nu-1)-tuples of input
  components. Per species and nu: one channel-batched matmul [C, M_tot*K, Q] x [C, Q, n], then the last
  input is contracted.
- `triton_contraction(species, S, C)`: the Triton backend's fused kernels with the plan made once.
"""

from __future__ import annotations

import torch

from .coupling import folded_coupling, sorted_index_tuples

_PLANS: dict = {}


def _plan(spec, dtype, device):
    """Per nu = 1..correlation: (tuples [Q, nu-1] int64 or None, [(l_out, offset, P, F [M*K*Q, P])] blocks)."""
    key = (spec, dtype, device)
    if key not in _PLANS:
        k = spec.dim_in
        plan = []
        for nu in range(1, spec.correlation + 1):
            tuples, _ = sorted_index_tuples(k, nu - 1)
            idx = torch.tensor(tuples, dtype=torch.int64, device=device) if nu > 1 else None
            rows = []
            for l_out, bnu, offset, count in spec.blocks:
                if bnu != nu:
                    continue
                f = None
                if count:
                    f = torch.tensor(folded_coupling(spec, l_out, nu).reshape(-1, count), dtype=dtype,
                                     device=device)  # [M*K*Q, P], rows (m, k, q)
                rows.append((l_out, offset, count, f))
            rows.sort(key=lambda r: r[0])
            plan.append((idx, len(tuples), rows))
        _PLANS[key] = plan
    return _PLANS[key]


def grouped_contraction(species: torch.Tensor, num_species: int):
    """Capture-safe symmetric contraction for the fixed `species` [N] (values in [0, num_species))."""
    counts = torch.bincount(species, minlength=num_species).tolist()
    present = [(sp, cnt) for sp, cnt in enumerate(counts) if cnt]
    sizes = [cnt for _, cnt in present]
    single = len(present) == 1
    order = torch.argsort(species, stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.shape[0], device=order.device)

    def symmetric_contraction(node_feats, species_arg, weights, spec):
        k, c, m_tot = spec.dim_in, node_feats.shape[2], spec.dim_out
        plan = _plan(spec, node_feats.dtype, node_feats.device)
        x = node_feats if single else node_feats.index_select(0, order)  # [N, K, C] grouped by species
        xt = x.permute(2, 1, 0).contiguous()  # [C, K, N]
        outs = []
        for (sp, cnt), xs in zip(present, xt.split(sizes, dim=2)):  # xs [C, K, n]
            w = weights[sp]  # [W, C]
            acc = None  # [C, M_tot*K, n]
            for idx, q, rows in plan:
                if not any(f is not None for _, _, _, f in rows):
                    continue
                parts = [(f @ w[offset:offset + count]).view(2 * l_out + 1, k, q, c) if f is not None
                         else w.new_zeros(2 * l_out + 1, k, q, c) for l_out, offset, count, f in rows]
                g = torch.cat(parts, dim=0).reshape(m_tot * k, q, c).permute(2, 0, 1)  # [C, M_tot*K, Q]
                if idx is None:  # nu = 1: the empty product is 1
                    term = g.expand(c, m_tot * k, xs.shape[2])
                else:
                    z = xs[:, idx[:, 0], :]
                    for t in range(1, idx.shape[1]):
                        z = z * xs[:, idx[:, t], :]  # [C, Q, n]
                    term = torch.bmm(g, z)
                acc = term if acc is None else acc + term
            if acc is None:
                outs.append(xs.new_zeros(c, m_tot, xs.shape[2]))
                continue
            r = acc.reshape(c, m_tot, k, xs.shape[2])  # [C, M_tot, K, n]
            outs.append((r * xs[:, None]).sum(2))  # [C, M_tot, n]
        out = (outs[0] if single else torch.cat(outs, dim=2)).permute(2, 1, 0)  # [N, M_tot, C]
        return out.contiguous() if single else out.index_select(0, inverse)

    return symmetric_contraction


def triton_contraction(species: torch.Tensor, num_species: int, channels: int):
    """The Triton contraction (kernels/triton/autograd.py) with its species plan (triton/species_plan.py) made and checked
    once here, not in every step.
    ImportError when Triton is unavailable."""
    from .triton import autograd
    from .triton import contraction as triton_sc

    plan = triton_sc.make_plan(species, num_species, channels)

    def symmetric_contraction(node_feats, species_arg, weights, spec):
        return autograd.planned_contraction(node_feats, weights, spec, plan)

    return symmetric_contraction
