"""Fused SiLU MLP (kernels/triton/mlp.py) vs the reference: values, the fused input pullback (frozen weights,
no create_graph), the autograd pullbacks (weight gradients, force-training second order), gradcheck and
gradgradcheck, awkward widths and row counts, zero rows, float32 bound, determinism. CPU budget: ~5 s."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton
E = 40_001 if T.GPU else 37  # awkward (odd, not a block multiple)


def _weights(widths, seed=1, dtype=torch.float64, requires_grad=False):
    return [T.randn(a, b, seed=seed + l, dtype=dtype, requires_grad=requires_grad) * (1.0 / a**0.5)
            for l, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]


@pytest.mark.parametrize("widths", [(8, 64, 64, 64), (5, 7, 33), (16, 16), (3, 70, 20)])
def test_values_and_fused_input_pullback(widths):
    x = T.randn(E, widths[0], seed=0, requires_grad=True)
    ws = [w.detach() for w in _weights(widths)]
    h, h_ref = T.ops().silu_mlp(x, ws), T.ref().silu_mlp(x, ws)
    assert h.shape == (E, widths[-1]) and T.rel_err(h, h_ref) < 1e-13
    g = T.randn(E, widths[-1], seed=5)
    (gx,) = torch.autograd.grad(h, x, g)  # frozen weights, no create_graph: the fused pullback kernel
    (gx_ref,) = torch.autograd.grad(h_ref, x, g)
    assert T.rel_err(gx, gx_ref) < 1e-13


def test_weight_gradients_and_second_order():
    """Training pullbacks (weights need gradients; force training differentiates the input pullback)."""
    widths = (8, 32, 32)
    x = T.randn(E, 8, seed=0, requires_grad=True)
    ws = [w.detach().requires_grad_(True) for w in _weights(widths)]
    g = T.randn(E, 32, seed=5)
    out = []
    for op in (T.ops(), T.ref()):
        (gx,) = torch.autograd.grad(op.silu_mlp(x, ws), x, g, create_graph=True)
        out.append(torch.autograd.grad((gx * gx).sum(), [x, *ws]))  # second order in x and in every weight
        out.append(torch.autograd.grad(op.silu_mlp(x, ws), ws, g))  # first order in the weights
    for a, b in zip(out[0] + out[1], out[2] + out[3]):
        assert T.rel_err(a, b) < 1e-12


def test_gradcheck_and_gradgradcheck():
    x = T.randn(5, 3, seed=3, requires_grad=True)
    ws = _weights((3, 16, 4), requires_grad=True)
    ws = [w.detach().requires_grad_(True) for w in ws]
    f = lambda x, *ws: T.ops().silu_mlp(x, ws)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, *ws), fast_mode=not T.GPU)
    assert torch.autograd.gradgradcheck(f, (x, *ws), fast_mode=not T.GPU)
    frozen = lambda x: T.ops().silu_mlp(x, [w.detach() for w in ws])  # noqa: E731  (the fused pullback)
    assert torch.autograd.gradcheck(frozen, (x,), fast_mode=not T.GPU)


def test_zero_rows_no_layers_and_bad_shapes():
    ws = [w.detach() for w in _weights((8, 16, 4))]
    x = T.randn(0, 8, requires_grad=True)
    h = T.ops().silu_mlp(x, ws)
    assert h.shape == (0, 4)
    assert torch.autograd.grad(h.sum(), x)[0].shape == (0, 8)
    x = T.randn(3, 8)
    assert T.ops().silu_mlp(x, []) is x
    with pytest.raises(ValueError, match="weight 1"):
        T.ops().silu_mlp(x, [ws[0], ws[0]])


def test_float32_error_bound_and_determinism():
    widths = (8, 64, 64, 64)
    x64 = T.randn(E, 8, seed=0)
    ws64 = [w.detach() for w in _weights(widths)]
    x32, ws32 = x64.float().requires_grad_(True), [w.float() for w in ws64]
    h = T.ops().silu_mlp(x32, ws32)
    assert T.rel_err(h, T.ref().silu_mlp(x64, ws64)) < 1e-5  # float32 (IEEE products, no TF32) vs float64
    g = T.randn(E, 64, seed=5, dtype=torch.float32)
    gx = torch.autograd.grad(h, x32, g)[0]
    gx_ref = torch.autograd.grad(T.ref().silu_mlp(x64.requires_grad_(True), ws64), x64, g.double())[0]
    assert T.rel_err(gx, gx_ref) < 1e-5
    assert torch.equal(T.ops().silu_mlp(x32, ws32), h)
    assert torch.equal(torch.autograd.grad(T.ops().silu_mlp(x32, ws32), x32, g)[0], gx)
