"""The conv launchers' plans (kernels/triton/conv.py `Problem`, launch.py `Direct`): a problem seen twice is then
launched through its compiled kernel's launcher with nothing looked up but the plan, and with the same arguments
the full path gives it. Stand-in kernels record every launch, so this runs on CPU (no GPU or compiler needed)."""
from __future__ import annotations

import pytest
import torch

import kernels
from tests.kernels._triton_common import requires_triton

pytestmark = requires_triton


class Compiled:
    function, packed_metadata = "function", "packed"

    def __init__(self, calls):
        self.calls = calls

    def run(self, *args):
        self.calls.append(("direct",) + args)

    def launch_metadata(self, *args):
        return "metadata"


class Kernel:
    """Records its launches (through Triton: "triton"; its compiled launcher: "direct") and warm-ups."""

    def __init__(self, arg_names, calls):
        self.arg_names, self.calls = arg_names, calls

    def __getitem__(self, grid):
        return lambda *args, **meta: self.calls.append(("triton", grid, args, meta)) or Compiled(self.calls)

    def warmup(self, *args, grid, **meta):
        self.calls.append(("warmup", grid, args, meta))


class Driver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 77


@pytest.fixture
def conv(monkeypatch):
    """kernels.triton.conv with stand-in receiver and sender kernels, no tuning, empty plans; -> (module, calls)."""
    from triton.runtime import driver
    from kernels.triton import conv, launch, tuning
    calls = []
    recv = Kernel(["h", "Y", "R", "out", "ptr", "ptr2", "senders", "C", "BE", "BC", "USE_PERM"], calls)
    sender = Kernel(["h", "g", "Y", "R", "dh", "dY", "dR", "order", "ptr", "perm", "receivers", "E", "C", "BE", "BC",
                     "NEED_H", "NEED_Y", "NEED_R"], calls)
    monkeypatch.setattr(conv, "_recv_kernel", lambda tab: recv)
    monkeypatch.setattr(conv, "_sender_kernel", lambda tab: sender)
    monkeypatch.setattr(driver, "_active", Driver())  # Triton's active driver (set_active; its reset needs a GPU)
    monkeypatch.setattr(launch, "_DIRECT", {})
    monkeypatch.setenv("TUMBLER_AUTOTUNE", "0")
    tuning.knobs_changed()
    yield conv, calls
    tuning.knobs_changed()


def _problem(C=32):
    spec = kernels.ConvSpec(1, 2, 2)
    graph = kernels.make_graph(torch.tensor([1, 2, 0, 2, 0]), torch.tensor([0, 0, 1, 1, 2]), 3)
    h, Y, R = torch.randn(3, 4, C), torch.randn(5, 9), torch.randn(5, spec.num_paths, C)
    return spec, graph, h, Y, R


def test_a_problem_seen_twice_is_launched_through_its_plan(conv):
    conv, calls = conv
    spec, graph, h, Y, R = _problem()
    tab = conv.table_for(1, 2, 2)
    outs = [conv.conv_recv(h, Y, R, graph, tab) for _ in range(3)]
    assert [c[0] for c in calls] == ["triton", "direct", "direct"]
    full, planned = calls[1], calls[2]  # the second call through launch(), the third through its plan
    assert planned[:10] == full[:10]  # grid, stream, kernel, no hooks
    addresses = [t.data_ptr() for t in (h, Y, R)]
    assert list(full[10:13]) == list(planned[10:13]) == addresses
    assert full[13] == outs[1].data_ptr() and planned[13] == outs[2].data_ptr()
    assert planned[14:] == full[14:]  # graph addresses, C, constexprs
    assert planned[14:17] == (graph.recv_ptr.data_ptr(), graph.recv_ptr.data_ptr(), graph.senders.data_ptr())

    g = torch.randn(3, 9, 32)
    got = [conv.conv_sender(h, Y, R, g, graph, tab, True, True) for _ in range(3)]
    assert [c[0] for c in calls[3:]] == ["triton", "direct", "direct"]
    full, planned = calls[4], calls[5]
    dh, dY, dR = got[2]
    assert planned[:10] == full[:10] and planned[17:] == full[17:]
    assert planned[10:21] == tuple(t.data_ptr() for t in (h, g, Y, R, dh, dY, dR, graph.send_order, graph.send_ptr,
                                                         graph.send_perm, graph.receivers))
    assert dh.shape == h.shape and dY.shape == Y.shape and dR.shape == R.shape


