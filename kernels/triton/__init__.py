"""Triton backend of kernels: spherical_harmonics, edge_conv, symmetric_contraction (autograd-enabled).

Same signatures and numbers as kernels/reference.py. Kernel sources are generated from the sparse
coupling tables (sh.py, conv_codegen.py, poly.py) and compiled once per spec; kernels/autograd.py closes
each op family under differentiation. Runs on CUDA tensors, or on CPU under TRITON_INTERPRET=1.
"""
import triton  # noqa: F401  (the backend is unavailable without it: the registry reports the ImportError)

from .. import autograd as _autograd  # kernels.autograd imports our submodules: bind it as a module

__all__ = ["spherical_harmonics", "edge_conv", "symmetric_contraction"]


def __getattr__(name: str):
    """The ops are kernels/autograd.py's own functions, not wrappers around them (the small passes are host-bound):
    [E, 3] -> [E, (lmax+1)**2] spherical_harmonics; [N, K_in, C], [E, K_sh], [E, P, C], Graph, ConvSpec ->
    [N, K_out, C] edge_conv; [N, K_in, C], [N] int64, [S, W, C], ContractionSpec -> [N, K_out, C]
    symmetric_contraction (signatures and numbers of kernels/reference.py). Looked up at first use, since
    kernels.autograd may be importing this package at the time it runs."""
    if name in __all__:
        return getattr(_autograd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
