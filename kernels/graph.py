"""The message-passing graph shared by every backend: receiver-sorted edges plus CSR pointers.

Edges are directed sender -> receiver and sorted by receiver (stable), so sums over the incoming edges of
a node are contiguous segments recv_ptr[i]:recv_ptr[i+1] (no atomics needed, deterministic). The transposed
op (sum over the outgoing edges of a node) uses send_perm, the stable argsort of senders, with send_ptr.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch


class Graph(NamedTuple):
    """senders [E] int64, receivers [E] int64 (non-decreasing), num_nodes N,
    recv_ptr [N+1] int64 (edges of receiver i are recv_ptr[i]:recv_ptr[i+1]),
    send_perm [E] int64 (edge ids ordered by sender, stable), send_ptr [N+1] int64
    (send_perm[send_ptr[i]:send_ptr[i+1]] are the edges sent by node i), send_order [N] int64 (the nodes by
    decreasing out-degree, stable: the order in which the sender-segment kernels take them, so that the longest
    segments start first and the last wave of programs is short). All on one device."""

    senders: torch.Tensor
    receivers: torch.Tensor
    num_nodes: int
    recv_ptr: torch.Tensor
    send_perm: torch.Tensor
    send_ptr: torch.Tensor
    send_order: torch.Tensor

    @property
    def num_edges(self) -> int:
        return int(self.senders.shape[0])


def _ptr(sorted_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """CSR pointer [N+1] of a sorted index vector [E]: ptr[i] = number of entries < i."""
    nodes = torch.arange(num_nodes + 1, device=sorted_index.device, dtype=torch.int64)
    return torch.searchsorted(sorted_index, nodes, right=False)


def by_degree(ptr: torch.Tensor) -> torch.Tensor:
    """Nodes [N] by decreasing segment length (stable) from a CSR pointer [N+1]; no host synchronisation."""
    return torch.argsort(ptr[:-1] - ptr[1:], stable=True)


def make_graph(senders: torch.Tensor, receivers: torch.Tensor, num_nodes: int, *, check: bool = True) -> Graph:
    """Build the Graph from edge lists senders [E], receivers [E] (integer tensors, same device).

    Validates: 1-D, same length, integer dtype, 0 <= index < num_nodes, receivers non-decreasing
    (ValueError otherwise). The value checks cost one device synchronisation; check=False skips them (for
    edges that are valid by construction); shapes and dtypes are always checked. Zero edges and nodes
    without edges are fine."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"make_graph: num_nodes must be an int >= 0, got {num_nodes!r}")
    for name, t in (("senders", senders), ("receivers", receivers)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            raise ValueError(f"make_graph: {name} must be a 1-D tensor, got {getattr(t, 'shape', type(t))}")
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"make_graph: {name} must be an integer tensor, got {t.dtype}")
    if senders.shape != receivers.shape:
        raise ValueError(f"make_graph: senders {tuple(senders.shape)} and receivers {tuple(receivers.shape)} differ")
    if senders.device != receivers.device:
        raise ValueError(f"make_graph: senders on {senders.device}, receivers on {receivers.device}")
    senders = senders.to(torch.int64).contiguous()
    receivers = receivers.to(torch.int64).contiguous()
    num_edges = senders.shape[0]
    if check and num_edges:
        # one device sync for the common (valid) case; the details are computed only on failure
        bad = (senders.min() < 0) | (senders.max() >= num_nodes)
        bad = bad | (receivers.min() < 0) | (receivers.max() >= num_nodes)
        if num_edges > 1:
            bad = bad | (receivers[1:] < receivers[:-1]).any()
        if bool(bad):
            for name, t in (("senders", senders), ("receivers", receivers)):
                lo, hi = int(t.min()), int(t.max())
                if lo < 0 or hi >= num_nodes:
                    raise ValueError(f"make_graph: {name} out of range [0, {num_nodes}): min {lo}, max {hi}")
            e = int(torch.nonzero(receivers[1:] < receivers[:-1])[0, 0])
            raise ValueError(
                f"make_graph: receivers must be sorted (non-decreasing); receivers[{e}] = "
                f"{int(receivers[e])} > receivers[{e + 1}] = {int(receivers[e + 1])}"
            )
    send_perm = torch.argsort(senders, stable=True)
    send_ptr = _ptr(senders[send_perm], num_nodes)
    return Graph(
        senders=senders,
        receivers=receivers,
        num_nodes=num_nodes,
        recv_ptr=_ptr(receivers, num_nodes),
        send_perm=send_perm,
        send_ptr=send_ptr,
        send_order=by_degree(send_ptr),
    )


def edge_chunks(graph: Graph, size: int) -> Iterator[tuple[int, int, Graph]]:
    """Split a Graph into consecutive edge ranges: yields (lo, hi, sub) for [lo, hi) = [0, size), [size, 2 size),
    ..., the last one partial; no chunk for a graph without edges.

    ``sub`` is a valid Graph over the same num_nodes nodes holding only edges lo..hi-1, renumbered 0..hi-lo-1, so
    the sum over chunks of any op on (graph edges [lo:hi], sub) equals the op on the whole graph. lo and hi come
    from the shape (Python ints); the rest is device ops without host synchronisation (CUDA-graph capturable):
    senders/receivers are views, recv_ptr is the parent's clamped to the range (receivers are sorted), and the
    sender order is re-sorted within the chunk. Cost per chunk: send_perm [hi-lo] and two [N+1] pointers, plus
    node-sized work in any op on it; so chunks should be few (size ~ E / k for a small k), not tiny."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"edge_chunks: size must be an int >= 1, got {size!r}")
    for lo in range(0, graph.num_edges, size):
        hi = min(lo + size, graph.num_edges)
        senders = graph.senders[lo:hi]  # [hi-lo]
        # Edges past recv_ptr[-1] are in no receiver segment of the parent (a padded graph leaves its padding
        # edges out, see potential/static_step.py); key them num_nodes so they are in no sender segment either.
        in_segments = torch.arange(lo, hi, device=senders.device) < graph.recv_ptr[-1]  # [hi-lo]
        keys = torch.where(in_segments, senders, graph.num_nodes)  # [hi-lo]
        send_perm = torch.argsort(keys, stable=True)  # [hi-lo], chunk-local edge ids ordered by sender
        send_ptr = _ptr(keys[send_perm], graph.num_nodes)  # [N+1]
        sub = Graph(
            senders=senders,
            receivers=graph.receivers[lo:hi],
            num_nodes=graph.num_nodes,
            recv_ptr=graph.recv_ptr.clamp(lo, hi) - lo,  # [N+1]: edges of receiver i within [lo, hi), shifted
            send_perm=send_perm,
            send_ptr=send_ptr,
            send_order=by_degree(send_ptr),  # [N]
        )
        yield lo, hi, sub
