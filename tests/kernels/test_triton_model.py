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


_PRECOMPILE_SCRIPT = """
import json, sys, torch
from triton import knobs
sys.path[:0] = [{root!r}, {tests!r}]
import potential, test_triton_model as M
config = {{**M.CONFIG, "channels": 16, "dtype": "float32", "backend": "triton"}}
torch.manual_seed(0)
model = potential.Potential(potential.ModelConfig.from_dict(config)).to("cuda")
batch = M._batch().to(dtype=torch.float32)
import os, pathlib
compiled_here = []
knobs.compilation.listener = lambda **kw: compiled_here.append(not kw["cache_hit"])
assert model.ops.precompile(lambda: M._run(model, batch), torch.device("cuda")) is True
ahead = len(list(pathlib.Path(os.environ["TRITON_CACHE_DIR"]).rglob("*.cubin")))  # compiled by the workers
ahead_here = sum(compiled_here)  # compiled in this process: the launches made outside kernels/triton/launch.py
compiled_here.clear()
out, grads = M._run(model, batch)
knobs.compilation.listener = None
plain = potential.Potential(potential.ModelConfig.from_dict(config)).to("cuda")
plain.load_state_dict(model.state_dict())
out0, grads0 = M._run(plain, batch)
errors = [M.T.rel_err(out[k], out0[k]) for k in ("energy", "forces", "stress")]
errors += [M.T.rel_err(g, g0) for g, g0 in zip(grads, grads0) if float(g0.abs().max()) > 0]
print(json.dumps(dict(ahead=ahead, ahead_here=ahead_here, step=sum(compiled_here), worst=max(errors))))
"""


@pytest.mark.skipif(not T.GPU, reason="precompiling compiles only on CUDA (off CUDA, Ops.precompile runs nothing)")
def test_precompile_compiles_the_step_ahead_and_changes_nothing(tmp_path):
    """kernels.Ops.precompile on a force-training step, in a fresh process with empty caches: the kernels compile
    in that pass (in worker processes, into Triton's on-disk cache), the step after it compiles nothing (it loads
    them from the cache), and its numbers equal those of a model that never precompiled (float32 rounding:
    torch's index_add on CUDA sums in no fixed order)."""
    import json
    import os
    import subprocess
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / "triton"), "TUMBLER_KERNEL_CACHE": str(tmp_path / "src"),
           "TUMBLER_AUTOTUNE": "0"}
    script = _PRECOMPILE_SCRIPT.format(root=str(root), tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ahead"] - result["ahead_here"] > 10 and result["step"] == 0, result  # > 10 compiled by workers
    assert result["worst"] < 1e-5, result
