"""Real CG coefficients, Wigner D, conv path tables and the symmetric coupling basis (budget: < 10 s)."""
import itertools
import math

import numpy as np
import pytest
import torch
from e3nn import o3  # a test dependency (pip install -e ".[test]")

import kernels
from kernels import (
    ContractionSpec, ConvSpec, block_wigner_D, contraction_coupling, contraction_path_table, conv_coupling,
    conv_path_table, coupling_basis, folded_coupling, wigner_3j, wigner_D,
)

DT = torch.float64


def random_orthogonal(seed: int, improper: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=DT))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q = -q
    return -q if improper else q


def test_wigner_3j_matches_e3nn_exactly():
    # Same convention and sign as e3nn (see cg.py): the difference is float64 rounding.
    cases = [(a, b, c) for a, b in itertools.product(range(4), repeat=2) for c in range(abs(a - b), a + b + 1)]
    for l1, l2, l3 in cases + [(4, 4, 4), (4, 3, 1), (2, 4, 6), (4, 1, 5)]:
        ours = wigner_3j(l1, l2, l3)
        theirs = o3.wigner_3j(l1, l2, l3, dtype=DT).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-13, err_msg=f"({l1},{l2},{l3})")
        assert abs(np.linalg.norm(ours) - 1) < 1e-13
    assert not wigner_3j(1, 1, 3).any()  # triangle violated -> zeros


def test_wigner_3j_is_invariant():
    rot = random_orthogonal(1, improper=False)
    for l1, l2, l3 in [(1, 1, 2), (2, 3, 4), (3, 3, 3), (4, 2, 5), (1, 2, 3)]:
        c = torch.tensor(wigner_3j(l1, l2, l3), dtype=DT)
        d1, d2, d3 = (wigner_D(l, rot) for l in (l1, l2, l3))
        rotated = torch.einsum("ia,jb,kc,abc->ijk", d1, d2, d3, c)
        assert (rotated - c).abs().max() < 1e-12


