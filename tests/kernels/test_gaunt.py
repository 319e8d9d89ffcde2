"""The Gaunt tensor product (kernels/gaunt.py, the "gaunt" specs of cg.py and coupling.py) on the CPU, float64:
the S2 grid is exact at the minimal resolution, grid products == closed-form Gaunt coefficients == CG times a
positive per-path scalar, the reference ops on "gaunt" specs == the grid ops, equivariance, and the price."""
import itertools
import math

import numpy as np
import pytest
import torch

import kernels
from kernels import gaunt
from kernels.cg import ConvSpec, block_wigner_D, conv_coupling, conv_path_table, gaunt_coefficients, wigner_3j
from kernels.coupling import ContractionSpec, coupling_basis

REF = kernels.get_ops("reference")


def _rotation(seed: int, improper: bool = False) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.det(q))
    return -q if improper else q


@pytest.mark.parametrize("degree", [0, 3, 6, 9])
def test_grid_is_exact_to_its_degree_and_no_further(degree):
    vectors, weights = gaunt.s2_grid(degree)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-15)
    assert abs(weights.sum() - 1.0) < 1e-15
    # mean of y^k over the sphere is 1/(k+1) for even k (y: the polar axis; x and z: off-axis)
    for k in range(0, degree + 1, 2):
        for axis in range(3):
            assert abs(weights @ vectors[:, axis] ** k - 1 / (k + 1)) < 1e-14
    k = degree // 2 * 2 + 2  # the next even power: beyond the Legendre nodes' exactness
    assert abs(weights @ vectors[:, 1] ** k - 1 / (k + 1)) > 1e-6
    # harmonics are orthonormal (component normalisation) wherever l + l' <= degree
    y = gaunt.sh_on_grid(degree // 2, degree)
    assert np.abs((y * weights[:, None]).T @ y - np.eye(y.shape[1])).max() < 1e-13


def test_gaunt_coefficients_are_the_sphere_integral_and_cg_times_a_positive_scalar():
    for l1, l2, l3 in itertools.product(range(5), repeat=3):
        grid = gaunt.sphere_mean((l1, l2, l3))
        closed = gaunt_coefficients(l1, l2, l3)
        assert np.abs(grid - closed).max() < 1e-14, (l1, l2, l3)
        if (l1 + l2 + l3) % 2 or not kernels.triangle(l1, l2, l3):
            assert np.abs(grid).max() < 1e-14  # Gaunt drops the odd-sum paths
        else:
            kappa = float(np.sum(grid * wigner_3j(l1, l2, l3)))  # |wigner_3j| = 1
            assert kappa > 0
            assert np.abs(grid - kappa * wigner_3j(l1, l2, l3)).max() < 1e-14


def test_cross_product_is_the_dropped_path():
    r = gaunt.cross_product_residuals()
    assert r["cg"] < 1e-14  # wigner_3j(1, 1, 1) is the Levi-Civita tensor, up to its scale
    assert r["gaunt"] == 1.0  # the Gaunt coefficient of 1 x 1 -> 1 is zero: nothing of a x b is reachable


@pytest.mark.parametrize("lmaxes", [(0, 1, 1), (1, 3, 3), (2, 2, 2), (3, 3, 3), (2, 3, 1)])
def test_conv_gaunt_equals_cg_and_the_grid(lmaxes):
    cg, ga = ConvSpec(*lmaxes), ConvSpec(*lmaxes, tensor_product="gaunt")
    assert cg.paths == ga.paths  # natural parity: every path is already even-sum
    for a, b in zip(conv_coupling(cg), conv_coupling(ga)):
        assert np.abs(a - b).max() < 1e-15
    rows_cg, rows_ga = conv_path_table(cg), conv_path_table(ga)
    assert [r[:4] for r in rows_cg] == [r[:4] for r in rows_ga]
    assert max(abs(a[4] - b[4]) for a, b in zip(rows_cg, rows_ga)) < 1e-15
    g = torch.Generator().manual_seed(1)
    n, e, c = 6, 17, 3
    graph = kernels.make_graph(torch.randint(0, n, (e,), generator=g), torch.sort(torch.randint(0, n, (e,), generator=g))[0], n)
    x = torch.randn(n, ga.dim_in, c, generator=g, dtype=torch.float64)
    y = REF.spherical_harmonics(torch.randn(e, 3, generator=g, dtype=torch.float64), ga.lmax_sh)
    w = torch.randn(e, ga.num_paths, c, generator=g, dtype=torch.float64)
    ref = REF.edge_conv(x, y, w, graph, ga)
    grid = gaunt.grid_edge_conv(x, y, w, graph, ga)
    assert float((ref - grid).norm() / ref.norm()) < 1e-14


def test_grid_conv_is_equivariant():
    spec = ConvSpec(2, 3, 3, "gaunt")
    g = torch.Generator().manual_seed(2)
    n, e, c = 5, 11, 2
    graph = kernels.make_graph(torch.randint(0, n, (e,), generator=g), torch.sort(torch.randint(0, n, (e,), generator=g))[0], n)
    x = torch.randn(n, spec.dim_in, c, generator=g, dtype=torch.float64)
    vec = torch.randn(e, 3, generator=g, dtype=torch.float64)
    w = torch.randn(e, spec.num_paths, c, generator=g, dtype=torch.float64)
    for improper in (False, True):
        rot = _rotation(3, improper)
        d_in, d_out = block_wigner_D(spec.lmax_in, rot), block_wigner_D(spec.lmax_out, rot)
        rotated = gaunt.grid_edge_conv(d_in @ x, REF.spherical_harmonics(vec @ rot.T, 3), w, graph, spec)
        expected = d_out @ gaunt.grid_edge_conv(x, REF.spherical_harmonics(vec, 3), w, graph, spec)
        assert float((rotated - expected).norm() / expected.norm()) < 1e-13


@pytest.mark.parametrize("lmax_in,l_out,nu", [(1, 1, 3), (2, 1, 3), (3, 1, 3), (3, 2, 3), (2, 2, 4)])
def test_gaunt_product_basis_is_an_orthonormal_symmetric_equivariant_subspace_of_cg(lmax_in, l_out, nu):
    u_g, u_cg = coupling_basis(lmax_in, l_out, nu, "gaunt"), coupling_basis(lmax_in, l_out, nu)
    p = u_g.shape[-1]
    assert p == len(gaunt.gaunt_multisets(lmax_in, l_out, nu))  # one sphere product per multiset
    flat, flat_cg = u_g.reshape(-1, p), u_cg.reshape(-1, u_cg.shape[-1])
    assert np.abs(flat.T @ flat - np.eye(p)).max() < 1e-13
    assert np.abs(flat - flat_cg @ (flat_cg.T @ flat)).max() < 1e-13  # inside the cg span
    for perm in itertools.permutations(range(1, nu + 1)):
        assert np.abs(np.transpose(u_g, (0,) + perm + (nu + 1,)) - u_g).max() < 1e-14
    rot = _rotation(5, improper=True).numpy()
    d_in = block_wigner_D(lmax_in, torch.from_numpy(rot)).numpy()
    d_out = block_wigner_D(l_out, torch.from_numpy(rot)).numpy()[l_out * l_out:, l_out * l_out:]
    rotated = np.einsum("ma,a...p->m...p", d_out, u_g)
    for t in range(nu):  # U[m, i1..inu] = D_out U D_in^T ... D_in^T (equivariance of every path)
        rotated = np.moveaxis(np.tensordot(rotated, d_in, axes=([1 + t], [1])), -1, 1 + t)
    assert np.abs(rotated - u_g).max() < 1e-12


@pytest.mark.parametrize("lmaxes", [(1, 1, 3), (2, 2, 3), (3, 1, 3), (2, 1, 4)])
def test_contraction_reference_on_gaunt_spec_equals_the_grid(lmaxes):
    spec = ContractionSpec(*lmaxes, tensor_product="gaunt")
    g = torch.Generator().manual_seed(3)
    n, c, s = 7, 3, 3
    x = torch.randn(n, spec.dim_in, c, generator=g, dtype=torch.float64)
    species = torch.randint(0, s, (n,), generator=g)
    w = torch.randn(s, spec.num_weights, c, generator=g, dtype=torch.float64)
    ref = REF.symmetric_contraction(x, species, w, spec)
    grid = gaunt.grid_symmetric_contraction(x, species, w, spec)
    assert float((ref - grid).norm() / ref.norm()) < 1e-13


def test_price_gaunt_cannot_fit_what_it_dropped():
    """A function in the cg product basis orthogonal to the gaunt one: cg fits it to rounding, gaunt leaves O(1)."""
    lost = gaunt.fit_residuals(3, 1, 3)
    assert lost["paths_gaunt"] < lost["paths_cg"]
    assert lost["cg"] < 1e-12
    assert lost["gaunt"] > 0.3
    same = gaunt.fit_residuals(1, 1, 3)  # lmax_in = 1: no path to lose at correlation 3
    assert same["paths_gaunt"] == same["paths_cg"] and same["gaunt"] == 0.0


def test_specs_check_the_product_and_key_on_it():
    with pytest.raises(ValueError, match="tensor_product.*'fourier'"):
        ConvSpec(1, 1, 1, "fourier")
    with pytest.raises(ValueError, match="tensor_product.*'fourier'"):
        ContractionSpec(1, 1, 2, "fourier")
    cg, ga = ContractionSpec(3, 1, 3), ContractionSpec(3, 1, 3, "gaunt")
    assert cg != ga and hash(cg) != hash(ga)
    assert ga.num_weights < cg.num_weights
    assert ConvSpec(1, 1, 1) == ConvSpec(1, 1, 1, "cg")  # the default is Clebsch-Gordan
    assert math.isclose(float(np.linalg.norm(conv_coupling(ConvSpec(0, 0, 0, "gaunt"))[0])), 1.0)


def test_even_step_chains_with_free_intermediate_weights_span_all_of_cg():
    """What the gaunt product basis gives up is the weight per intermediate degree, not parity: chains of
    even-sum (Gaunt-allowed) steps, each with its own weight, over every order of the factors, span the whole cg
    space of our natural-parity features (here lmax_in = 3, l_out = 2, nu = 3: cg 14 paths, gaunt 9)."""
    from kernels.cg import l_slice
    from kernels.coupling import _chain_tensor, _chains

    lmax_in, l_out, nu = 3, 2, 3
    k = (lmax_in + 1) ** 2
    columns = []
    for ls in itertools.combinations_with_replacement(range(lmax_in + 1), nu):
        for seq in sorted(set(itertools.permutations(ls))):
            for inter in _chains(seq, l_out, even_steps=True):
                full = np.zeros((2 * l_out + 1,) + (k,) * nu)
                full[(slice(None),) + tuple(l_slice(l) for l in seq)] = _chain_tensor(seq, inter, l_out)
                sym = sum(np.transpose(full, (0,) + tuple(1 + q for q in p)) for p in itertools.permutations(range(nu)))
                columns.append(sym.ravel())
    a = np.array(columns).T  # [M K^3, chains]
    u_cg = coupling_basis(lmax_in, l_out, nu).reshape(a.shape[0], -1)
    rank = np.linalg.matrix_rank(a, tol=1e-9 * np.linalg.norm(a, 2))
    assert rank == u_cg.shape[1] == 14
    q = np.linalg.qr(a)[0][:, :rank] if rank == a.shape[1] else np.linalg.svd(a, full_matrices=False)[0][:, :rank]
    assert np.abs(u_cg - q @ (q.T @ u_cg)).max() < 1e-10  # the same space
    assert coupling_basis(lmax_in, l_out, nu, "gaunt").shape[-1] == 9
