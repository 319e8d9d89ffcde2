"""Triton ops on "gaunt" specs vs the S2-grid reference (kernels/gaunt.py): values and first and second
derivatives (float64), gradcheck and gradgradcheck. Interpreter at tiny sizes on CPU, real sizes on a GPU
(`pytest tests/kernels/test_gaunt_triton.py` on the GPU machine runs them there).
The fused kernels are generated from the coupling tables of the spec, so they run either product unchanged."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import kernels
from kernels import gaunt

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton
N, E, C, ISO = (2001, 40_013, 33, 20) if T.GPU else (7, 19, 3, 1)
N_SC, S = (5003, 4) if T.GPU else (9, 3)


def _second_order(fn, inputs, seed):
    """fn(*inputs), its first derivatives for a random cotangent (create_graph), and the derivatives of a random
    functional of those (the force-training pattern)."""
    out = fn(*inputs)
    g = T.randn(*out.shape, seed=seed, dtype=out.dtype)
    first = torch.autograd.grad(out, inputs, g, create_graph=True)
    probes = [T.randn(*f.shape, seed=seed + 1 + i, dtype=f.dtype) for i, f in enumerate(first)]
    second = torch.autograd.grad(sum((f * p).sum() for f, p in zip(first, probes)), inputs, allow_unused=True)
    return [out, *first, *second]


@pytest.mark.parametrize("lmaxes", [(1, 3, 3), (2, 2, 2)] + ([(3, 3, 3), (2, 3, 3)] if T.GPU else []),
                         ids=lambda s: "l{}-{}-{}".format(*s))
def test_conv_matches_grid_to_second_order(lmaxes):
    spec = kernels.ConvSpec(*lmaxes, tensor_product="gaunt")
    graph = T.random_graph(N, E, seed=1, isolated=ISO)
    h = T.randn(N, spec.dim_in, C, seed=2, requires_grad=True)
    y = T.randn(E, spec.dim_sh, seed=3, requires_grad=True)
    w = T.randn(E, spec.num_paths, C, seed=4, requires_grad=True)
    ours = _second_order(lambda *a: T.ops().edge_conv(*a, graph, spec), (h, y, w), 10)
    grid = _second_order(lambda *a: gaunt.grid_edge_conv(*a, graph, spec), (h, y, w), 10)
    for a, b in zip(ours, grid):
        if b is None:
            assert a is None or torch.all(a == 0)
        else:
            assert T.rel_err(a, b) < 1e-12


def test_conv_gradcheck_and_gradgradcheck():
    spec = kernels.ConvSpec(1, 1, 1, "gaunt")
    graph = T.random_graph(3, 5, seed=3, isolated=1)
    args = [T.randn(3, spec.dim_in, 2, seed=5, requires_grad=True), T.randn(5, spec.dim_sh, seed=6, requires_grad=True),
            T.randn(5, spec.num_paths, 2, seed=7, requires_grad=True)]
    f = lambda h, y, w: T.ops().edge_conv(h, y, w, graph, spec)  # noqa: E731
    assert torch.autograd.gradcheck(f, args, fast_mode=not T.GPU)
    assert torch.autograd.gradgradcheck(f, args, fast_mode=not T.GPU)


WIRING = ("the Triton contraction ran another form than the spec's: kernels autograd's planned_contraction must "
          "build it with spec.tensor_product (docs/tensor_products.md, wiring note)")


def _check_forward(spec, species, x, w):
    """The forward alone first, so that a contraction form built without the product fails with its reason."""
    ours = T.ops().symmetric_contraction(x.detach(), species, w.detach(), spec)
    assert T.rel_err(ours, gaunt.grid_symmetric_contraction(x.detach(), species, w.detach(), spec)) < 1e-12, WIRING


def _species(n, seed=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, S - 1, (n,), generator=g).to(T.DEVICE)  # species S-1 is absent


@pytest.mark.parametrize("lmaxes", [(2, 1, 3), (3, 1, 3)],  # (3, 2, 3)'s second order compiles for minutes
                         ids=lambda s: "in{}-out{}-corr{}".format(*s))
def test_contraction_matches_grid_to_second_order(lmaxes):
    spec = kernels.ContractionSpec(*lmaxes, tensor_product="gaunt")
    assert spec.num_weights < kernels.ContractionSpec(*lmaxes).num_weights  # a real subspace, not the cg basis
    species = _species(N_SC)
    x = T.randn(N_SC, spec.dim_in, C, seed=9, requires_grad=True)
    w = T.randn(S, spec.num_weights, C, seed=10, requires_grad=True)
    _check_forward(spec, species, x, w)
    ours = _second_order(lambda a, b: T.ops().symmetric_contraction(a, species, b, spec), (x, w), 20)
    grid = _second_order(lambda a, b: gaunt.grid_symmetric_contraction(a, species, b, spec), (x, w), 20)
    for a, b in zip(ours, grid):
        assert T.rel_err(a, b) < 1e-12


def test_contraction_gradcheck_and_gradgradcheck():
    spec = kernels.ContractionSpec(2, 1, 3, "gaunt")
    species = _species(4)
    x = T.randn(4, spec.dim_in, 2, seed=11, requires_grad=True)
    w = T.randn(S, spec.num_weights, 2, seed=12, requires_grad=True)
    _check_forward(spec, species, x, w)
    f = lambda a, b: T.ops().symmetric_contraction(a, species, b, spec)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w), fast_mode=not T.GPU)
    assert torch.autograd.gradgradcheck(f, (x, w), fast_mode=not T.GPU)
