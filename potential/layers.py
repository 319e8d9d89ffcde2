"""Model layers: embedding, interaction (equivariant convolution), product basis, readouts.

All hidden features are dense ``[N, (lmax+1)**2, C]`` (see ``irreps.py``). Layers get the kernel ``ops``
object (``kernels.get_ops(...)``) as a forward argument from the model and never branch on the backend.

Normalisation: every learnable matrix is stored with N(0, 1) entries and applied as ``x @ W / sqrt(fan_in)``,
so activations stay O(1) at initialisation whatever the width. No layer after the embedding has a bias, so
an atom without neighbours (all messages 0) has hidden features and readouts exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import kernels
from kernels.graph import edge_chunks

from .irreps import l_slice
from .radial import NormalizedSiLU, RadialMLP


def _lmax_of(num_rows: int) -> int:
    """Inverse of (lmax+1)**2 for a feature tensor's component axis."""
    lmax = math.isqrt(num_rows) - 1
    if (lmax + 1) ** 2 != num_rows:
        raise ValueError(f"feature tensor has {num_rows} components, not a square (lmax+1)**2")
    return lmax


def _rows_times(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [N, M, C] (any strides, e.g. one l block of [N, K, C]) times w [C, D] -> [N, M, D], as one GEMM over
    the N*M rows. `x @ w` on a strided block that needs grad becomes N batched [M, C] x [C, D] matmuls instead:
    ~25 us each at 864 atoms on an H200, a fifth of an MD step in all."""
    n, m, c = x.shape
    return (x.reshape(n * m, c) @ w).view(n, m, w.shape[1])


class LinearPerL(nn.Module):
    """Equivariant channel mixing: out[n, (l,m), d] = sum_c x[n, (l,m), c] W_l[c, d] / sqrt(C) (+ bias_d for l = 0).

    One [C, C] matrix per l, shared by the 2l+1 components, so it commutes with rotations. Accepts inputs with
    any lmax <= the constructor's lmax (the missing blocks are simply absent from the output too).
    """

    def __init__(self, lmax: int, channels: int, bias: bool = False):
        super().__init__()
        self.lmax = int(lmax)
        self.channels = int(channels)
        self.weight = nn.Parameter(torch.randn(self.lmax + 1, channels, channels))  # [L+1, C, C]
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None  # [C], l = 0 only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lmax = _lmax_of(x.shape[1])  # x: [N, K, C]
        if lmax > self.lmax:
            raise ValueError(f"LinearPerL(lmax={self.lmax}) got features with lmax={lmax}")
        norm = 1.0 / math.sqrt(self.channels)
        blocks = [_rows_times(x[:, l_slice(l), :], self.weight[l] * norm) for l in range(lmax + 1)]  # [N, 2l+1, C]
        if self.bias is not None:
            blocks[0] = blocks[0] + self.bias
        return torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]  # [N, K, C]

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, channels={self.channels}, bias={self.bias is not None}"


class SpeciesLinear(nn.Module):
    """Per-species equivariant channel mixing (MACE's residual "skip_tp" with one-hot node attributes).

    out[n, (l,m), d] = sum_c x[n, (l,m), c] W_l[species[n], c, d] / sqrt(C), for l <= lmax; an input with more
    components is truncated to lmax (the skip of the last layer keeps only l = 0).
    """

    def __init__(self, lmax: int, num_species: int, channels: int):
        super().__init__()
        self.lmax = int(lmax)
        self.num_species = int(num_species)
        self.channels = int(channels)
        self.weight = nn.Parameter(torch.randn(self.lmax + 1, channels, num_species, channels))  # [L+1, C, S, C]

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        n, c, s = x.shape[0], self.channels, self.num_species
        norm = 1.0 / math.sqrt(c)
        blocks = []
        for l in range(self.lmax + 1):
            y = _rows_times(x[:, l_slice(l), :], self.weight[l].reshape(c, s * c) * norm)  # [N, 2l+1, S*C]
            if s == 1:  # one element: nothing to select
                blocks.append(y)
                continue
            y = y.reshape(n, 2 * l + 1, s, c)  # [N, 2l+1, S, C]
            index = species.view(n, 1, 1, 1).expand(n, 2 * l + 1, 1, c)  # [N, 2l+1, 1, C]
            blocks.append(torch.gather(y, 2, index).squeeze(2))  # [N, 2l+1, C]
        return torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]  # [N, (lmax+1)**2, C]


class SpeciesEmbedding(nn.Module):
    """species [N] -> l = 0 features [N, 1, C]: one-hot times a learnable [S, C] matrix (a row lookup)."""

    def __init__(self, num_species: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_species, channels))  # [S, C]

    def forward(self, species: torch.Tensor) -> torch.Tensor:
        return self.weight[species].unsqueeze(1)  # [N, 1, C]


class Interaction(nn.Module):
    """Message passing: linear up, edge_conv with radial weights, divide by avg_num_neighbors, linear.

    m_i = Linear( sum_{e: receiver i} R(r_e) * CG( Linear_up(h)[sender e], Y(r_hat_e) ) / avg_num_neighbors )
    Input [N, (lmax_in+1)**2, C] -> output [N, (lmax_out+1)**2, C] (lmax_out = the conv's, usually lmax_sh).

    ``edge_chunk`` (edges, None = off; set by Potential.set_edge_chunk, not a hyperparameter): in eval mode, on
    graphs with more edges, the radial weights R [E, P, C] (P*C floats per edge, the largest tensor of the model)
    and the conv run over edge chunks, each checkpointed: a chunk's R is freed after use and recomputed in the
    backward, so neither R nor its gradient ever exists for more than one chunk at a time. Never in train mode: a
    force loss differentiates the forces again (create_graph), which keeps every recomputed chunk alive anyway, so
    chunking would only add compute (the numbers would still be right).
    """

    edge_chunk: int | None = None

    def __init__(self, lmax_in: int, lmax_sh: int, lmax_out: int, channels: int, num_basis: int,
                 radial_hidden: Sequence[int], avg_num_neighbors: float, tensor_product: str = "cg"):
        super().__init__()
        self.spec = kernels.ConvSpec(lmax_in, lmax_sh, lmax_out, tensor_product)
        self.lmax_in, self.lmax_sh, self.lmax_out = int(lmax_in), int(lmax_sh), int(lmax_out)
        self.inv_avg_num_neighbors = 1.0 / float(avg_num_neighbors)
        self.linear_up = LinearPerL(lmax_in, channels)
        self.radial = RadialMLP(num_basis, radial_hidden, self.spec.num_paths, channels)
        self.linear = LinearPerL(lmax_out, channels)

    def forward(self, h: torch.Tensor, edge_sh: torch.Tensor, edge_feats: torch.Tensor, graph, ops) -> torch.Tensor:
        h_up = self.linear_up(h)  # [N, K_in, C]
        size = self.edge_chunk
        if size is not None and not self.training and graph.num_edges > size:
            m = self._chunked_conv(h_up, edge_sh, edge_feats, graph, ops, size)  # [N, K_out, C]
        else:
            m = self._conv(h_up, edge_sh, edge_feats, graph, ops)  # [N, K_out, C]
        return self.linear(m * self.inv_avg_num_neighbors)  # [N, K_out, C]

    def _conv(self, h_up: torch.Tensor, edge_sh: torch.Tensor, edge_feats: torch.Tensor, graph, ops) -> torch.Tensor:
        """The conv of the edges of `graph`: [N, K_in, C], [e, K_sh], [e, num_basis] -> [N, K_out, C]."""
        return ops.edge_conv(h_up, edge_sh, self.radial(edge_feats), graph, self.spec)

    def _chunked_conv(self, h_up, edge_sh, edge_feats, graph, ops, size: int) -> torch.Tensor:
        """Sum over chunks of at most `size` edges of _conv, each chunk checkpointed when gradients are on (forces).

        Live across the backward per chunk: only the sub-graph's send_perm [size] and two [N+1] pointers (the
        inputs are views of tensors the model keeps anyway); split, not slicing, so the edge gradients are
        concatenated once instead of scattered into [E, ...] zeros per chunk. No RNG state is saved (the model
        has none, and reading it is illegal inside a CUDA-graph capture); nothing syncs the host."""
        grad = torch.is_grad_enabled()
        m = None
        for (_, _, sub), sh, feats in zip(edge_chunks(graph, size), edge_sh.split(size), edge_feats.split(size)):
            if grad:
                part = checkpoint(self._conv, h_up, sh, feats, sub, ops, use_reentrant=False, preserve_rng_state=False)
            else:
                part = self._conv(h_up, sh, feats, sub, ops)
            m = part if m is None else m + part  # [N, K_out, C]
        return m

    def extra_repr(self) -> str:
        return (f"lmax_in={self.lmax_in}, lmax_sh={self.lmax_sh}, lmax_out={self.lmax_out}, paths={self.spec.num_paths}, "
                f"tensor_product={self.spec.tensor_product}")


class ProductBasis(nn.Module):
    """MACE product basis: symmetric contraction (per-species weights), linear per l, plus residual skip.

    h_new = Linear( B(m, species) ) + SpeciesLinear(h_prev)  (the skip only when ``skip`` is True; MACE omits
    it in the first layer, whose input is the bare embedding).
    m [N, (lmax_in+1)**2, C], h_prev [N, K_prev, C] -> h_new [N, (lmax_out+1)**2, C].
    """

    def __init__(self, lmax_in: int, lmax_out: int, correlation: int, num_species: int, channels: int,
                 skip_lmax: int | None, tensor_product: str = "cg"):
        super().__init__()
        self.spec = kernels.ContractionSpec(lmax_in, lmax_out, correlation, tensor_product)
        self.lmax_out = int(lmax_out)
        num_weights = self.spec.num_weights
        # [S, W, C], W(0, 1/W): each output is a sum of W products of O(1) features
        self.weights = nn.Parameter(torch.randn(num_species, num_weights, channels) / math.sqrt(num_weights))
        self.linear = LinearPerL(lmax_out, channels)
        self.skip = SpeciesLinear(min(skip_lmax, lmax_out), num_species, channels) if skip_lmax is not None else None

    def forward(self, m: torch.Tensor, h_prev: torch.Tensor, species: torch.Tensor, ops) -> torch.Tensor:
        b = ops.symmetric_contraction(m, species, self.weights, self.spec)  # [N, K_out, C]
        h = self.linear(b)  # [N, K_out, C]
        if self.skip is None:
            return h
        sc = self.skip(h_prev, species)  # [N, K_skip, C], K_skip <= K_out
        if sc.shape[1] == h.shape[1]:
            return h + sc
        return torch.cat([h[:, : sc.shape[1]] + sc, h[:, sc.shape[1]:]], dim=1)


class LinearReadout(nn.Module):
    """Scalar channels [N, K, C] -> [N] site energies (before scale): x[:, 0, :] @ w / sqrt(C), no bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels))  # [C]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, 0, :] @ self.weight / math.sqrt(self.weight.shape[0])  # [N]


class NonLinearReadout(nn.Module):
    """Scalar channels [N, K, C] -> [N]: bias-free MLP C -> hidden (normalised SiLU) -> 1 on the l = 0 block."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(channels, hidden))  # [C, H]
        self.w2 = nn.Parameter(torch.randn(hidden))  # [H]
        self.act = NormalizedSiLU()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.act(h[:, 0, :] @ self.w1 / math.sqrt(self.w1.shape[0]))  # [N, H]
        return x @ self.w2 / math.sqrt(self.w2.shape[0])  # [N]

