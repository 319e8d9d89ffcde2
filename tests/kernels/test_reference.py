"""Reference ops: harmonics vs e3nn, conv / contraction vs dense oracles, O(3) equivariance, gradients to
second order, empty graphs and isolated atoms (budget: < 30 s on 2 cores)."""
import math

import pytest
import torch
from e3nn import o3  # a test dependency (pip install -e ".[test]")
from torch.autograd import gradcheck, gradgradcheck

import kernels
from kernels import ContractionSpec, ConvSpec, block_wigner_D, make_graph

ref = kernels.get_ops("reference")
DT = torch.float64


def random_orthogonal(seed: int, improper: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=DT))
    q = q * torch.sign(torch.diagonal(r))
    q = q if torch.det(q) > 0 else -q
    return -q if improper else q


def random_graph(num_nodes: int, seed: int, isolated: int = 0):
    """Random directed graph without self edges; the last `isolated` nodes have no edges at all."""
    g = torch.Generator().manual_seed(seed)
    active = num_nodes - isolated
    mask = torch.rand(active, active, generator=g) < 0.6
    mask.fill_diagonal_(False)
    receivers, senders = torch.nonzero(mask, as_tuple=True)  # row-major: sorted by receiver
    pos = torch.randn(num_nodes, 3, generator=g, dtype=DT)
    return make_graph(senders, receivers, num_nodes), pos


def rotate(d: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njc->nic", d, feats)


# ----------------------------------------------------------------------------------------------- harmonics


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_harmonics_match_e3nn(dtype, tol):
    v = torch.randn(64, 3, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 3
    for lmax in range(7):
        ours = ref.spherical_harmonics(v, lmax)
        theirs = o3.spherical_harmonics(list(range(lmax + 1)), v, normalize=True, normalization="component")
        assert ours.shape == (64, (lmax + 1) ** 2) and ours.dtype == dtype
        assert (ours - theirs).abs().max() < tol * (lmax + 1)
    norms = ref.spherical_harmonics(v.double(), 4)[:, 9:16].pow(2).sum(-1)
    assert torch.allclose(norms, torch.full_like(norms, 7.0))


def test_harmonics_at_zero_vector_are_finite_with_zero_gradient():
    v = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.9]], dtype=DT, requires_grad=True)
    y = ref.spherical_harmonics(v, 5)
    assert torch.equal(y[0], torch.nn.functional.one_hot(torch.tensor(0), 36).to(DT))
    (g,) = torch.autograd.grad((y * torch.arange(36, dtype=DT)).sum(), v, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), v)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()
    assert torch.equal(g[0], torch.zeros(3, dtype=DT)) and torch.equal(gg[0], torch.zeros(3, dtype=DT))
    assert ref.spherical_harmonics(torch.zeros(0, 3), 3).shape == (0, 16)


def test_harmonics_gradients():
    v = torch.randn(5, 3, dtype=DT, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert gradcheck(lambda x: ref.spherical_harmonics(x, 4), (v,))
    assert gradgradcheck(lambda x: ref.spherical_harmonics(x, 4), (v,))


# ----------------------------------------------------------------------------------------------- edge conv


def dense_conv(x, sh, w, graph, spec):
    """Oracle from e3nn's wigner_3j and the documented normalisation (cg.py)."""
    out = x.new_zeros(graph.num_nodes, spec.dim_out, x.shape[-1])
    count = {l3: sum(1 for p in spec.paths if p[2] == l3) for l3 in range(spec.lmax_out + 1)}
    xs = x[graph.senders]
    for p, (l1, l2, l3) in enumerate(spec.paths):
        cg = o3.wigner_3j(l1, l2, l3, dtype=x.dtype) * math.sqrt((2 * l3 + 1) / count[l3])
        msg = torch.einsum("abd,eac,eb,ec->edc", cg, xs[:, l1 * l1:(l1 + 1) ** 2], sh[:, l2 * l2:(l2 + 1) ** 2], w[:, p])
        out[:, l3 * l3:(l3 + 1) ** 2] += torch.zeros_like(out[:, l3 * l3:(l3 + 1) ** 2]).index_add(0, graph.receivers, msg)
    return out


@pytest.mark.parametrize("spec", [ConvSpec(1, 3, 1), ConvSpec(3, 3, 3), ConvSpec(0, 2, 2), ConvSpec(2, 1, 0)])
def test_edge_conv_matches_dense_oracle(spec):
    graph, pos = random_graph(9, seed=2, isolated=2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, spec.dim_in, 4, dtype=DT, generator=g)
    sh = ref.spherical_harmonics(pos[graph.senders] - pos[graph.receivers], spec.lmax_sh)
    w = torch.randn(graph.num_edges, spec.num_paths, 4, dtype=DT, generator=g)
    out = ref.edge_conv(x, sh, w, graph, spec)
    assert out.shape == (9, spec.dim_out, 4)
    assert torch.allclose(out, dense_conv(x, sh, w, graph, spec), atol=1e-12)
    assert torch.equal(out[-2:], torch.zeros_like(out[-2:]))  # isolated atoms receive nothing


@pytest.mark.parametrize("improper", [False, True])
def test_edge_conv_equivariance(improper):
    spec = ConvSpec(2, 3, 3)
    graph, pos = random_graph(8, seed=4, isolated=1)
    rot = random_orthogonal(5, improper)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, spec.dim_in, 3, dtype=DT, generator=g)
    w = torch.randn(graph.num_edges, spec.num_paths, 3, dtype=DT, generator=g)

    def run(x, pos):
        sh = ref.spherical_harmonics(pos[graph.senders] - pos[graph.receivers], spec.lmax_sh)
        return ref.edge_conv(x, sh, w, graph, spec)

    out = run(x, pos)
    rotated = run(rotate(block_wigner_D(spec.lmax_in, rot), x), pos @ rot.T)
    expect = rotate(block_wigner_D(spec.lmax_out, rot), out)
    assert (rotated - expect).abs().max() < 1e-10 * expect.abs().max()


