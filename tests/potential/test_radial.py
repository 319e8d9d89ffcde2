"""Radial basis, envelope and irreps bookkeeping."""

import math

import torch

from potential.irreps import Irreps, l_slice, num_components
from potential.radial import BesselBasis, PolynomialEnvelope, RadialMLP


def test_bessel_values_and_origin():
    basis = BesselBasis(r_max=5.0, num_basis=4)
    r = torch.tensor([0.0, 1e-9, 1.3, 5.0], dtype=torch.float64, requires_grad=True)
    b = basis(r)
    n = torch.arange(1, 5, dtype=torch.float64)
    expected = math.sqrt(2 / 5.0) * torch.sin(n * math.pi * 1.3 / 5.0) / 1.3
    assert torch.allclose(b[2], expected, rtol=1e-14)
    assert torch.allclose(b[0], math.sqrt(2 / 5.0) * n * math.pi / 5.0)  # the r -> 0 limit
    assert torch.allclose(b[0], b[1], rtol=1e-12)
    b.sum().backward()
    assert torch.isfinite(r.grad).all()


def test_envelope_exact_zero_and_smooth():
    env = PolynomialEnvelope(r_max=4.0, p=6)
    r = torch.tensor([0.0, 2.0, 4.0, 4.5, 100.0], dtype=torch.float64, requires_grad=True)
    f = env(r)
    assert f[0] == 1.0 and f[2] == 0.0 and f[3] == 0.0 and f[4] == 0.0
    assert 0 < f[1] < 1
    (g,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), r)
    assert g[3] == 0 and h[3] == 0  # beyond r_max: flat
    x = torch.tensor([4.0 - 1e-4], dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(env(x).sum(), x, create_graph=True)
    (hx,) = torch.autograd.grad(gx.sum(), x)
    assert abs(env(x).item()) < 1e-9 and abs(gx.item()) < 1e-6 and abs(hx.item()) < 1e-2  # f, f', f'' -> 0


def test_radial_mlp_shape_and_zero_input():
    mlp = RadialMLP(num_basis=6, hidden=[8, 8], num_paths=3, channels=5).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    x[2] = 0.0
    w = mlp(x)
    assert w.shape == (7, 3, 5)
    assert (w[2] == 0).all()  # bias-free: an edge beyond r_max (input 0) gets exactly zero weights
    assert w[0].abs().sum() > 0


def test_irreps():
    ir = Irreps(lmax=2, channels=8)
    assert ir.dim == 9 == num_components(2) and ir.ls == (0, 1, 2)
    assert ir.slices[1] == l_slice(1) == slice(1, 4)
    assert str(ir) == "8x0e+8x1o+8x2e"
    assert ir.component_l().tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert ir.shape(5) == (5, 9, 8)
