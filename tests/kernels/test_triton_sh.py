"""Triton spherical harmonics vs the reference: values, first and second derivatives, vec = 0, float32
error bound, determinism. CPU (interpreter) budget: ~5 s."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton
E = 100_003 if T.GPU else 37  # awkward (odd, not a block multiple)


def _vectors(n, dtype=torch.float64, seed=0):
    v = T.randn(n, 3, seed=seed, dtype=dtype)
    v[3] = 0.0  # the zero vector: Y = (1, 0, ...), zero gradient, never NaN
    return v


@pytest.mark.parametrize("lmax", [0, 1, 2, 3, 4])
def test_values_and_gradients_match_reference(lmax):
    v = _vectors(E).requires_grad_(True)
    y = T.ops().spherical_harmonics(v, lmax)
    y_ref = T.ref().spherical_harmonics(v, lmax)
    assert y.shape == (E, (lmax + 1) ** 2)
    assert T.rel_err(y, y_ref) < 1e-13
    assert torch.equal(y[3].cpu(), torch.eye(1, (lmax + 1) ** 2, dtype=torch.float64)[0])
    g = T.randn(*y.shape, seed=1, requires_grad=True)
    (gv,) = torch.autograd.grad(y, v, g, create_graph=True)
    (gv_ref,) = torch.autograd.grad(y_ref, v, g, create_graph=True)
    assert torch.isfinite(gv).all() and torch.all(gv[3] == 0)
    if lmax > 0:
        assert T.rel_err(gv, gv_ref) < 1e-12
        # second derivative (force training): the fused pullback kernel (sh.py sh_pullback), in v and in gY
        w = T.randn(E, 3, seed=2)
        h = torch.autograd.grad((gv * w).sum(), (v, g), retain_graph=True)
        h_ref = torch.autograd.grad((gv_ref * w).sum(), (v, g), retain_graph=True)
        assert torch.isfinite(h[0]).all() and torch.all(h[0][3] == 0)
        for a, b in zip(h, h_ref):
            assert T.rel_err(a, b) < 1e-11
        # third order (a pullback taken with create_graph): torch autograd over the same polynomials
        h3 = torch.autograd.grad((gv * w).sum(), v, create_graph=True)[0]
        h3_ref = torch.autograd.grad((gv_ref * w).sum(), v, create_graph=True)[0]
        t = torch.autograd.grad((h3 * w).sum(), v)[0]
        t_ref = torch.autograd.grad((h3_ref * w).sum(), v)[0]
        assert T.rel_err(t, t_ref) < 1e-9


def test_gradcheck_and_gradgradcheck():
    v = T.randn(5, 3, seed=3).requires_grad_(True)
    f = lambda x: T.ops().spherical_harmonics(x, 3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (v,), fast_mode=not T.GPU)
    assert torch.autograd.gradgradcheck(f, (v,), fast_mode=not T.GPU)


def test_float32_error_bound_and_determinism():
    v64 = _vectors(E)
    y64 = T.ref().spherical_harmonics(v64, 3)
    v = v64.float().requires_grad_(True)
    y = T.ops().spherical_harmonics(v, 3)
    assert y.dtype == torch.float32
    assert T.rel_err(y, y64) < 1e-6  # float32 rounding (eps 6e-8) of a degree-3 polynomial
    g = T.randn(*y.shape, seed=4, dtype=torch.float32)
    (gv,) = torch.autograd.grad(y, v, g)
    v64g = v64.clone().requires_grad_(True)
    (gv64,) = torch.autograd.grad(T.ref().spherical_harmonics(v64g, 3), v64g, g.double())
    assert T.rel_err(gv, gv64) < 1e-5  # includes 1/|v| of short random vectors
    y2 = T.ops().spherical_harmonics(v, 3)
    (gv2,) = torch.autograd.grad(y2, v, g)
    assert torch.equal(y, y2) and torch.equal(gv, gv2)  # bitwise run to run


def test_empty():
    v = torch.zeros(0, 3, dtype=torch.float64, device=T.DEVICE, requires_grad=True)
    y = T.ops().spherical_harmonics(v, 2)
    assert y.shape == (0, 9)
    (g,) = torch.autograd.grad(y.sum(), v)
    assert g.shape == (0, 3)