def test_edge_conv_empty_graph_and_gradients():
    spec = ConvSpec(1, 2, 1)
    empty = make_graph(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3)
    x = torch.randn(3, 4, 2, dtype=DT, requires_grad=True)
    out = ref.edge_conv(x, torch.zeros(0, 9, dtype=DT), torch.zeros(0, spec.num_paths, 2, dtype=DT), empty, spec)
    assert out.shape == (3, 4, 2) and not out.any()
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    nothing = make_graph(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0)
    assert ref.edge_conv(x[:0], torch.zeros(0, 9, dtype=DT), torch.zeros(0, 5, 2, dtype=DT), nothing, spec).shape == (0, 4, 2)

    graph, _ = random_graph(4, seed=7, isolated=1)
    g = torch.Generator().manual_seed(8)
    args = (
        torch.randn(4, spec.dim_in, 2, dtype=DT, generator=g).requires_grad_(),
        torch.randn(graph.num_edges, spec.dim_sh, dtype=DT, generator=g).requires_grad_(),
        torch.randn(graph.num_edges, spec.num_paths, 2, dtype=DT, generator=g).requires_grad_(),
    )

    def fn(x, sh, w):
        return ref.edge_conv(x, sh, w, graph, spec)

    assert gradcheck(fn, args)
    assert gradgradcheck(fn, args)


def test_force_training_pattern_second_order():
    # E = sum conv(SH(vec)); F = -dE/dpos with create_graph; d(|F|^2)/d(weights) by autograd = finite diff
    spec = ConvSpec(1, 2, 0)
    graph, pos = random_graph(5, seed=9)
    g = torch.Generator().manual_seed(10)
    x = torch.randn(5, spec.dim_in, 2, dtype=DT, generator=g)
    w = torch.randn(graph.num_edges, spec.num_paths, 2, dtype=DT, generator=g).requires_grad_()

    def loss(w):
        p = pos.clone().requires_grad_()
        sh = ref.spherical_harmonics(p[graph.senders] - p[graph.receivers], spec.lmax_sh)
        (f,) = torch.autograd.grad(ref.edge_conv(x, sh, w, graph, spec).sum(), p, create_graph=True)
        return f.pow(2).sum()

    assert gradcheck(loss, (w,))


# ----------------------------------------------------------------------------------------------- contraction


def dense_contraction(x, species, weights, spec):
    """Oracle: contract the dense U tensors one input at a time, node by node."""
    out = x.new_zeros(x.shape[0], spec.dim_out, x.shape[-1])
    for l_out, nu, offset, count in spec.blocks:
        if count == 0:
            continue
        u = torch.tensor(kernels.contraction_coupling(spec, l_out, nu), dtype=x.dtype)
        t = u.unsqueeze(0).unsqueeze(0).expand(x.shape[0], x.shape[-1], *u.shape)  # [N, C, M, K.., P]
        for _ in range(nu):
            t = torch.einsum("ncmi...,nic->ncm...", t, x)
        out[:, l_out * l_out:(l_out + 1) ** 2] += torch.einsum("ncmp,npc->nmc", t, weights[species, offset:offset + count])
    return out


@pytest.mark.parametrize("spec", [ContractionSpec(1, 1, 3), ContractionSpec(3, 1, 3), ContractionSpec(2, 2, 2),
                                  ContractionSpec(0, 1, 3), ContractionSpec(2, 0, 1)])
def test_symmetric_contraction_matches_dense_oracle(spec):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(7, spec.dim_in, 3, dtype=DT, generator=g)
    species = torch.tensor([2, 0, 2, 2, 0, 0, 2])  # species 1 absent
    weights = torch.randn(3, spec.num_weights, 3, dtype=DT, generator=g)
    out = ref.symmetric_contraction(x, species, weights, spec)
    assert out.shape == (7, spec.dim_out, 3)
    assert torch.allclose(out, dense_contraction(x, species, weights, spec), atol=1e-11)


