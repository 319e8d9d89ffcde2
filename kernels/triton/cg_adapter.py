"""Adapter from kernels.cg's sparse conv path table to the entry order our generators use.

kernels.cg.conv_path_table(spec) rows are (path, i_in, i_sh, i_out, coeff); conv_codegen.py takes
(k1, k2, k3, p, w) = (i_in, i_sh, i_out, path, coeff). Only the order of the fields changes.
"""
from __future__ import annotations


def conv_entries(lmax_in: int, lmax_sh: int, lmax_out: int) -> tuple[int, tuple]:
    """(number of paths, ((i_in, i_sh, i_out, path, coeff), ...)) for ConvSpec(lmax_in, lmax_sh, lmax_out)."""
    from ..cg import ConvSpec, conv_path_table
    spec = ConvSpec(lmax_in, lmax_sh, lmax_out)
    rows = conv_path_table(spec)
    return spec.num_paths, tuple((i, j, k, p, float(w)) for p, i, j, k, w in rows)
