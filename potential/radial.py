"""Radial part of the edge features: Bessel basis, polynomial envelope, radial MLP.

Conventions (lengths in Å):
- ``BesselBasis``: b_n(r) = sqrt(2 / r_max) * sin(n * pi * r / r_max) / r, n = 1..num_basis (units 1/Å^(3/2),
  orthonormal on [0, r_max] with weight r^2). At r = 0 the removable singularity is replaced by its limit
  sqrt(2 / r_max) * n * pi / r_max, with a finite (zero) gradient, so coincident atoms never give NaN.
- ``PolynomialEnvelope``: the DimeNet/MACE polynomial of order p,
  f(u) = 1 - (p+1)(p+2)/2 u^p + p(p+2) u^(p+1) - p(p+1)/2 u^(p+2), u = r / r_max, for u < 1 and exactly 0
  for u >= 1. f(0) = 1, and f, f', f'' vanish at r_max, so energies and forces are continuous when a
  neighbour crosses the cutoff.
- ``RadialMLP``: bias-free MLP with normalised SiLU, mapping the enveloped basis [E, num_basis] to per-edge,
  per-path, per-channel weights [E, P, C]. With no biases, an edge at r >= r_max (input exactly 0) gets weights
  exactly 0, so the skin edges of a Verlet list contribute exactly nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _silu_second_moment_norm() -> float:
    """1 / sqrt(E[silu(z)^2]) for z ~ N(0, 1) (Gauss-Hermite, 80 nodes): keeps activations O(1) (e3nn's choice)."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    silu = z / (1.0 + np.exp(-z))
    return float(1.0 / math.sqrt(np.sum(w * silu**2) / np.sum(w)))


SILU_NORM = _silu_second_moment_norm()  # ~1.679


class NormalizedSiLU(nn.Module):
    """SiLU scaled to unit second moment on standard-normal inputs. silu(0) = 0 exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) * SILU_NORM


class BesselBasis(nn.Module):
    """[E] distances (Å) -> [E, num_basis] sine Bessel functions (fixed frequencies)."""

    def __init__(self, r_max: float, num_basis: int = 8):
        super().__init__()
        self.r_max = float(r_max)
        self.num_basis = int(num_basis)
        self.prefactor = math.sqrt(2.0 / self.r_max)
        # n * pi / r_max (1/Å), n = 1..num_basis; a buffer so it follows .to(device, dtype)
        self.register_buffer("frequencies", torch.arange(1, num_basis + 1, dtype=torch.float64) * math.pi / self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        freq = self.frequencies.to(r.dtype)  # [n]
        nonzero = (r > 0).unsqueeze(-1)  # [E, 1]
        r_safe = torch.where(nonzero, r.unsqueeze(-1), torch.ones_like(r).unsqueeze(-1))  # [E, 1], never 0
        values = torch.sin(freq * r_safe) / r_safe  # [E, n]
        return self.prefactor * torch.where(nonzero, values, freq.expand_as(values))

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_basis={self.num_basis}"


class PolynomialEnvelope(nn.Module):
    """[E] distances (Å) -> [E] smooth cutoff in [0, 1]; exactly 0 for r >= r_max."""

    def __init__(self, r_max: float, p: int = 6):
        super().__init__()
        if p < 2:
            raise ValueError(f"PolynomialEnvelope: p must be >= 2 for a smooth cutoff, got {p}")
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        u = r / self.r_max
        inside = u < 1.0
        u = torch.where(inside, u, torch.zeros_like(u))  # keeps the polynomial's gradient finite outside
        up = u**p
        f = 1.0 - 0.5 * (p + 1) * (p + 2) * up + p * (p + 2) * up * u - 0.5 * p * (p + 1) * up * u * u
        return torch.where(inside, f, torch.zeros_like(f))

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class RadialMLP(nn.Module):
    """[E, num_basis] enveloped basis -> [E, num_paths, channels] radial weights.

    Layers are bias-free ``x @ W / sqrt(fan_in)`` with W ~ N(0, 1) (so f(0) = 0 exactly) and normalised
    SiLU between them; the last layer is linear.
    """

    def __init__(self, num_basis: int, hidden: Sequence[int], num_paths: int, channels: int):
        super().__init__()
        self.num_paths = int(num_paths)
        self.channels = int(channels)
        sizes = [int(num_basis), *[int(h) for h in hidden], self.num_paths * self.channels]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(fan_in, fan_out)) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        )

    def forward(self, edge_feats: torch.Tensor) -> torch.Tensor:
        x = edge_feats  # [E, num_basis]
        for i, w in enumerate(self.weights):
            # NormalizedSiLU's factor and 1/sqrt(fan_in) scale W, not x: no extra pass over [E, fan_out]
            scale = (SILU_NORM if i > 0 else 1.0) / math.sqrt(w.shape[0])
            x = x @ (w * scale)  # [E, fan_out]
            if i < len(self.weights) - 1:
                x = torch.nn.functional.silu(x)  # times SILU_NORM, folded into the next W
        return x.reshape(x.shape[0], self.num_paths, self.channels)  # [E, P, C]
