"""Triton backend of kernels: spherical_harmonics, edge_conv, symmetric_contraction (autograd-enabled).

Same signatures and numbers as kernels/reference.py. Kernel sources are generated from the sparse
coupling tables (sh.py, conv_codegen.py, poly.py) and compiled once per spec; kernels/autograd.py closes
each op family under differentiation. Runs on CUDA tensors, or on CPU under TRITON_INTERPRET=1.
"""
import triton  # noqa: F401  (the backend is unavailable without it: the registry reports the ImportError)

from .. import autograd as _autograd  # kernels.autograd imports our submodules: bind it as a module


def spherical_harmonics(vectors, lmax):
    """[E, 3] -> [E, (lmax+1)**2] real SH of the unit vector, e3nn order, component normalisation."""
    return _autograd.spherical_harmonics(vectors, lmax)


def edge_conv(node_feats, edge_sh, edge_weights, graph, spec):
    """[N, K_in, C], [E, K_sh], [E, P, C], Graph, ConvSpec -> [N, K_out, C] (kernels.reference.edge_conv)."""
    return _autograd.edge_conv(node_feats, edge_sh, edge_weights, graph, spec)


def symmetric_contraction(node_feats, species, weights, spec):
    """[N, K_in, C], [N] int64, [S, W, C], ContractionSpec -> [N, K_out, C] (kernels.reference)."""
    return _autograd.symmetric_contraction(node_feats, species, weights, spec)


__all__ = ["spherical_harmonics", "edge_conv", "symmetric_contraction"]
