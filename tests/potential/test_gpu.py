"""The model on a CUDA device agrees with the CPU reference (skipped without CUDA).

Backends "reference" and "auto" (Triton kernels where available) in float64 must match the CPU to ~1e-9,
including the force-training gradients (double backward) and the ASE calculator's CUDA Verlet list.
"""

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ELEMENTS = [1, 6, 8]


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture
def structures(props, rng):
    return [props.random_crystal(rng, 4, ELEMENTS), props.random_cluster(rng, 6, ELEMENTS),
            props.random_crystal(rng, 3, ELEMENTS)]


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_cuda_matches_cpu(make_model, props, structures, backend):
    cpu = make_model(seed=11)
    gpu = make_model(seed=11, backend=backend).to("cuda")
    a = props.evaluate(cpu, structures, stress=True)
    b = props.evaluate(gpu, structures, stress=True)
    for key in ("energy", "node_energy", "forces", "stress"):
        assert _rel(b[key], a[key]) < 1e-9, f"{backend}: {key} differs on CUDA"


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_cuda_training_gradients_match_cpu(make_model, props, structures, backend):
    grads = []
    for model in (make_model(seed=12), make_model(seed=12, backend=backend).to("cuda")):
        out = model(props.to_batch(model, structures), forces=True, stress=False, training=True)
        (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        grads.append({n: p.grad.detach().cpu().numpy() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert _rel(grads[1][name], g) < 1e-8, f"{backend}: gradient of {name} differs on CUDA"


def test_cuda_equivariance_and_isolated_atoms(make_model, props, rng):
    model = make_model(seed=13, backend="auto", lmax=2, lmax_sh=3, correlation=3).to("cuda")
    props.check_o3_equivariance(model, props.random_crystal(rng, 4, ELEMENTS), rng, tol=1e-9)
    props.check_isolated_atoms(model)


def test_cuda_float32_close_to_float64(make_model, props, structures):
    m64 = make_model(seed=14)
    m32 = make_model(seed=14, dtype="float32", backend="auto").to("cuda")
    m32.load_state_dict(m64.state_dict())
    a, b = props.evaluate(m64, structures, stress=True), props.evaluate(m32, structures, stress=True)
    assert np.abs(a["energy"] - b["energy"]).max() < 1e-3
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-3


def test_cuda_calculator(make_model, props, rng):
    from potential import Calculator

    model = make_model(seed=15, backend="auto")
    crystal = props.random_crystal(rng, 4, ELEMENTS)
    ref = crystal.copy()
    ref.calc = Calculator(model)
    crystal.calc = Calculator(make_model(seed=15, backend="auto"), device="cuda")  # same weights (seed)
    # small moves (the captured step replays on the kept list), then one beyond skin/2: the step speculatively
    # replayed on the stale list is discarded, the list rebuilt, the step run again
    for k in range(4):
        shift = 0.05 if k < 3 else 0.6
        crystal.positions[0] += shift
        ref.positions[0] += shift
        assert abs(crystal.get_potential_energy() - ref.get_potential_energy()) < 1e-9
        assert np.abs(crystal.get_forces() - ref.get_forces()).max() < 1e-9
        assert np.abs(crystal.get_stress() - ref.get_stress()).max() < 1e-9
    assert crystal.calc.static and crystal.calc.step.captures == 1 and crystal.calc.rebuilds == 2
