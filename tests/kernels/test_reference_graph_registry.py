"""make_graph validation and CSR pointers; the backend registry (budget: < 2 s)."""
import warnings

import pytest
import torch

import kernels
from kernels import ContractionSpec, ConvSpec, Graph, get_ops, make_graph
from kernels import registry


def test_make_graph_pointers_and_sender_permutation():
    senders = torch.tensor([2, 0, 3, 0, 2, 0])
    receivers = torch.tensor([0, 1, 1, 2, 2, 2])
    g = make_graph(senders, receivers, 5)  # node 3 sends only, node 4 is isolated
    assert isinstance(g, Graph) and g.num_nodes == 5 and g.num_edges == 6
    assert g.recv_ptr.tolist() == [0, 1, 3, 6, 6, 6]
    assert g.send_perm.tolist() == [1, 3, 5, 0, 4, 2]  # stable within each sender
    assert g.send_ptr.tolist() == [0, 3, 3, 5, 6, 6]
    assert g.send_order.tolist() == [0, 2, 3, 1, 4]  # out-degrees 3, 0, 2, 1, 0: longest first, ties stable
    assert all(t.dtype == torch.int64 for t in (g.senders, g.receivers, g.recv_ptr, g.send_perm, g.send_ptr,
                                                g.send_order))


def test_make_graph_accepts_int32_and_empty():
    g = make_graph(torch.tensor([1, 0], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32), 2)
    assert g.senders.dtype == torch.int64
    empty = make_graph(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 4)
    assert empty.recv_ptr.tolist() == [0] * 5 and empty.send_ptr.tolist() == [0] * 5 and empty.num_edges == 0
    assert make_graph(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0).recv_ptr.tolist() == [0]


def test_make_graph_rejects_bad_input():
    with pytest.raises(ValueError, match=r"receivers must be sorted.*receivers\[1\] = 2 > receivers\[2\] = 1"):
        make_graph(torch.tensor([1, 2, 0]), torch.tensor([0, 2, 1]), 3)
    with pytest.raises(ValueError, match="senders out of range"):
        make_graph(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="receivers out of range"):
        make_graph(torch.tensor([0]), torch.tensor([-1]), 3)
    with pytest.raises(ValueError, match="integer"):
        make_graph(torch.tensor([0.0]), torch.tensor([0.0]), 3)
    with pytest.raises(ValueError, match="differ"):
        make_graph(torch.tensor([0, 1]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="num_nodes"):
        make_graph(torch.tensor([0]), torch.tensor([0]), -1)
    make_graph(torch.tensor([1, 2, 0]), torch.tensor([0, 2, 1]), 3, check=False)  # unchecked: caller's promise


def test_ops_reject_bad_shapes_with_clear_messages():
    spec = ConvSpec(1, 2, 1)
    g = make_graph(torch.tensor([1]), torch.tensor([0]), 2)
    x = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"edge_weights must be \[1, 5, 3\]"):
        kernels.edge_conv(x, torch.zeros(1, 9), torch.zeros(1, 4, 3), g, spec)
    with pytest.raises(ValueError, match="edge_sh is torch.float64"):
        kernels.edge_conv(x, torch.zeros(1, 9, dtype=torch.float64), torch.zeros(1, 5, 3), g, spec)
    with pytest.raises(ValueError, match=r"node_feats must be \[N, 9, C\]"):
        kernels.symmetric_contraction(x, torch.zeros(2, dtype=torch.long), torch.zeros(1, 3, 3), ContractionSpec(2, 0, 1))
    with pytest.raises(ValueError, match=r"vectors must be \[E, 3\]"):
        kernels.spherical_harmonics(torch.zeros(4, 2), 2)


def test_registry_names():
    assert get_ops("reference").name == "reference" and get_ops().name == "auto"
    assert kernels.edge_conv is get_ops("auto").edge_conv
    with pytest.raises(ValueError, match="'cuda' unknown; choose one of auto, reference, triton"):
        get_ops("cuda")


def test_auto_on_cpu_is_the_reference():
    v = torch.randn(6, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on CPU tensors
        assert torch.equal(kernels.spherical_harmonics(v, 3), get_ops("reference").spherical_harmonics(v, 3))
        assert torch.equal(kernels.spherical_harmonics(vectors=v, lmax=2), get_ops("reference").spherical_harmonics(v, 2))


def test_triton_backend_is_explicit(monkeypatch):
    if not registry.triton_available():
        with pytest.raises(RuntimeError, match="kernels backend 'triton' is unavailable"):
            get_ops("triton")
        return
    ops = get_ops("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        ops.spherical_harmonics(torch.randn(4, 3), 2)


def test_triton_unavailable_reason_is_reported(monkeypatch):
    monkeypatch.setattr(registry, "_triton_state", {"error": "ImportError: no triton here"})
    with pytest.raises(RuntimeError, match="no triton here"):
        get_ops("triton")
    assert not registry.triton_available()
