"""Triton backend of kernels: spherical_harmonics, edge_conv, symmetric_contraction (autograd-enabled).

Same signatures and numbers as kernels/reference.py: [E, 3] -> [E, (lmax+1)**2] spherical_harmonics;
[N, K_in, C], [E, K_sh], [E, P, C], Graph, ConvSpec -> [N, K_out, C] edge_conv; [N, K_in, C], [N] int64,
[S, W, C], ContractionSpec -> [N, K_out, C] symmetric_contraction. Kernel sources are generated from the sparse
coupling tables (sh.py, conv_codegen.py, poly.py) and compiled once per spec; autograd.py closes each op family
under differentiation. Runs on CUDA tensors, or on CPU under TRITON_INTERPRET=1.
"""
import triton  # noqa: F401  (the backend is unavailable without it: the registry reports the ImportError)

from .autograd import edge_conv, spherical_harmonics, symmetric_contraction

__all__ = ["spherical_harmonics", "edge_conv", "symmetric_contraction"]
