"""Edge-chunked inference (kernels.graph.edge_chunks, Interaction.edge_chunk, Potential.set_edge_chunk): the
sub-graphs are exact Graphs, and chunked energies, forces and stress equal the unchunked ones, eager and through
the padded StaticStep. Budget: a few seconds on one CPU thread."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import ConvSpec, make_graph
from kernels.graph import edge_chunks
from kernels.reference import edge_conv
from potential.static_step import StaticStep

ELEMENTS = [1, 6, 8]


def random_graph(gen: torch.Generator, num_nodes: int, num_edges: int) -> kernels.Graph:
    """Receiver-sorted random graph; nodes num_nodes-2.. get no edges (empty segments at the end too)."""
    senders = torch.randint(0, num_nodes - 2, (num_edges,), generator=gen)
    receivers = torch.randint(0, num_nodes - 2, (num_edges,), generator=gen).sort().values
    return make_graph(senders, receivers, num_nodes)


@pytest.mark.parametrize("size", [1, 7, 59, 60, 1000])
def test_chunks_are_the_graphs_of_the_sliced_edges(size):
    gen = torch.Generator().manual_seed(0)
    graph = random_graph(gen, 13, 60)
    spec = ConvSpec(1, 2, 2)
    c = 3
    h = torch.randn(13, spec.dim_in, c, generator=gen, dtype=torch.float64)  # [N, K_in, C]
    sh = torch.randn(60, spec.dim_sh, generator=gen, dtype=torch.float64)  # [E, K_sh]
    w = torch.randn(60, spec.num_paths, c, generator=gen, dtype=torch.float64)  # [E, P, C]
    bounds, total = [], torch.zeros(13, spec.dim_out, c, dtype=torch.float64)
    for lo, hi, sub in edge_chunks(graph, size):
        bounds.append((lo, hi))
        ref = make_graph(graph.senders[lo:hi], graph.receivers[lo:hi], graph.num_nodes)
        assert type(sub.num_nodes) is int and sub.num_nodes == ref.num_nodes
        for field in ("senders", "receivers", "recv_ptr", "send_perm", "send_ptr", "send_order"):
            a, b = getattr(sub, field), getattr(ref, field)
            assert a.dtype == torch.int64 and torch.equal(a, b), field
        total = total + edge_conv(h, sh[lo:hi], w[lo:hi], sub, spec)
    expected = [(lo, min(lo + size, 60)) for lo in range(0, 60, size)]
    assert bounds == expected and all(hi - lo <= size for lo, hi in bounds)
    torch.testing.assert_close(total, edge_conv(h, sh, w, graph, spec), rtol=0, atol=1e-12)


def test_edge_chunks_edge_cases():
    empty = make_graph(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 4)
    assert list(edge_chunks(empty, 3)) == []
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="size"):
            list(edge_chunks(empty, bad))


def counting(ops, sizes: list):
    """ops whose edge_conv records the edge count of every call."""
    def edge_conv(node_feats, edge_sh, edge_weights, graph, spec):
        sizes.append(graph.num_edges)
        return ops.edge_conv(node_feats, edge_sh, edge_weights, graph, spec)

    return kernels.Ops("counting", ops.spherical_harmonics, edge_conv, ops.symmetric_contraction)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def outputs(model, batch, chunk, **kwargs):
    model.set_edge_chunk(chunk)
    try:
        return model(batch, **kwargs)
    finally:
        model.set_edge_chunk(None)


def test_chunked_potential_equals_unchunked(make_model, props, rng):
    model = make_model(seed=7).eval()
    atoms = [props.random_crystal(rng, 3, ELEMENTS), props.random_cluster(rng, 4, ELEMENTS)]
    batch = props.to_batch(model, atoms)
    num_edges = int(batch.senders.shape[0])
    assert num_edges > 3 * 7 and num_edges % 7 != 0  # several chunks and a partial last one
    ref = outputs(model, batch, None, forces=True, stress=True)
    sizes = []
    model.ops = counting(model.ops, sizes)  # a fresh model per test: no need to restore
    out = outputs(model, batch, 7, forces=True, stress=True)
    per_layer = [7] * (num_edges // 7) + [num_edges % 7]
    forward = per_layer * len(model.interactions)
    assert sizes[:len(forward)] == forward  # then each chunk once more: the checkpoint's recompute (backward)
    assert sorted(sizes[len(forward):]) == sorted(forward)
    for key in ("energy", "node_energy", "forces", "stress"):
        assert max_rel(out[key], ref[key]) < 1e-10, key
    # energy only: no gradients, so chunks without checkpoints
    sizes.clear()
    energy = outputs(model, batch, 7, forces=False)["energy"]
    assert sizes == per_layer * len(model.interactions)
    assert max_rel(energy, ref["energy"]) < 1e-10
    # train mode ignores the chunk size: force training differentiates again through the conv
    sizes.clear()
    outputs(model.train(), batch, 7, forces=True, training=True)
    assert sizes == [num_edges] * len(model.interactions)
    with pytest.raises(ValueError, match="set_edge_chunk"):
        model.set_edge_chunk(0)


def test_chunked_static_step_equals_unchunked(make_model, props, rng):
    model = make_model(seed=8).eval()
    atoms = [props.random_crystal(rng, 4, ELEMENTS), props.random_cluster(rng, 4, ELEMENTS)]
    batch = props.to_batch(model, atoms)
    sizes = []
    model.ops = counting(model.ops, sizes)  # StaticStep takes the model's conv

    def run(chunk):
        sizes.clear()
        step = StaticStep(model, batch.numbers, batch.ptr, batch.cell, batch.pbc, skin=0.5, stress=True,
                          cuda_graph=False, edge_chunk=chunk)
        out = {k: v.clone() for k, v in step(batch.positions).items()}
        assert all(i.edge_chunk is None for i in model.interactions)  # the step leaves the model as it was
        return out, step.num_pad_edges

    ref, num_pad = run(None)
    chunk = 100
    assert num_pad > 2 * chunk and num_pad % chunk != 0  # several chunks, a partial last one
    assert sizes == [num_pad] * len(model.interactions)
    out, _ = run(chunk)
    per_layer = [chunk] * (num_pad // chunk) + [num_pad % chunk]
    assert sorted(sizes) == sorted(per_layer * len(model.interactions) * 2)  # forward and recompute
    for key in ("energy", "forces", "stress"):
        assert max_rel(out[key], ref[key]) < 1e-10, key
    assert max_rel(ref["forces"], model(batch, forces=True)["forces"]) < 1e-10  # and the step is the model
