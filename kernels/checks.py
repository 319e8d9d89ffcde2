"""Argument checks shared by every backend of the three ops (shapes, dtypes, devices; no GPU sync).

Each check raises ValueError naming the op, the argument and the expected shape, and returns the sizes."""
from __future__ import annotations

import torch

from .cg import ConvSpec
from .coupling import ContractionSpec
from .graph import Graph


def _float(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        raise ValueError(f"{op}: {name} must be a floating-point tensor, got {getattr(t, 'dtype', type(t))}")


def _same(op: str, ref_name: str, ref: torch.Tensor, name: str, t: torch.Tensor) -> None:
    if t.dtype != ref.dtype or t.device != ref.device:
        raise ValueError(f"{op}: {name} is {t.dtype} on {t.device} but {ref_name} is {ref.dtype} on {ref.device}")


def check_spherical_harmonics(vectors: torch.Tensor, lmax: int) -> int:
    """vectors [E, 3] float, lmax int >= 0. Returns E."""
    _float("spherical_harmonics", "vectors", vectors)
    if vectors.dim() != 2 or vectors.shape[1] != 3:
        raise ValueError(f"spherical_harmonics: vectors must be [E, 3], got {tuple(vectors.shape)}")
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
        raise ValueError(f"spherical_harmonics: lmax must be an int >= 0, got {lmax!r}")
    return int(vectors.shape[0])


def check_edge_conv(node_feats, edge_sh, edge_weights, graph: Graph, spec: ConvSpec) -> tuple[int, int, int]:
    """node_feats [N, K_in, C], edge_sh [E, K_sh], edge_weights [E, P, C]. Returns (N, E, C)."""
    op = "edge_conv"
    if not isinstance(spec, ConvSpec):
        raise ValueError(f"{op}: spec must be a kernels.ConvSpec, got {type(spec).__name__}")
    if not isinstance(graph, Graph):
        raise ValueError(f"{op}: graph must be a kernels.Graph (kernels.make_graph), got {type(graph).__name__}")
    for name, t in (("node_feats", node_feats), ("edge_sh", edge_sh), ("edge_weights", edge_weights)):
        _float(op, name, t)
    _same(op, "node_feats", node_feats, "edge_sh", edge_sh)
    _same(op, "node_feats", node_feats, "edge_weights", edge_weights)
    if graph.senders.device != node_feats.device:
        raise ValueError(f"{op}: graph is on {graph.senders.device} but node_feats on {node_feats.device}")
    n, e = graph.num_nodes, graph.num_edges
    if node_feats.dim() != 3:
        raise ValueError(f"{op}: node_feats must be [N, K_in, C], got {tuple(node_feats.shape)}")
    c = int(node_feats.shape[-1])
    expect = (
        ("node_feats", node_feats, (n, spec.dim_in, c)),
        ("edge_sh", edge_sh, (e, spec.dim_sh)),
        ("edge_weights", edge_weights, (e, spec.num_paths, c)),
    )
    for name, t, shape in expect:
        if tuple(t.shape) != shape:
            raise ValueError(f"{op}: {name} must be {list(shape)} for {spec} on a graph with {n} nodes and "
                             f"{e} edges (C = {c} channels), got {list(t.shape)}")
    return n, e, c


def check_symmetric_contraction(node_feats, species, weights, spec: ContractionSpec) -> tuple[int, int, int]:
    """node_feats [N, K_in, C], species [N] int64 in [0, S), weights [S, num_weights, C]. Returns (N, S, C)."""
    op = "symmetric_contraction"
    if not isinstance(spec, ContractionSpec):
        raise ValueError(f"{op}: spec must be a kernels.ContractionSpec, got {type(spec).__name__}")
    _float(op, "node_feats", node_feats)
    _float(op, "weights", weights)
    _same(op, "node_feats", node_feats, "weights", weights)
    if not isinstance(species, torch.Tensor) or species.dtype != torch.int64:
        raise ValueError(f"{op}: species must be an int64 tensor, got {getattr(species, 'dtype', type(species))}")
    if species.device != node_feats.device:
        raise ValueError(f"{op}: species on {species.device} but node_feats on {node_feats.device}")
    if node_feats.dim() != 3 or node_feats.shape[1] != spec.dim_in:
        raise ValueError(f"{op}: node_feats must be [N, {spec.dim_in}, C] for {spec}, got {tuple(node_feats.shape)}")
    n, _, c = node_feats.shape
    if tuple(species.shape) != (n,):
        raise ValueError(f"{op}: species must be [{n}], got {tuple(species.shape)}")
    if weights.dim() != 3 or weights.shape[1:] != (spec.num_weights, c):
        raise ValueError(f"{op}: weights must be [S, {spec.num_weights}, {c}] for {spec}, got {tuple(weights.shape)}")
    return n, int(weights.shape[0]), c
