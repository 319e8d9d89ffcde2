"""Triton edge_conv vs the reference: values, first and second derivatives (float64), gradcheck and
gradgradcheck, empty graphs and isolated atoms, float32 error bound, bitwise determinism.
CPU (interpreter) budget: ~20 s on 2 cores; on a GPU the same tests run at real sizes."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import kernels

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton
# (nodes, edges, channels, isolated nodes): awkward sizes (odd channels, not block multiples)
N, E, C, ISO = (3001, 60_017, 33, 50) if T.GPU else (9, 23, 5, 2)
SPECS = [(0, 0, 0), (1, 2, 1), (1, 3, 3), (2, 3, 3)] + ([(3, 3, 3)] if T.GPU else [])


def _inputs(spec, dtype=torch.float64, seed=0, graph=None):
    graph = graph if graph is not None else T.random_graph(N, E, seed=seed, isolated=ISO)
    e = graph.senders.shape[0]
    h = T.randn(N, spec.dim_in, C, seed=seed + 1, dtype=dtype, requires_grad=True)
    y = T.randn(e, spec.dim_sh, seed=seed + 2, dtype=dtype, requires_grad=True)
    w = T.randn(e, spec.num_paths, C, seed=seed + 3, dtype=dtype, requires_grad=True)
    return h, y, w, graph


def _derivatives(ops, spec, h, y, w, graph):
    """out, first derivatives (h, y, w) for a random cotangent, second derivatives of a random
    functional of the first ones (the force-training pattern)."""
    out = ops.edge_conv(h, y, w, graph, spec)
    g = T.randn(*out.shape, seed=11, dtype=out.dtype)
    first = torch.autograd.grad(out, (h, y, w), g, create_graph=True)
    probes = [T.randn(*f.shape, seed=12 + i, dtype=f.dtype) for i, f in enumerate(first)]
    scalar = sum((f * p).sum() for f, p in zip(first, probes))
    second = torch.autograd.grad(scalar, (h, y, w), allow_unused=True)
    return out, first, second


@pytest.mark.parametrize("lmaxes", SPECS, ids=lambda s: "l{}-{}-{}".format(*s))
def test_matches_reference_to_second_order(lmaxes):
    spec = kernels.ConvSpec(*lmaxes)
    h, y, w, graph = _inputs(spec)
    out, first, second = _derivatives(T.ops(), spec, h, y, w, graph)
    out_r, first_r, second_r = _derivatives(T.ref(), spec, h, y, w, graph)
    assert T.rel_err(out, out_r) < 1e-13
    assert torch.all(out[-ISO:] == 0)  # isolated atoms receive nothing
    for a, b in zip(first, first_r):
        assert T.rel_err(a, b) < 1e-13
    for a, b in zip(second, second_r):
        if b is None:
            assert a is None or torch.all(a == 0)
        else:
            assert T.rel_err(a, b) < 1e-12


def test_gradcheck_and_gradgradcheck():
    spec = kernels.ConvSpec(1, 1, 1)
    graph = T.random_graph(3, 5, seed=3, isolated=1)
    g = torch.Generator().manual_seed(4)
    args = [torch.randn(3, spec.dim_in, 2, generator=g, dtype=torch.float64),
            torch.randn(5, spec.dim_sh, generator=g, dtype=torch.float64),
            torch.randn(5, spec.num_paths, 2, generator=g, dtype=torch.float64)]
    args = [a.to(T.DEVICE).requires_grad_(True) for a in args]
    f = lambda h, y, w: T.ops().edge_conv(h, y, w, graph, spec)  # noqa: E731
    assert torch.autograd.gradcheck(f, args, fast_mode=not T.GPU)
    assert torch.autograd.gradgradcheck(f, args, fast_mode=not T.GPU)


def test_zero_edges():
    spec = kernels.ConvSpec(1, 2, 2)
    empty = torch.zeros(0, dtype=torch.int64, device=T.DEVICE)
    graph = kernels.make_graph(empty, empty, 4)
    h = T.randn(4, spec.dim_in, 3, requires_grad=True)
    y = torch.zeros(0, spec.dim_sh, dtype=torch.float64, device=T.DEVICE, requires_grad=True)
    w = torch.zeros(0, spec.num_paths, 3, dtype=torch.float64, device=T.DEVICE, requires_grad=True)
    out = T.ops().edge_conv(h, y, w, graph, spec)
    assert out.shape == (4, spec.dim_out, 3) and torch.all(out == 0)
    gh, gy, gw = torch.autograd.grad(out.sum(), (h, y, w))
    assert torch.all(gh == 0) and gy.shape == y.shape and gw.shape == w.shape


def test_float32_error_bound_and_determinism():
    spec = kernels.ConvSpec(1, 3, 3)
    h, y, w, graph = _inputs(spec, seed=5)
    out64, first64, _ = _derivatives(T.ref(), spec, h, y, w, graph)
    args32 = [t.detach().float().requires_grad_(True) for t in (h, y, w)]
    runs = []
    for _ in range(2):
        out = T.ops().edge_conv(*args32, graph, spec)
        g = T.randn(*out.shape, seed=11, dtype=torch.float32)
        first = torch.autograd.grad(out, args32, g)
        runs.append((out, first))
    (out, first), (out2, first2) = runs
    assert out.dtype == torch.float32
    # float32 bound: sums of O(degree * paths) products, relative error a few eps (6e-8)
    assert T.rel_err(out, out64) < 2e-6
    for a, b in zip(first, first64):
        assert T.rel_err(a, b) < 2e-6
    assert torch.equal(out, out2)  # bitwise, run to run: no atomics, fixed summation order
    for a, b in zip(first, first2):
        assert torch.equal(a, b)


def test_force_pass_and_its_backward_match_the_reference():
    """The force pass of training: autograd.grad(E, Y) with create_graph while h and w require grad, then the
    backward of a loss on dE/dY to (h, w). Every input that requires grad gets its gradient (no private engine
    query decides which are used), and both orders match the float64 reference."""
    spec = kernels.ConvSpec(1, 2, 1)
    h, y, w, graph = _inputs(spec)

    def force_train(ops):
        out = ops.edge_conv(h, y, w, graph, spec)
        g = T.randn(*out.shape, seed=11, dtype=out.dtype)
        (dy,) = torch.autograd.grad(out, y, g, create_graph=True)
        return dy, torch.autograd.grad((dy * dy).sum(), (h, w))

    dy, second = force_train(T.ops())
    dy_r, second_r = force_train(T.ref())
    assert T.rel_err(dy, dy_r) < 1e-13
    for a, b in zip(second, second_r):
        assert T.rel_err(a, b) < 1e-12


@pytest.mark.parametrize("mode", ["all", "noY", "off"])
def test_sender_pass_with_several_channel_blocks(mode, monkeypatch, request):
    """The fused sender pass sums dY over channel blocks (37 channels: two blocks of 32); each block's part
    is written separately and summed in a fixed order, so it matches the reference and repeats bitwise.
    The same holds with the fused pass used only without dY, or not at all (TUMBLER_CONV_SENDER)."""
    from kernels.triton import conv as triton_conv
    monkeypatch.setenv("TUMBLER_CONV_SENDER", mode)
    triton_conv.knobs_changed()  # knobs are read once per process
    request.addfinalizer(triton_conv.knobs_changed)
    spec = kernels.ConvSpec(1, 2, 2)
    graph = T.random_graph(7, 19, seed=5, isolated=1)
    h = T.randn(7, spec.dim_in, 37, seed=1, requires_grad=True)
    y = T.randn(19, spec.dim_sh, seed=2, requires_grad=True)
    w = T.randn(19, spec.num_paths, 37, seed=3, requires_grad=True)
    g = T.randn(7, spec.dim_out, 37, seed=4)
    first = torch.autograd.grad(T.ops().edge_conv(h, y, w, graph, spec), (h, y, w), g)
    again = torch.autograd.grad(T.ops().edge_conv(h, y, w, graph, spec), (h, y, w), g)
    ref = torch.autograd.grad(T.ref().edge_conv(h, y, w, graph, spec), (h, y, w), g)
    for a, b, r in zip(first, again, ref):
        assert torch.equal(a, b)
        assert T.rel_err(a, r) < 1e-13


def test_backward_under_activation_checkpointing():
    """The chunked model step recomputes each conv under torch.utils.checkpoint (non-reentrant), which lets a
    backward unpack its saved tensors only once; forces and the force-training gradient stay exact."""
    from torch.utils.checkpoint import checkpoint
    spec = kernels.ConvSpec(1, 2, 1)
    h, y, w, graph = _inputs(spec)

    def force_train(ops, wrap):
        out = wrap(lambda a, b, c: ops.edge_conv(a, b, c, graph, spec), h, y, w)
        g = T.randn(*out.shape, seed=11, dtype=out.dtype)
        first = torch.autograd.grad(out, (h, y), g, create_graph=True)
        return first, torch.autograd.grad(sum((f * f).sum() for f in first), (h, y, w))

    got = force_train(T.ops(), lambda f, *a: checkpoint(f, *a, use_reentrant=False, preserve_rng_state=False))
    want = force_train(T.ref(), lambda f, *a: f(*a))
    for a, b in zip(got[0] + got[1], want[0] + want[1]):
        assert T.rel_err(a, b) < 1e-12