@pytest.mark.parametrize("improper", [False, True])
def test_wigner_D_matches_e3nn_and_harmonics(improper):
    rot = random_orthogonal(2, improper)
    u = torch.randn(20, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    for l in range(6):
        d = wigner_D(l, rot)
        # e3nn goes through Euler angles (about 1e-7 of rounding); the tight checks are the two below
        assert torch.allclose(d, o3.Irrep(l, (-1) ** l).D_from_matrix(rot), atol=1e-5)
        assert torch.allclose(d @ d.T, torch.eye(2 * l + 1, dtype=DT), atol=1e-12)
        y = kernels.get_ops("reference").spherical_harmonics(u, l)[:, l * l:]
        y_rot = kernels.get_ops("reference").spherical_harmonics(u @ rot.T, l)[:, l * l:]
        assert (y_rot - y @ d.T).abs().max() < 1e-12
    big = block_wigner_D(3, torch.stack([rot, rot.T]))  # batched
    assert big.shape == (2, 16, 16) and torch.allclose(big[0] @ big[1], torch.eye(16, dtype=DT), atol=1e-12)


def test_conv_paths_and_counts():
    assert ConvSpec(1, 3, 1).paths == [(0, 0, 0), (1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 2, 1)]
    assert ConvSpec(0, 3, 3).paths == [(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3)]
    assert ConvSpec(3, 3, 3).num_paths == 23
    assert ConvSpec(2, 2, 0).num_paths == 3
    for lmax_in, lmax_sh, lmax_out in itertools.product(range(4), repeat=3):
        spec = ConvSpec(lmax_in, lmax_sh, lmax_out)
        brute = sum(1 for a in range(lmax_in + 1) for b in range(lmax_sh + 1) for c in range(lmax_out + 1)
                    if abs(a - b) <= c <= a + b and (a + b + c) % 2 == 0)
        assert spec.num_paths == brute
    with pytest.raises(ValueError, match="lmax_sh"):
        ConvSpec(1, -1, 1)


def test_conv_coupling_normalisation_and_table():
    spec = ConvSpec(2, 3, 2)
    per_out = {l3: sum(1 for p in spec.paths if p[2] == l3) for l3 in range(3)}
    for (l1, l2, l3), c in zip(spec.paths, conv_coupling(spec)):
        assert abs(np.linalg.norm(c) - math.sqrt((2 * l3 + 1) / per_out[l3])) < 1e-12
    table = conv_path_table(spec)
    dense = np.zeros((spec.num_paths, spec.dim_in, spec.dim_sh, spec.dim_out))
    for p, i_in, i_sh, i_out, coeff in table:
        assert isinstance(p, int) and isinstance(i_in, int) and coeff != 0
        dense[p, i_in, i_sh, i_out] = coeff
    for p, ((l1, l2, l3), c) in enumerate(zip(spec.paths, conv_coupling(spec))):
        blk = dense[p, l1 * l1:(l1 + 1) ** 2, l2 * l2:(l2 + 1) ** 2, l3 * l3:(l3 + 1) ** 2]
        np.testing.assert_allclose(blk, c, atol=1e-15)
        assert abs(dense[p]).sum() == pytest.approx(abs(c).sum())


def character_count(lmax_in: int, l_out: int, nu: int, n: int = 2000) -> float:
    """Multiplicity of the natural-parity irrep l_out in Sym^nu(sum_{l<=lmax_in} natural-parity l), by
    integrating characters over O(3) (an independent check of the coupling basis size)."""
    th = (np.arange(n) + 0.5) * np.pi / n
    weight = (1 - np.cos(th)) / n  # Haar measure on the rotation angle, times d(theta) = pi/n

    def chi(l, t):
        return np.sin((2 * l + 1) * t / 2) / np.sin(t / 2)

    total = 0.0
    for sign in (1, -1):  # proper rotations R, improper -R (natural parity: chi_l(-R) = (-1)^l chi_l(R))
        power = [None] + [sum(sign ** (k * l) * chi(l, k * th) for l in range(lmax_in + 1)) for k in range(1, nu + 1)]
        sym = 0.0
        for perm in itertools.permutations(range(nu)):  # cycle index of S_nu
            seen, term = set(), 1.0
            for i in range(nu):
                length, j = 0, i
                while j not in seen:
                    seen.add(j)
                    j, length = perm[j], length + 1
                term = term * power[length] if length else term
            sym = sym + term
        sym = sym / math.factorial(nu)
        total += 0.5 * np.sum(weight * sym * chi(l_out, th) * sign ** l_out)
    return total


@pytest.mark.parametrize("lmax_in", [0, 1, 2, 3])
def test_coupling_basis_is_complete(lmax_in):
    for nu, l_out in itertools.product((1, 2, 3), range(4)):
        count = coupling_basis(lmax_in, l_out, nu).shape[-1]
        assert abs(count - character_count(lmax_in, l_out, nu)) < 1e-6, (lmax_in, l_out, nu)
    assert ContractionSpec(3, 0, 3).num_weights == 1 + 4 + 8
    assert ContractionSpec(1, 1, 3).blocks == ((0, 1, 0, 1), (0, 2, 1, 2), (0, 3, 3, 2),
                                               (1, 1, 5, 1), (1, 2, 6, 1), (1, 3, 7, 2))


@pytest.mark.parametrize("improper", [False, True])
def test_coupling_basis_symmetric_orthonormal_equivariant(improper):
    rot = random_orthogonal(3, improper)
    lmax_in = 2
    d_in = block_wigner_D(lmax_in, rot)
    x = torch.randn(9, dtype=DT, generator=torch.Generator().manual_seed(1))
    for nu, l_out in itertools.product((1, 2, 3), range(4)):
        u = torch.tensor(coupling_basis(lmax_in, l_out, nu), dtype=DT)
        p = u.shape[-1]
        if p == 0:
            continue
        flat = u.reshape(-1, p)
        assert torch.allclose(flat.T @ flat, torch.eye(p, dtype=DT), atol=1e-12)
        for perm in itertools.permutations(range(1, nu + 1)):
            assert (u - u.permute(0, *perm, nu + 1)).abs().max() < 1e-14

        def contract(v):
            out = u
            for _ in range(nu):
                out = torch.einsum("mi...,i->m...", out, v)
            return out  # [2l_out+1, P]

        lhs = contract(d_in @ x)
        rhs = wigner_D(l_out, rot) @ contract(x)
        assert (lhs - rhs).abs().max() <= 1e-12 * max(1.0, rhs.abs().max().item())


def test_contraction_tables_agree_with_dense():
    spec = ContractionSpec(2, 2, 3)
    x = np.random.default_rng(0).normal(size=spec.dim_in)
    w = np.random.default_rng(1).normal(size=spec.num_weights)
    dense = np.zeros(spec.dim_out)
    folded = np.zeros(spec.dim_out)
    for l_out, nu, offset, count in spec.blocks:
        u = contraction_coupling(spec, l_out, nu)
        total = sum(n for lo, _, _, n in spec.blocks if lo == l_out)
        assert abs(np.linalg.norm(u.reshape(-1, count), axis=0) - math.sqrt((2 * l_out + 1) / total)).max() < 1e-12
        v = u
        for _ in range(nu):
            v = np.tensordot(v, x, axes=([1], [0]))
        dense[l_out * l_out:(l_out + 1) ** 2] += v @ w[offset:offset + count]
        f = folded_coupling(spec, l_out, nu)  # [M, K, Q, P]
        tuples, _ = kernels.sorted_index_tuples(spec.dim_in, nu - 1)
        mono = np.prod(x[tuples], axis=1) if nu > 1 else np.ones(1)
        folded[l_out * l_out:(l_out + 1) ** 2] += np.einsum("mkqp,k,q,p->m", f, x, mono, w[offset:offset + count])
    sparse = np.zeros(spec.dim_out)
    for wi, i_out, idx, coeff in contraction_path_table(spec):
        assert list(idx) == sorted(idx)
        sparse[i_out] += coeff * w[wi] * np.prod(x[list(idx)])
    np.testing.assert_allclose(folded, dense, atol=1e-12)
    np.testing.assert_allclose(sparse, dense, atol=1e-12)


def test_specs_are_hashable_and_validated():
    assert {ConvSpec(1, 2, 1), ConvSpec(1, 2, 1)} == {ConvSpec(1, 2, 1)}
    with pytest.raises(ValueError, match="correlation"):
        ContractionSpec(1, 1, 0)
    with pytest.raises(ValueError, match="lmax_in"):
        ContractionSpec(1.5, 1, 2)
