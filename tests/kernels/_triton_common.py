"""Shared helpers of the Triton kernel tests (not collected: no test_ prefix).

DEVICE is cuda when available (real sizes) else cpu (Triton interpreter, tiny sizes). `SIZES` holds both.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

import kernels

HAVE_TRITON = importlib.util.find_spec("triton") is not None
requires_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GPU = DEVICE == "cuda"


def ops():
    return kernels.get_ops("triton")


def ref():
    return kernels.get_ops("reference")


def random_graph(num_nodes: int, num_edges: int, seed: int = 0, isolated: int = 0, device=DEVICE):
    """Receiver-sorted random graph; the last `isolated` nodes neither send nor receive."""
    g = torch.Generator().manual_seed(seed)
    active = max(num_nodes - isolated, 1)
    recv = torch.sort(torch.randint(0, active, (num_edges,), generator=g))[0]
    send = torch.randint(0, active, (num_edges,), generator=g)
    return kernels.make_graph(send.to(device), recv.to(device), num_nodes)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def randn(*shape, seed=0, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE, dtype).requires_grad_(requires_grad)