def test_what_the_plan_cannot_launch_goes_the_full_way(conv):
    """Another shape or dtype is another problem; a misaligned tensor, a launch hook and a compile-only pass are
    launches the plan is not for: each goes through launch(), as without plans."""
    from kernels.triton import launch
    conv, calls = conv
    spec, graph, h, Y, R = _problem()
    tab = conv.table_for(1, 2, 2)
    for _ in range(3):
        conv.conv_recv(h, Y, R, graph, tab)
    n = len(calls)
    conv.conv_recv(torch.zeros(4 * 3 * 32 + 1)[1:].view(3, 4, 32), Y, R, graph, tab)  # 4-byte aligned
    assert calls[n][0] == "triton"
    h2, Y2, R2 = _problem(C=16)[2:]
    conv.conv_recv(h2, Y2, R2, graph, tab)
    conv.conv_recv(h.double(), Y.double(), R.double(), graph, tab)
    assert [c[0] for c in calls[n + 1:]] == ["triton", "triton"]
    hooks = launch._knobs.runtime
    hooks.launch_enter_hook.add(print)
    try:
        conv.conv_recv(h, Y, R, graph, tab)
    finally:
        hooks.launch_enter_hook.remove(print)
    assert calls[-1][0] == "direct" and calls[-1][7] == "metadata"  # launch()'s direct path, with the hook
    with launch.compile_only(1):
        conv.conv_recv(h, Y, R, graph, tab)
    assert calls[-1][0] == "warmup"
    conv.conv_recv(h, Y, R, graph, tab)
    assert calls[-1][0] == "direct" and calls[-1][7] is None


def test_knobs_changed_forgets_the_plans(conv, monkeypatch):
    """A tile forced after a problem has its plan takes effect once knobs_changed() is called."""
    from kernels.triton import tuning
    conv, calls = conv
    spec, graph, h, Y, R = _problem()
    tab = conv.table_for(1, 2, 2)
    for _ in range(3):
        conv.conv_recv(h, Y, R, graph, tab)
    assert any(p.recv for p in tuning.PLANS.values())
    monkeypatch.setenv("TUMBLER_CONV_RECV_CFG", "1,16,1")
    tuning.knobs_changed()
    assert not tuning.PLANS
    conv.conv_recv(h, Y, R, graph, tab)
    assert calls[-1][0] == "triton" and calls[-1][3]["BE"] == 1 and calls[-1][3]["BC"] == 16


def test_plans_stay_bounded(conv, monkeypatch):
    """Eager MD makes a new edge count at every step: a shape seen once makes no Direct, and the plans are
    forgotten when they reach their cap."""
    conv, calls = conv
    from kernels.triton import tuning
    monkeypatch.setattr(conv, "_MAX_PLANS", 4)
    spec = kernels.ConvSpec(1, 2, 2)
    tab = conv.table_for(1, 2, 2)
    for e in range(1, 7):
        graph = kernels.make_graph(torch.zeros(e, dtype=torch.int64), torch.zeros(e, dtype=torch.int64), 2)
        conv.conv_recv(torch.randn(2, 4, 8), torch.randn(e, 9), torch.randn(e, spec.num_paths, 8), graph, tab)
        assert len(tuning.PLANS) <= 4
        assert not any(p.recv for p in tuning.PLANS.values())


def test_the_conv_backward_takes_the_forward_problem(conv, monkeypatch):
    """Through autograd (ConvForm), the sender pass of the conv's backward finds its plan through the forward's
    Problem: from the third fwd+bwd on, both launches are direct, and no sender key is made."""
    conv, calls = conv
    from kernels.triton import tuning
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the "triton" backend on CPU tensors
    spec, graph, h, Y, R = _problem()
    leaves = [t.requires_grad_(True) for t in (h, Y, R)]
    g = torch.randn(3, 9, 32)
    ops = kernels.get_ops("triton")
    for _ in range(3):
        grads = torch.autograd.grad(ops.edge_conv(*leaves, graph, spec), leaves, g)
    assert [c[0] for c in calls] == ["triton", "triton", "direct", "direct", "direct", "direct"]
    assert len(tuning.PLANS) == 1  # the forward's problem only
    assert calls[-1][10:17] == tuple(t.data_ptr() for t in (h, g, Y, R, *grads))
