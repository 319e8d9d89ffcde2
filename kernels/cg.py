"""Real Clebsch-Gordan coefficients, Wigner D matrices and the conv path tables.

Conventions (all e3nn-compatible):
  * Components of an l block are in e3nn order (index 0..2l, "m = -l..l"); a feature vector with
    lmax has (lmax+1)**2 components, l major: flat index of (l, i) is l*l + i.
  * The real basis is e3nn's: for l = 1 the components are (x, y, z), so the l = 1 Wigner D matrix of a
    3x3 rotation matrix R is R itself. Every irrep has natural parity, D^l(-I) = (-1)^l.
  * `wigner_3j(l1, l2, l3)` [2l1+1, 2l2+1, 2l3+1] is computed exactly as e3nn.o3.wigner_3j (complex
    Condon-Shortley CG from the Racah formula, changed to the real basis with e3nn's matrix, including its
    (-i)^l phase), so it agrees with e3nn to float64 rounding, sign included. Frobenius norm 1.
    Equivariance: C[i,j,k] = sum D1[i,a] D2[j,b] D3[k,c] C[a,b,c] for every rotation.

Tensor products (`ConvSpec.tensor_product`; the tables below dispatch on it):
  "cg"     the Clebsch-Gordan product, wigner_3j per path.
  "gaunt"  the Gaunt product: the pointwise product of the two signals on the sphere, projected back, i.e.
           `gaunt_coefficients` = mean over the unit sphere of Y^l1 Y^l2 Y^l3. It is zero unless l1+l2+l3 is
           even, so it keeps only the even-sum paths and drops the antisymmetric ones (the cross product
           1o x 1o -> 1e). Our irreps all have natural parity, so every conv path is already even-sum, and the
           Gaunt coefficient is wigner_3j times a positive per-path scalar (kappa below): after the path
           normalisation the two conv tables are the same numbers (to float64 rounding).
Conv path normalisation (the coefficient that `edge_conv` and every backend use, `conv_coupling`):
    CG_p = sqrt(2*l3+1) / sqrt(n_paths(l3)) * wigner_3j(l1, l2, l3)
  sqrt(2*l3+1): the path has unit Frobenius norm times sqrt(2*l3+1), so for component-normalised inputs
    (unit variance per component) each output component of one path has unit variance.
  1/sqrt(n_paths(l3)), n_paths(l3) = number of paths of the spec with output l3: a sum of unit-variance
    paths with O(1) weights stays O(1) (e3nn's "element" path normalisation, as MACE uses).
All tables are float64 numpy arrays, cached; never modify a returned array.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch


def num_components(lmax: int) -> int:
    """Number of components of a feature with all l <= lmax: (lmax+1)**2."""
    return (lmax + 1) ** 2


def l_slice(l: int) -> slice:
    """Flat component slice of the l block: [l*l, (l+1)**2)."""
    return slice(l * l, (l + 1) ** 2)


def triangle(l1: int, l2: int, l3: int) -> bool:
    """Triangle rule |l1 - l2| <= l3 <= l1 + l2."""
    return abs(l1 - l2) <= l3 <= l1 + l2


def o3_allowed(l1: int, l2: int, l3: int) -> bool:
    """Path allowed for natural-parity irreps: triangle rule and l1 + l2 + l3 even."""
    return triangle(l1, l2, l3) and (l1 + l2 + l3) % 2 == 0


def _complex_cg(j1: int, m1: int, j2: int, m2: int, j3: int, m3: int) -> float:
    """Condon-Shortley <j1 m1 j2 m2 | j3 m3> (integer j) from the Racah formula, exact until the sqrt."""
    if m3 != m1 + m2 or not triangle(j1, j2, j3) or max(abs(m1) - j1, abs(m2) - j2, abs(m3) - j3) > 0:
        return 0.0
    f = math.factorial
    pre = Fraction((2 * j3 + 1) * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3), f(j1 + j2 + j3 + 1))
    pre *= f(j3 + m3) * f(j3 - m3) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2)
    s = Fraction(0)
    for k in range(0, j1 + j2 - j3 + 1):
        d = (k, j1 + j2 - j3 - k, j1 - m1 - k, j2 + m2 - k, j3 - j2 + m1 + k, j3 - j1 - m2 + k)
        if min(d) < 0:
            continue
        s += Fraction((-1) ** k, math.prod(f(x) for x in d))
    value = pre * s * s  # exact square of the coefficient
    return math.copysign(math.sqrt(value), s)


@functools.lru_cache(maxsize=None)
def _real_to_complex(l: int) -> np.ndarray:
    """e3nn's change of basis Q [2l+1, 2l+1] complex128 (with its (-i)^l phase that makes CG real)."""
    q = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    r = 1 / math.sqrt(2)
    for m in range(-l, 0):
        q[l + m, l - m] = r
        q[l + m, l + m] = -1j * r
    q[l, l] = 1
    for m in range(1, l + 1):
        q[l + m, l + m] = (-1) ** m * r
        q[l + m, l - m] = 1j * (-1) ** m * r
    return (-1j) ** l * q


