"""Forces and stress against finite differences; the training graph; float32 models."""

import numpy as np
import torch

ELEMENTS = [1, 6, 8]


def test_finite_difference_forces_cluster(model, props, rng):
    props.check_finite_difference_forces(model, props.random_cluster(rng, 5, ELEMENTS), rng)


def test_finite_difference_forces_crystal(model, props, rng):
    props.check_finite_difference_forces(model, props.random_crystal(rng, 3, ELEMENTS), rng)


def test_finite_difference_stress(model, props, rng):
    props.check_finite_difference_stress(model, props.random_crystal(rng, 3, ELEMENTS))


def test_stress_zero_without_full_periodicity(model, props, rng):
    slab = props.random_crystal(rng, 3, ELEMENTS)
    slab.pbc = [True, True, False]
    cluster = props.random_cluster(rng, 4, ELEMENTS)
    out = props.evaluate(model, [slab, cluster], stress=True)
    assert np.all(out["stress"] == 0.0)


def test_training_graph_reaches_all_weights(make_model, props, rng):
    model = make_model(seed=3)
    props.check_training_graph(model, [props.random_crystal(rng, 3, ELEMENTS), props.random_crystal(rng, 2, ELEMENTS)])


def test_inference_outputs_are_detached(model, props, rng):
    out = model(props.to_batch(model, [props.random_cluster(rng, 4, ELEMENTS)]), forces=True)
    assert not any(v.requires_grad for v in out.values())
    with torch.no_grad():  # forces still work inside no_grad
        out2 = model(props.to_batch(model, [props.random_cluster(rng, 4, ELEMENTS)]), forces=True)
    assert out2["forces"].abs().sum() > 0


def test_float32_model_matches_float64(make_model, props, rng):
    m64 = make_model(seed=5)
    m32 = make_model(seed=5, dtype="float32")
    m32.load_state_dict(m64.state_dict())
    assert m32.dtype == torch.float32 and m32.atomic_energies.dtype == torch.float64
    crystal = props.random_crystal(rng, 3, ELEMENTS)
    a, b = props.evaluate(m64, [crystal], stress=True), props.evaluate(m32, [crystal], stress=True)
    out32 = m32(props.to_batch(m32, [crystal]), forces=True, stress=True)
    assert out32["energy"].dtype == torch.float64 and out32["forces"].dtype == torch.float32
    # E0s are ~1e3 eV: float64 accumulation keeps the float32 model's energy error at the interaction scale
    assert abs(a["energy"][0] - b["energy"][0]) < 1e-4
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-4
    assert np.abs(a["stress"] - b["stress"]).max() < 1e-5
