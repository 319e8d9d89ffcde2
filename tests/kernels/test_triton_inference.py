"""Inference (no_grad, or no input that requires grad) calls the kernels without an autograd Function
(kernels/triton/autograd.py _records): the same bits as the recorded call, and no graph node."""
import importlib.util
import sys
from pathlib import Path

import torch

import kernels

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton


def _same_without_graph(fn, *inputs):
    recorded = fn(*inputs)
    assert recorded.grad_fn is not None
    with torch.no_grad():
        plain = fn(*inputs)
    detached = fn(*(t.detach() for t in inputs))
    for out in (plain, detached):
        assert out.grad_fn is None and not out.requires_grad
        assert torch.equal(out, recorded.detach())


def test_conv_inference_path():
    spec = kernels.ConvSpec(1, 2, 2)
    graph = T.random_graph(7, 19, seed=5, isolated=1)
    h = T.randn(7, spec.dim_in, 5, seed=1, requires_grad=True)
    y = T.randn(19, spec.dim_sh, seed=2, requires_grad=True)
    w = T.randn(19, spec.num_paths, 5, seed=3, requires_grad=True)
    _same_without_graph(lambda a, b, c: T.ops().edge_conv(a, b, c, graph, spec), h, y, w)


def test_sh_inference_path():
    _same_without_graph(lambda v: T.ops().spherical_harmonics(v, 3), T.randn(23, 3, seed=4, requires_grad=True))


def test_contraction_inference_path():
    spec = kernels.ContractionSpec(1, 1, 2)
    species = torch.tensor([0, 1, 1, 0, 2], device=T.DEVICE)
    x = T.randn(5, spec.dim_in, 3, seed=6, requires_grad=True)
    w = T.randn(3, spec.num_weights, 3, seed=7, requires_grad=True)
    _same_without_graph(lambda a, b: T.ops().symmetric_contraction(a, species, b, spec), x, w)
