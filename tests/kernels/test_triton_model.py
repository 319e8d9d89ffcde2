"""Whole model with backend "triton" equals backend "reference": energy, forces, stress and the
force-training gradient (a loss on forces, backpropagated to every weight). float64.
CPU (interpreter) budget: ~25 s (a tiny model, lmax_sh 3, correlation 3, two small structures)."""
import importlib.util
import sys
from pathlib import Path

import ase.build as ase_build
import numpy as np
import pytest
import torch

import potential

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton

CONFIG = dict(elements=[1, 6, 8], channels=16 if T.GPU else 4, lmax=1, lmax_sh=3, correlation=3,
              num_interactions=2, r_max=3.0, num_bessel=6, radial_hidden=[8, 8], readout_hidden=8,
              avg_num_neighbors=6.0, atomic_energies=[-13.6, -1029.5, -2041.3], scale=0.7, shift=-1.25,
              dtype="float64", backend="reference")


def _batch():
    from data import Batch

    mol = ase_build.molecule("CH3OH")
    mol.positions += np.random.default_rng(0).normal(scale=0.05, size=mol.positions.shape)
    crystal = ase_build.bulk("C", "diamond", a=3.57)
    crystal.rattle(0.05, seed=1)
    return Batch.from_atoms([mol, crystal], cutoff=CONFIG["r_max"], device=T.DEVICE, dtype=torch.float64)


def _run(model, batch):
    out = model(batch, forces=True, stress=True, training=True)
    loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2 + (out["stress"] ** 2).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return out, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


# hidden lmax 2 is the AcAc/3BPA size; its second-order contraction kernel takes minutes to compile, so GPU only
LMAXES = [1, 2] if T.GPU else [1]


@pytest.mark.parametrize("lmax", LMAXES, ids=lambda l: f"hidden-lmax{l}")
def test_triton_model_equals_reference(lmax):
    torch.manual_seed(0)
    model = potential.Potential(potential.ModelConfig.from_dict({**CONFIG, "lmax": lmax})).to(T.DEVICE)
    batch = _batch()
    ref_out, ref_grads = _run(model, batch)
    model.set_backend("triton")
    out, grads = _run(model, batch)
    for key in ("energy", "forces", "stress"):
        assert T.rel_err(out[key], ref_out[key]) < 1e-12, key
    assert any(float(g.abs().max()) > 0 for g in grads)
    for g, gr in zip(grads, ref_grads):
        if float(gr.abs().max()) == 0:
            assert float(g.abs().max()) == 0
        else:
            assert T.rel_err(g, gr) < 1e-10
