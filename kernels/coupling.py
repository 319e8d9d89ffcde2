"""Generalised coupling tensors of the symmetric contraction (MACE's U matrices) and ContractionSpec.

For an input feature x with all l <= lmax_in (K = (lmax_in+1)**2 components, natural parity), an output
l_out and a correlation order nu, `coupling_basis(lmax_in, l_out, nu)` is U [2l_out+1, K, ..., K (nu), P]:
  * each U[..., p] is equivariant: sum_i U[m, i1..inu, p] prod_t x[i_t] transforms as an l_out irrep of
    natural parity under O(3) (so only input l tuples with sum(l) + l_out even appear);
  * symmetric under every permutation of the nu input axes;
  * orthonormal: sum over (m, i1..inu) of U[..., p] U[..., q] = delta_pq (Frobenius inner product);
  * complete ("cg"): the P tensors span all such maps.
Construction: for each multiset l1 <= ... <= lnu, couple left to right with wigner_3j through every chain
of intermediate L (any L, intermediate parities are free), symmetrise over the permutations that keep the
l sequence, Gram-Schmidt in that fixed order (drop tolerance 1e-8 on unit vectors), then embed into all
permuted blocks. Gram-Schmidt in a fixed order (not an SVD) makes the basis a deterministic function of
(lmax_in, l_out, nu), so saved weights mean the same thing on every machine.

`tensor_product="gaunt"` (ContractionSpec.tensor_product): the Gaunt product basis, what multiplying the
signals on the sphere computes. For each multiset l1 <= ... <= lnu, one coupling: the projection onto l_out of
the pointwise product f_l1 ... f_lnu (f_l(u) = sum_m x[l, m] Y^l_m(u)), i.e. the mean over the sphere of
Y^l_out Y^l1 ... Y^lnu. It is the sum over every chain of Gaunt coefficients (cg.gaunt_coefficients, even-sum
steps only) with no free weight per intermediate L: the sphere product has no handle on the intermediate
degrees. Blocks of different multisets are orthogonal, so the basis is these tensors normalised (same order,
same embedding). It spans a subspace of the "cg" basis (tests/kernels/test_gaunt.py counts it;
docs/tensor_products.md has the table). Note: chains of even-sum steps with a free weight per intermediate (and
any order of the factors) would span the whole "cg" space for our natural-parity features; what Gaunt gives up
in the product basis is the freedom to weight the intermediate couplings, not parity.

Contraction normalisation (`contraction_coupling`, used by every backend):
    coeff tensor = sqrt(2 l_out + 1) / sqrt(P(l_out)) * U,   P(l_out) = sum over nu of the path counts,
so each path has unit variance per output component for unit-variance inputs, and a sum over the
P(l_out) paths with O(1) weights stays O(1) (as in the conv, cg.py).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from .cg import check_tensor_product, gaunt_coefficients, l_slice, num_components, wigner_3j


def _chains(ls: tuple[int, ...], l_out: int, even_steps: bool = False):
    """Every tuple of intermediates (L2, ..., L_{nu-1}) coupling ls left to right into l_out (with even_steps,
    only those whose every step l + l' + L is even, the ones Gaunt coefficients allow)."""
    def rec(current: int, t: int, acc: tuple[int, ...]):
        if t == len(ls):
            if current == l_out:
                yield acc[:-1] if acc else acc
            return
        for new in range(abs(current - ls[t]), current + ls[t] + 1):
            if not even_steps or (current + ls[t] + new) % 2 == 0:
                yield from rec(new, t + 1, acc + (new,))
    yield from rec(ls[0], 1, ())


def _chain_tensor(ls: tuple[int, ...], inter: tuple[int, ...], l_out: int, coefficients=wigner_3j) -> np.ndarray:
    """Left-to-right coupling [2l_out+1, 2l1+1, ..., 2lnu+1] through the intermediates `inter`, each step
    coupled by coefficients(l, l', L) [2l+1, 2l'+1, 2L+1] (wigner_3j, or cg.gaunt_coefficients)."""
    t_ = np.eye(2 * ls[0] + 1)  # [a (current coupled index), i1]
    targets = inter + (l_out,)
    current = ls[0]
    for l_next, target in zip(ls[1:], targets):
        # T[c, i1..it, b] = sum_a T[a, i1..it] C[a, b, c]
        t_ = np.einsum("a...,abc->c...b", t_, coefficients(current, l_next, target))
        current = target
    return t_


def _sphere_product(ls: tuple[int, ...], l_out: int) -> np.ndarray:
    """Mean over the unit sphere of Y^l_out Y^l1 ... Y^lnu, [2l_out+1, 2l1+1, ..., 2lnu+1]: the l_out part of
    the pointwise product of nu signals, as the sum over the even-step chains of Gaunt coefficients (the product
    f1 f2 expands in Y^L with coefficients gaunt_coefficients(l1, l2, L), then times f3, ...)."""
    shape = (2 * l_out + 1,) + tuple(2 * l + 1 for l in ls)
    return sum((_chain_tensor(ls, inter, l_out, gaunt_coefficients) for inter in _chains(ls, l_out, True)),
               np.zeros(shape))


def _gaunt_block_basis(ls: tuple[int, ...], l_out: int) -> list[np.ndarray]:
    """The Gaunt coupling of the sorted block ls, normalised ([] when the sphere product has no l_out part).
    Symmetric under the permutations that keep ls: pointwise products commute."""
    t_ = _sphere_product(ls, l_out)
    n = np.linalg.norm(t_)
    return [t_ / n] if n > 1e-10 else []


def _block_basis(ls: tuple[int, ...], l_out: int) -> list[np.ndarray]:
    """Orthonormal symmetric couplings on the sorted block ls, each [2l_out+1, 2l1+1, ..., 2lnu+1]."""
    nu = len(ls)
    stab = [p for p in itertools.permutations(range(nu)) if all(ls[p[t]] == ls[t] for t in range(nu))]
    kept: list[np.ndarray] = []
    for inter in _chains(ls, l_out):
        raw = _chain_tensor(ls, inter, l_out)
        sym = sum(np.transpose(raw, (0,) + tuple(1 + q for q in p)) for p in stab) / len(stab)
        n0 = np.linalg.norm(sym)
        if n0 <= 1e-10 * np.linalg.norm(raw):
            continue  # vanishes under symmetrisation (e.g. the antisymmetric 1 x 1 -> 1)
        v = sym / n0
        for _ in range(2):  # twice is enough for orthogonality to rounding
            for q in kept:
                v = v - np.sum(q * v) * q
        n = np.linalg.norm(v)
        if n > 1e-8:
            kept.append(v / n)
    return kept


@functools.lru_cache(maxsize=None)
def coupling_basis(lmax_in: int, l_out: int, nu: int, tensor_product: str = "cg") -> np.ndarray:
    """U [2l_out+1, K, ..., K (nu axes), P] float64, orthonormal symmetric equivariant couplings (see the
    module docstring). Paths are ordered by multiset (l1 <= ... <= lnu, lexicographic), then by chain
    ("cg"; "gaunt" has at most one path per multiset). P may be 0. Read-only (cached)."""
    if nu < 1 or lmax_in < 0 or l_out < 0:
        raise ValueError(f"coupling_basis: need nu >= 1, lmax_in >= 0, l_out >= 0, got {nu}, {lmax_in}, {l_out}")
    check_tensor_product("coupling_basis", tensor_product)
    block_basis = _block_basis if tensor_product == "cg" else _gaunt_block_basis
    k = num_components(lmax_in)
    m = 2 * l_out + 1
    columns = []
    for ls in itertools.combinations_with_replacement(range(lmax_in + 1), nu):
        if (sum(ls) + l_out) % 2:
            continue
        blocks = set(itertools.permutations(range(nu)))
        n_blocks = len({tuple(ls[p[t]] for t in range(nu)) for p in blocks})
        for q in block_basis(ls, l_out):
            full = np.zeros((m,) + (k,) * nu)
            for p in blocks:  # block with l sequence (ls[p[0]], ..., ls[p[nu-1]]); repeats write equal values
                index = (slice(None),) + tuple(l_slice(ls[p[t]]) for t in range(nu))
                full[index] = np.transpose(q, (0,) + tuple(1 + p[t] for t in range(nu)))
            columns.append(full / math.sqrt(n_blocks))
    out = np.stack(columns, axis=-1) if columns else np.zeros((m,) + (k,) * nu + (0,))
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class ContractionSpec:
    """Symmetric contraction: input l <= lmax_in, output l <= lmax_out, correlation orders 1..correlation.

    Weight layout (`weights[species, w, channel]`): for l_out in 0..lmax_out, for nu in 1..correlation,
    the P(l_out, nu) paths of coupling_basis(lmax_in, l_out, nu, tensor_product) in order; `blocks` gives the
    offsets. tensor_product: "cg" (every symmetric equivariant coupling) | "gaunt" (the sphere products only, a
    subspace with fewer weights; module docstring)."""

    lmax_in: int
    lmax_out: int
    correlation: int
    tensor_product: str = "cg"

    def __post_init__(self):
        for name, low in (("lmax_in", 0), ("lmax_out", 0), ("correlation", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"ContractionSpec: {name} must be an int >= {low}, got {v!r}")
        check_tensor_product("ContractionSpec", self.tensor_product)

    @property
    def blocks(self) -> tuple[tuple[int, int, int, int], ...]:
        """(l_out, nu, weight_offset, num_paths) for every (l_out, nu), in weight order."""
        return _blocks(self.lmax_in, self.lmax_out, self.correlation, self.tensor_product)

    @property
    def num_weights(self) -> int:
        b = self.blocks
        return b[-1][2] + b[-1][3]

    @property
    def dim_in(self) -> int:
        return num_components(self.lmax_in)

    @property
    def dim_out(self) -> int:
        return num_components(self.lmax_out)


@functools.lru_cache(maxsize=None)
def _blocks(lmax_in: int, lmax_out: int, correlation: int, tensor_product: str) -> tuple[tuple[int, int, int, int], ...]:
    out, offset = [], 0
    for l_out in range(lmax_out + 1):
        for nu in range(1, correlation + 1):
            n = coupling_basis(lmax_in, l_out, nu, tensor_product).shape[-1]
            out.append((l_out, nu, offset, n))
            offset += n
    return tuple(out)


@functools.lru_cache(maxsize=None)
def contraction_coupling(spec: ContractionSpec, l_out: int, nu: int) -> np.ndarray:
    """Normalised U [2l_out+1, K, ..., K, P] = sqrt(2l_out+1)/sqrt(P(l_out)) * coupling_basis (docstring)."""
    total = sum(n for lo, _, _, n in spec.blocks if lo == l_out)
    u = coupling_basis(spec.lmax_in, l_out, nu, spec.tensor_product)
    out = u * math.sqrt((2 * l_out + 1) / total) if total else u.copy()
    out.setflags(write=False)
    return out


def sorted_index_tuples(k: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing index tuples (i1 <= ... <= i_order) over range(k): (tuples [Q, order] int64,
    multiplicity [Q] float64 = number of distinct orderings). order 0 gives one empty tuple, multiplicity 1."""
    combos = list(itertools.combinations_with_replacement(range(k), order))
    mult = [math.factorial(order) / math.prod(math.factorial(c.count(i)) for i in set(c)) for c in combos]
    return np.array(combos, dtype=np.int64).reshape(len(combos), order), np.array(mult, dtype=np.float64)


@functools.lru_cache(maxsize=None)
def folded_coupling(spec: ContractionSpec, l_out: int, nu: int) -> np.ndarray:
    """The normalised U with its first nu-1 axes folded onto sorted tuples: [2l_out+1, K, Q, P] with
    F[m, k, q, p] = mult(q) * U[m, tuple_q..., k, p], tuple_q from sorted_index_tuples(K, nu-1), so that
    sum_i U[m, i, p] prod_t x[i_t] = sum_{k,q} F[m, k, q, p] x[k] prod(x[tuple_q])."""
    u = contraction_coupling(spec, l_out, nu)
    k = spec.dim_in
    m, p = u.shape[0], u.shape[-1]
    tuples, mult = sorted_index_tuples(k, nu - 1)
    flat = np.ravel_multi_index(tuples.T, (k,) * (nu - 1)) if nu > 1 else np.zeros(1, dtype=np.int64)
    r = u.reshape(m, k ** (nu - 1), k, p)[:, flat] * mult[None, :, None, None]  # [m, Q, k, P]
    out = np.ascontiguousarray(r.transpose(0, 2, 1, 3))
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=None)
def _contraction_table(spec: ContractionSpec, tol: float):
    rows = []
    for l_out, nu, offset, n in spec.blocks:
        if n == 0:
            continue
        u = contraction_coupling(spec, l_out, nu)
        tuples, mult = sorted_index_tuples(spec.dim_in, nu)
        vals = u[(slice(None),) + tuple(tuples.T)] * mult[None, :, None]  # [m, Q, P]
        for mm, q, p in zip(*np.nonzero(np.abs(vals) > tol)):
            idx = tuple(int(i) for i in tuples[q])
            rows.append((offset + int(p), l_out * l_out + int(mm), idx, float(vals[mm, q, p])))
    rows.sort(key=lambda r: (len(r[2]), r[0], r[1], r[2]))
    return tuple(rows)


def contraction_path_table(spec: ContractionSpec, tol: float = 1e-12) -> list[tuple[int, int, tuple[int, ...], float]]:
    """Sparse symmetric contraction: list of (weight_index, i_out, (i1 <= ... <= inu), coeff), flat
    component indices, the multiplicity of the sorted tuple folded into coeff. For every node n:
        out[n, i_out, c] += coeff * weights[species[n], weight_index, c] * prod_t node_feats[n, i_t, c]
    which is exactly `symmetric_contraction`. Sorted by (nu, weight_index, i_out, tuple)."""
    return list(_contraction_table(spec, tol))


__all__ = [
    "ContractionSpec", "coupling_basis", "contraction_coupling", "folded_coupling",
    "contraction_path_table", "sorted_index_tuples",
]