@pytest.mark.parametrize("improper", [False, True])
def test_symmetric_contraction_equivariance(improper):
    spec = ContractionSpec(3, 3, 3)
    rot = random_orthogonal(12, improper)
    g = torch.Generator().manual_seed(13)
    x = torch.randn(5, spec.dim_in, 2, dtype=DT, generator=g)
    species = torch.tensor([0, 1, 1, 0, 1])
    weights = torch.randn(2, spec.num_weights, 2, dtype=DT, generator=g)
    out = ref.symmetric_contraction(x, species, weights, spec)
    rotated = ref.symmetric_contraction(rotate(block_wigner_D(3, rot), x), species, weights, spec)
    expect = rotate(block_wigner_D(3, rot), out)
    assert (rotated - expect).abs().max() < 1e-10 * expect.abs().max()


def test_symmetric_contraction_gradients_and_edge_cases():
    spec = ContractionSpec(1, 1, 3)
    g = torch.Generator().manual_seed(14)
    x = torch.randn(3, spec.dim_in, 2, dtype=DT, generator=g).requires_grad_()
    w = torch.randn(2, spec.num_weights, 2, dtype=DT, generator=g).requires_grad_()
    species = torch.tensor([1, 0, 1])

    def fn(x, w):
        return ref.symmetric_contraction(x, species, w, spec)

    assert gradcheck(fn, (x, w))
    assert gradgradcheck(fn, (x, w))
    assert ref.symmetric_contraction(x[:0], species[:0], w, spec).shape == (0, 4, 2)
    with pytest.raises(ValueError, match=r"species must lie in \[0, 2\)"):
        ref.symmetric_contraction(x, torch.tensor([0, 2, 1]), w, spec)
    with pytest.raises(ValueError, match="weights must be"):
        ref.symmetric_contraction(x, species, w[:, 1:], spec)


def test_symmetric_contraction_caches_couplings_of_frozen_weights_only():
    """Frozen weights: the coupled weights are cached, and an in-place change of the weights is seen. Trainable
    weights: never cached (also under no_grad), and gradients flow."""
    from kernels import reference

    spec = ContractionSpec(2, 1, 3)
    g = torch.Generator().manual_seed(15)
    x = torch.randn(6, spec.dim_in, 4, dtype=DT, generator=g).requires_grad_()
    species = torch.tensor([0, 1, 1, 0, 1, 0])
    w = torch.randn(2, spec.num_weights, 4, dtype=DT, generator=g)
    expected = dense_contraction(x.detach(), species, w, spec)
    frozen = w.clone()
    for _ in range(2):  # the second call reads the cache
        out = ref.symmetric_contraction(x, species, frozen, spec)
        assert torch.allclose(out, expected, atol=1e-11) and id(frozen) in reference._UW_CACHE
    with torch.no_grad():
        frozen.mul_(2.0)  # in place: a new version, the cache entry is stale
    out = ref.symmetric_contraction(x, species, frozen, spec)
    assert torch.allclose(out, dense_contraction(x.detach(), species, frozen, spec), atol=1e-11)
    assert torch.autograd.grad(out.sum(), x)[0].shape == x.shape  # forces through the cached couplings
    wid = id(frozen)
    del frozen
    assert wid not in reference._UW_CACHE  # the entry died with its tensor
    trainable = w.clone().requires_grad_()
    with torch.no_grad():
        ref.symmetric_contraction(x, species, trainable, spec)
    out = ref.symmetric_contraction(x, species, trainable, spec)
    assert id(trainable) not in reference._UW_CACHE
    assert torch.autograd.grad(out.sum(), trainable)[0].abs().sum() > 0


def test_activations_stay_order_one():
    # unit-variance inputs and weights: outputs have O(1) spread (documented path normalisation)
    g = torch.Generator().manual_seed(15)
    spec = ContractionSpec(3, 1, 3)
    x = torch.randn(400, spec.dim_in, 4, dtype=DT, generator=g)
    w = torch.randn(1, spec.num_weights, 4, dtype=DT, generator=g)
    out = ref.symmetric_contraction(x, torch.zeros(400, dtype=torch.long), w, spec)
    assert 0.3 < out.std().item() < 5.0
    cspec = ConvSpec(3, 3, 3)
    graph, pos = random_graph(30, seed=16)
    sh = ref.spherical_harmonics(pos[graph.senders] - pos[graph.receivers], 3)
    xs = torch.randn(30, cspec.dim_in, 4, dtype=DT, generator=g)
    ws = torch.randn(graph.num_edges, cspec.num_paths, 4, dtype=DT, generator=g)
    per_edge = ref.edge_conv(xs, sh, ws, graph, cspec) / math.sqrt(graph.num_edges / 30)
    assert 0.3 < per_edge.std().item() < 3.0
