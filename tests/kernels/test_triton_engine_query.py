"""The one private torch name left in kernels/: the engine query of kernels/triton/autograd.py (_engine_query, on
the torch versions in TESTED_TORCH). It may only skip gradients nobody uses: a force-training step (SH -> conv ->
contraction -> energy; forces with create_graph; a loss on the forces back to every weight) must give the same
forces and weight gradients with it and without it (the public path, ctx.needs_input_grad), while launching fewer
kernels with it. Not bitwise: where the query drops the conv's dh, dY and dR come from the per-edge kernel instead
of the fused sender pass, which sums in another order; so to float64 rounding. CPU (interpreter) budget: ~20 s.
"""
from __future__ import annotations

import pytest
import torch

import kernels
from kernels import ContractionSpec, ConvSpec
from tests.kernels._triton_common import DEVICE, random_graph, randn, rel_err, requires_triton

pytestmark = requires_triton


def _force_training_step(N=7, E=20, C=4, S=3):
    """(forces, gradients of the weights): a two-operation model whose node features and contraction weights are
    parameters, as in the model's first layer."""
    ops = kernels.get_ops("triton")
    conv_spec, sc_spec = ConvSpec(1, 2, 1), ContractionSpec(1, 1, 2)
    graph = random_graph(N, E, seed=3, isolated=1)
    vec = randn(E, 3, seed=4, requires_grad=True)
    h = randn(N, 4, C, seed=5, requires_grad=True)  # node features: a parameter (the embedding)
    radial = randn(len(conv_spec.paths), C, seed=6, requires_grad=True)
    w = randn(S, sc_spec.num_weights, C, seed=7, requires_grad=True)
    species = (torch.arange(N) % S).to(DEVICE)
    r = vec.norm(dim=1, keepdim=True)  # [E, 1]
    R = torch.cos(r)[:, :, None] * radial  # [E, P, C]
    m = ops.edge_conv(h, ops.spherical_harmonics(vec, 2), R, graph, conv_spec)  # [N, 4, C]
    energy = ops.symmetric_contraction(m, species, w, sc_spec)[:, 0].sum()
    (forces,) = torch.autograd.grad(energy, vec, create_graph=True)  # [E, 3]
    grads = torch.autograd.grad((forces ** 2).sum(), (h, radial, w))
    return forces.detach(), grads


def test_the_engine_query_changes_no_number_and_saves_launches(monkeypatch):
    from kernels.triton import autograd, launch
    if autograd._WILL_RUN is None:
        pytest.skip(f"torch {torch.__version__} is outside TESTED_TORCH {autograd.TESTED_TORCH}: no query to compare")
    launched = []
    real_launch = launch.launch

    def counted(kernel, grid, *args, **meta):
        launched.append(1)
        real_launch(kernel, grid, *args, **meta)

    for module in ("conv", "contraction"):
        monkeypatch.setattr(f"kernels.triton.{module}.launch", counted)
    with_query = _force_training_step()
    n_query = len(launched)
    monkeypatch.setattr(autograd, "_WILL_RUN", None)  # the public path
    launched.clear()
    public = _force_training_step()
    assert rel_err(with_query[0], public[0]) < 1e-13
    for a, b in zip(with_query[1], public[1]):
        assert rel_err(a, b) < 1e-13
    assert float(public[0].abs().max()) > 0 and all(float(g.abs().max()) > 0 for g in public[1])
    assert n_query < len(launched), (n_query, len(launched))  # unused gradients skipped