@functools.lru_cache(maxsize=None)
def wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """Real coupling tensor [2l1+1, 2l2+1, 2l3+1] float64, Frobenius norm 1; equals e3nn.o3.wigner_3j.

    Zero tensor when the triangle rule fails. Read-only (cached)."""
    shape = (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
    if not triangle(l1, l2, l3):
        out = np.zeros(shape)
        out.setflags(write=False)
        return out
    c = np.zeros(shape)
    for i1, m1 in enumerate(range(-l1, l1 + 1)):
        for i2, m2 in enumerate(range(-l2, l2 + 1)):
            if abs(m1 + m2) <= l3:
                c[i1, i2, l3 + m1 + m2] = _complex_cg(l1, m1, l2, m2, l3, m1 + m2)
    q1, q2, q3 = _real_to_complex(l1), _real_to_complex(l2), _real_to_complex(l3)
    # C_real[j,l,m] = sum_{i,k,n} Q1[i,j] Q2[k,l] conj(Q3[n,m]) C[i,k,n]  (e3nn's contraction)
    real = np.einsum("ij,kl,nm,ikn->jlm", q1, q2, np.conj(q3), c)
    if np.abs(real.imag).max() > 1e-12:
        raise ArithmeticError(f"kernels/cg.py: CG ({l1},{l2},{l3}) not real after basis change")
    out = real.real / np.linalg.norm(real.real)
    out.setflags(write=False)
    return out


def gaunt_kappa(l1: int, l2: int, l3: int) -> float:
    """The scalar of gaunt_coefficients = kappa * wigner_3j: sqrt((2l1+1)(2l2+1)(2l3+1)) |(l1 l2 l3; 0 0 0)|,
    0 unless o3_allowed. (l1 l2 l3; 0 0 0) = (-1)^(l1-l2) <l1 0 l2 0|l3 0> / sqrt(2l3+1). Its sign in e3nn's real
    basis is + (checked against the sphere integral in tests/kernels/test_gaunt.py)."""
    if not o3_allowed(l1, l2, l3):
        return 0.0
    return math.sqrt((2 * l1 + 1) * (2 * l2 + 1)) * abs(_complex_cg(l1, 0, l2, 0, l3, 0))


@functools.lru_cache(maxsize=None)
def gaunt_coefficients(l1: int, l2: int, l3: int) -> np.ndarray:
    """Real Gaunt coefficients [2l1+1, 2l2+1, 2l3+1] float64: the mean over the unit sphere of
    Y^l1_a Y^l2_b Y^l3_c (component-normalised harmonics, so that the product of two signals f1 f2 has the
    l3 coefficients sum_ab G[a, b, c] x1[a] x2[b]). = gaunt_kappa * wigner_3j; zero for odd l1+l2+l3.
    kernels/gaunt.py computes the same integral on a quadrature grid (the test). Read-only (cached)."""
    out = gaunt_kappa(l1, l2, l3) * wigner_3j(l1, l2, l3)
    out.setflags(write=False)
    return out


TENSOR_PRODUCTS = ("cg", "gaunt")


def check_tensor_product(owner: str, value) -> None:
    """ValueError naming `owner` unless value is one of TENSOR_PRODUCTS."""
    if value not in TENSOR_PRODUCTS:
        raise ValueError(f"{owner}: tensor_product must be one of {', '.join(TENSOR_PRODUCTS)}, got {value!r}")


def wigner_D(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """Real Wigner D matrix [..., 2l+1, 2l+1] of orthogonal matrices `rotation` [..., 3, 3].

    Works for improper matrices too (natural parity: D^l(-I) = (-1)^l). D^1(R) = R; the higher l follow
    from D^{l+1} = (2l+3) P^T (D^l kron D^1) P with P = wigner_3j(l, 1, l+1) as a [(2l+1)*3, 2l+3] matrix
    (its columns are orthogonal with squared norm 1/(2l+3)). Satisfies Y^l(R u) = D^l(R) Y^l(u)."""
    batch = rotation.shape[:-2]
    d = torch.ones(*batch, 1, 1, dtype=rotation.dtype, device=rotation.device)
    for k in range(l):
        if k == 0:
            d = rotation
            continue
        p = torch.tensor(wigner_3j(k, 1, k + 1), dtype=rotation.dtype, device=rotation.device)
        # kron[..., (a,b), (c,e)] = d[..., a, c] * R[..., b, e]  -> [..., 3(2k+1), 3(2k+1)]
        kron = (d[..., :, None, :, None] * rotation[..., None, :, None, :]).reshape(*batch, 3 * (2 * k + 1), -1)
        p = p.reshape(3 * (2 * k + 1), 2 * k + 3)
        d = (2 * k + 3) * p.transpose(0, 1) @ kron @ p
    return d


def block_wigner_D(lmax: int, rotation: torch.Tensor) -> torch.Tensor:
    """Block-diagonal D [..., (lmax+1)**2, (lmax+1)**2] acting on a flat feature with all l <= lmax."""
    k = num_components(lmax)
    out = rotation.new_zeros(*rotation.shape[:-2], k, k)
    for l in range(lmax + 1):
        out[..., l_slice(l), l_slice(l)] = wigner_D(l, rotation)
    return out


@dataclass(frozen=True)
class ConvSpec:
    """Irreps of the channelwise conv: node l <= lmax_in, harmonics l <= lmax_sh, output l <= lmax_out.

    `paths`: the O(3)-allowed (l_in, l_sh, l_out), sorted by (l_out, l_in, l_sh), so the paths of one
    output l (and within it, of one input l) are contiguous; the path index p of `edge_weights[e, p, c]`
    is the position in this list. `tensor_product`: "cg" | "gaunt" (module docstring); both keep the same
    paths (all even-sum), and their normalised couplings are equal."""

    lmax_in: int
    lmax_sh: int
    lmax_out: int
    tensor_product: str = "cg"

    def __post_init__(self):
        for name in ("lmax_in", "lmax_sh", "lmax_out"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"ConvSpec: {name} must be an int >= 0, got {v!r}")
        check_tensor_product("ConvSpec", self.tensor_product)

    @property
    def paths(self) -> list[tuple[int, int, int]]:
        return list(_conv_paths(self.lmax_in, self.lmax_sh, self.lmax_out))

    @property
    def num_paths(self) -> int:
        return len(_conv_paths(self.lmax_in, self.lmax_sh, self.lmax_out))

    @property
    def dim_in(self) -> int:
        return num_components(self.lmax_in)

    @property
    def dim_sh(self) -> int:
        return num_components(self.lmax_sh)

    @property
    def dim_out(self) -> int:
        return num_components(self.lmax_out)


@functools.lru_cache(maxsize=None)
def _conv_paths(lmax_in: int, lmax_sh: int, lmax_out: int) -> tuple[tuple[int, int, int], ...]:
    return tuple(
        (l1, l2, l3)
        for l3 in range(lmax_out + 1)
        for l1 in range(lmax_in + 1)
        for l2 in range(lmax_sh + 1)
        if o3_allowed(l1, l2, l3)
    )


@functools.lru_cache(maxsize=None)
def conv_coupling(spec: ConvSpec) -> tuple[np.ndarray, ...]:
    """Normalised coupling of every path: tuple over p of [2l1+1, 2l2+1, 2l3+1] float64
    = sqrt(2l3+1) / sqrt(n_paths(l3)) * T, T = wigner_3j(l1, l2, l3) ("cg", Frobenius norm 1) or
    gaunt_coefficients(l1, l2, l3) / its norm ("gaunt"; the same tensor to rounding, as kappa > 0).
    See the module docstring."""
    paths = spec.paths
    count = {l3: sum(1 for p in paths if p[2] == l3) for l3 in range(spec.lmax_out + 1)}
    out = []
    for l1, l2, l3 in paths:
        t = wigner_3j(l1, l2, l3)
        if spec.tensor_product == "gaunt":
            t = gaunt_coefficients(l1, l2, l3) / np.linalg.norm(gaunt_coefficients(l1, l2, l3))
        c = t * math.sqrt((2 * l3 + 1) / count[l3])
        c.setflags(write=False)
        out.append(c)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _conv_table(spec: ConvSpec, tol: float) -> tuple[tuple[int, int, int, int, float], ...]:
    rows = []
    for p, ((l1, l2, l3), c) in enumerate(zip(spec.paths, conv_coupling(spec))):
        for a, b, d in zip(*np.nonzero(np.abs(c) > tol)):
            rows.append((p, l1 * l1 + int(a), l2 * l2 + int(b), l3 * l3 + int(d), float(c[a, b, d])))
    return tuple(rows)


def conv_path_table(spec: ConvSpec, tol: float = 1e-12) -> list[tuple[int, int, int, int, float]]:
    """Sparse conv coefficients: list of (path_index, i_in, i_sh, i_out, coeff), flat component indices,
    sorted by path then (i_in, i_sh, i_out). With it, for every edge e (sender s, receiver r):
        out[r, i_out, c] += coeff * edge_weights[e, path_index, c] * node_feats[s, i_in, c] * edge_sh[e, i_sh]
    which is exactly `edge_conv`. Entries with |coeff| <= tol (exact zeros up to rounding) are dropped."""
    return list(_conv_table(spec, tol))
