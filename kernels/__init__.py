"""tumbler kernels: the math ops of the model, one signature each, several backends.

Features are dense [num_nodes, (lmax+1)**2, channels], components in e3nn order (l major, m = -l..l),
natural parity. Ops:
  spherical_harmonics(vectors [E,3], lmax) -> [E, (lmax+1)**2]
  edge_conv(node_feats [N,K_in,C], edge_sh [E,K_sh], edge_weights [E,P,C], graph, ConvSpec) -> [N,K_out,C]
  symmetric_contraction(node_feats [N,K_in,C], species [N], weights [S,W,C], ContractionSpec) -> [N,K_out,C]
The module-level ops are the "auto" backend (Triton on CUDA tensors when available, else the PyTorch
reference); get_ops(name) picks one explicitly. Coupling conventions: kernels/cg.py, kernels/coupling.py.
Each spec carries its tensor product ("cg" | "gaunt"); kernels/gaunt.py is the S2-grid form of the Gaunt one.
"""
from .cg import (
    TENSOR_PRODUCTS,
    ConvSpec,
    block_wigner_D,
    conv_coupling,
    conv_path_table,
    gaunt_coefficients,
    l_slice,
    num_components,
    o3_allowed,
    triangle,
    wigner_3j,
    wigner_D,
)
from .coupling import (
    ContractionSpec,
    contraction_coupling,
    contraction_path_table,
    coupling_basis,
    folded_coupling,
    sorted_index_tuples,
)
from .graph import Graph, make_graph
from .registry import AUTO, BACKENDS, Ops, get_ops, triton_available

spherical_harmonics = AUTO.spherical_harmonics
edge_conv = AUTO.edge_conv
symmetric_contraction = AUTO.symmetric_contraction

__all__ = [
    "spherical_harmonics", "edge_conv", "symmetric_contraction",
    "ConvSpec", "ContractionSpec", "Graph", "make_graph", "get_ops", "Ops", "BACKENDS", "triton_available",
    "wigner_3j", "wigner_D", "block_wigner_D", "conv_coupling", "conv_path_table",
    "coupling_basis", "contraction_coupling", "contraction_path_table", "folded_coupling", "sorted_index_tuples",
    "num_components", "l_slice", "triangle", "o3_allowed", "TENSOR_PRODUCTS", "gaunt_coefficients",
]
