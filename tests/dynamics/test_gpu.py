"""CUDA-only checks of the engine (skipped without a GPU; CI has none): the captured CUDA graphs give the same
numbers as the eager padded step on the CPU, float64, through Verlet rebuilds and a bucket overflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from potential.simulation.dynamics import Dynamics
from potential.simulation.fire import relax_batch

from builders import cu_cubic, cu_triclinic, tiny_model, with_velocities

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_graph_replay_equals_cpu_eager():
    cpu_model = tiny_model(elements=(1, 6, 8, 29), backend="auto")
    gpu_model = tiny_model(elements=(1, 6, 8, 29), backend="auto").cuda()
    structures = [with_velocities(cu_cubic() * (2, 2, 2), 900, seed=1), with_velocities(cu_triclinic(), 600, seed=2),
                  with_velocities(molecule("CH3CH2OH"), 600, seed=3)]
    cpu = Dynamics(cpu_model, structures, timestep=2.0, skin=0.2)
    gpu = Dynamics(gpu_model, structures, timestep=2.0, skin=0.2)
    assert gpu.static.cuda_graph and gpu.static.contraction == "triton"  # the compiled species-fixed kernel
    cpu.run(60)
    gpu.run(60)
    assert gpu.static.captures >= 1 and gpu.rebuilds > 1
    np.testing.assert_allclose(gpu.positions.cpu().numpy(), cpu.positions.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(gpu.momenta.cpu().numpy(), cpu.momenta.numpy(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("thermostat", ["langevin", "baoab", "bussi"])
def test_thermostats_run_in_graphs(thermostat):
    model = tiny_model(elements=(1, 8), scale=0.5).cuda()
    targets = np.array([300.0] * 16 + [900.0] * 16)
    replicas = [with_velocities(molecule("H2O"), t, seed=k) for k, t in enumerate(targets)]
    dyn = Dynamics(model, replicas, timestep=1.0, thermostat=thermostat, temperature=targets, friction=0.1,
                   tdamp=10.0, seed=1)
    samples = []
    dyn.run(400, interval=4, callback=lambda d: samples.append(d.observables()["temperature"]))
    mean = np.mean(samples[len(samples) // 2:], axis=0)
    assert np.mean(mean[targets == 300.0]) == pytest.approx(300.0, rel=0.15)
    assert np.mean(mean[targets == 900.0]) == pytest.approx(900.0, rel=0.15)


def test_fire_on_gpu_matches_cpu():
    structures = [cu_cubic(rattle=0.15), molecule("H2O")]
    cpu = relax_batch(tiny_model(scale=5.0), [a.copy() for a in structures], fmax=0.01, max_steps=100)
    gpu = relax_batch(tiny_model(scale=5.0).cuda(), [a.copy() for a in structures], fmax=0.01, max_steps=100)
    for c, g in zip(cpu, gpu):
        assert c["steps"] == g["steps"] and c["converged"] == g["converged"]
        assert c["energy"] == pytest.approx(g["energy"], abs=1e-8)


def test_set_cell_with_a_captured_graph():
    """A strained cell reaches the captured graph (cell, volume and lists are updated in place)."""
    import data
    from potential.static_step import StaticStep

    model = tiny_model().cuda()
    atoms_list = [cu_cubic() * (2, 1, 1), cu_triclinic()]
    batch = data.Batch.from_atoms(atoms_list, model.r_max, device="cuda")
    step = StaticStep(model, batch.numbers, batch.ptr, batch.cell, batch.pbc, skin=0.5, stress=True)
    step(batch.positions)
    strained = [a.copy() for a in atoms_list]
    for a in strained:
        a.set_cell(a.cell[:] @ np.array([[1.03, 0.01, 0.0], [0.0, 0.98, 0.0], [0.0, 0.0, 1.02]]), scale_atoms=True)
    new = data.Batch.from_atoms(strained, model.r_max, device="cuda")
    step.set_cell(new.cell)
    out = step(new.positions)
    ref = model(new, stress=True)
    assert step.captures == 1
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-10)


def test_chunked_step_captures_and_equals_unchunked():
    """The edge-chunked conv (very large systems) inside a captured graph: same numbers as one chunk."""
    from potential.calculator import Calculator
    from potential.static_step import StaticStep

    model = tiny_model(elements=(29,), backend="auto").cuda()
    atoms = cu_cubic() * (3, 3, 3)
    atoms.rattle(0.05, seed=4)
    x = torch.tensor(atoms.positions, device="cuda")
    args = (model, torch.tensor(atoms.numbers), [0, len(atoms)], torch.tensor(np.array(atoms.cell[:])),
            torch.tensor(atoms.pbc))
    whole = StaticStep(*args, stress=True, edge_chunk=None)
    chunked = StaticStep(*args, stress=True, edge_chunk=500)
    ref = {k: v.clone() for k, v in whole(x).items()}
    out = chunked(x)
    assert chunked.cuda_graph and chunked.captures == 1 and chunked.num_pad_edges > 1000
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(out[key].cpu().numpy(), ref[key].cpu().numpy(), rtol=0, atol=1e-9)
    atoms.calc = Calculator(model)  # static by default on CUDA
    assert atoms.calc.static
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].cpu().numpy(), rtol=0, atol=1e-9)
