"""Uniform-channel irreps: the shape of every hidden feature tensor in the model.

A feature tensor is dense ``[num_nodes, (lmax+1)**2, channels]``: components before channels,
components in e3nn order (l major, m = -l..l inside each block), and every l has the same number of
channels. Each l block carries natural parity (-1)**l (scalars even, vectors odd, ...), the parity
of the spherical harmonics of the edge vectors, so the O(3)-allowed couplings are exactly those with
l1 + l2 + l3 even and the triangle rule. In e3nn notation ``Irreps(2, 8)`` is ``8x0e+8x1o+8x2e``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def num_components(lmax: int) -> int:
    """Number of components (rows) of an l <= lmax feature: sum_l (2l+1) = (lmax+1)**2."""
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    return (lmax + 1) ** 2


def l_slice(l: int) -> slice:
    """Rows of the l block in e3nn order: l*l .. (l+1)**2 - 1 (2l+1 rows)."""
    if l < 0:
        raise ValueError(f"l must be >= 0, got {l}")
    return slice(l * l, (l + 1) ** 2)


def parity(l: int) -> int:
    """Natural parity of the l block: +1 for even l, -1 for odd l."""
    return 1 if l % 2 == 0 else -1


@dataclass(frozen=True)
class Irreps:
    """``channels`` copies of each l = 0..lmax with natural parity, stored ``[..., dim, channels]``."""

    lmax: int
    channels: int

    def __post_init__(self) -> None:
        if self.lmax < 0:
            raise ValueError(f"Irreps: lmax must be >= 0, got {self.lmax}")
        if self.channels < 1:
            raise ValueError(f"Irreps: channels must be >= 1, got {self.channels}")

    @property
    def ls(self) -> tuple[int, ...]:
        """The l values present: (0, 1, ..., lmax)."""
        return tuple(range(self.lmax + 1))

    @property
    def dim(self) -> int:
        """Components per channel: (lmax+1)**2."""
        return num_components(self.lmax)

    @property
    def slices(self) -> tuple[slice, ...]:
        """Row slice of each l block, indexed by l."""
        return tuple(l_slice(l) for l in self.ls)

    def component_l(self, device: torch.device | str | None = None) -> torch.Tensor:
        """[dim] int64: the l of each component row (0, 1, 1, 1, 2, ...)."""
        return torch.tensor([l for l in self.ls for _ in range(2 * l + 1)], dtype=torch.int64, device=device)

    def shape(self, num_nodes: int) -> tuple[int, int, int]:
        """Shape of a feature tensor for ``num_nodes`` nodes."""
        return (num_nodes, self.dim, self.channels)

    def __str__(self) -> str:
        return "+".join(f"{self.channels}x{l}{'e' if parity(l) == 1 else 'o'}" for l in self.ls)
