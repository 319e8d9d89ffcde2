"""The padded, static-shape step (potential/static_step.py) against the eager unpadded Potential, float64.

Budget: ~10 s on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import data
from potential.static_step import StaticStep

from builders import mixed_structures, tiny_model

ATOL = 1e-10


def eager(model, atoms_list, stress=True):
    batch = data.Batch.from_atoms(atoms_list, model.r_max)
    return model(batch, forces=True, stress=stress)


def static_for(model, atoms_list, **kwargs):
    batch = data.Batch.from_atoms(atoms_list, model.r_max)
    step = StaticStep(model, batch.numbers, batch.ptr, batch.cell, batch.pbc, **kwargs)
    return step, batch.positions


def assert_same(out, ref, stress=True):
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=0, atol=ATOL)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=0, atol=ATOL)
    if stress:
        torch.testing.assert_close(out["stress"], ref["stress"], rtol=0, atol=ATOL)


@pytest.mark.parametrize("overrides", [{}, dict(lmax=2, lmax_sh=3, correlation=3, num_interactions=2),
                                       dict(lmax=0, lmax_sh=1, correlation=1)])
def test_padded_step_equals_eager_forward(overrides):
    model = tiny_model(**overrides)
    atoms_list = mixed_structures()
    step, positions = static_for(model, atoms_list, skin=0.7, stress=True)
    out = step(positions)
    assert step.num_pad_edges > step.num_edges > 0  # padding present, and the list has a skin
    assert_same(out, eager(model, atoms_list))
    torch.testing.assert_close(out["node_energy"], eager(model, atoms_list)["node_energy"], rtol=0, atol=ATOL)
    assert all(p.requires_grad for p in model.parameters())  # frozen only during the step


def test_padding_amount_does_not_change_results(model):
    atoms_list = mixed_structures()
    small, positions = static_for(model, atoms_list, skin=0.0, stress=True, headroom=1.0)
    large, _ = static_for(model, atoms_list, skin=0.0, stress=True, headroom=4.0)
    a, b = small(positions), large(positions)
    assert large.num_pad_edges > 3 * small.num_edges
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=ATOL)


def test_verlet_reuse_rebuild_and_bucket_overflow(model):
    atoms_list = mixed_structures()
    step, positions = static_for(model, atoms_list, skin=0.6, stress=True, headroom=1.0)
    step(positions)
    assert step.rebuilds == 1
    rng = np.random.default_rng(0)
    # small moves (< skin/2): the list is reused and results still equal a fresh eager evaluation
    moved = [a.copy() for a in atoms_list]
    for a in moved:
        a.positions += rng.uniform(-0.15, 0.15, size=a.positions.shape)
    pos = torch.tensor(np.concatenate([a.positions for a in moved]))
    assert_same(step(pos), eager(model, moved))
    assert step.rebuilds == 1
    # one atom of the cubic cell moves 0.4 Å > skin/2: rebuild (outside the cell too: positions are not wrapped)
    moved[0].positions[0] += [0.4, 0.0, -3.0]
    pos = torch.tensor(np.concatenate([a.positions for a in moved]))
    assert_same(step(pos), eager(model, moved))
    assert step.rebuilds == 2
    # compress everything: more edges than the bucket holds -> new buffers, same numbers
    pad_before = step.num_pad_edges
    for a in moved:
        if a.pbc.all():
            a.set_cell(a.cell[:] * 0.75, scale_atoms=True)
    pos = torch.tensor(np.concatenate([a.positions for a in moved]))
    batch = data.Batch.from_atoms(moved, model.r_max)
    step.set_cell(batch.cell)
    assert_same(step(pos), eager(model, moved))
    assert step.num_edges > pad_before and step.num_pad_edges > step.num_edges


def test_active_edges_skip_the_skin_and_grow_without_a_rebuild(model):
    """Only edges shorter than r_max are evaluated; when more come inside than the active bucket holds (atoms
    moving less than skin/2: no rebuild), the bucket grows before the step runs and results stay exact."""
    from ase import Atoms

    spacing = model.r_max + 0.15  # Å: every grid neighbour is in the list (skin 2 Å) but none within r_max
    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)  # [125, 3]
    cluster = Atoms("C125", positions=grid * spacing)
    step, positions = static_for(model, [cluster], skin=2.0, headroom=1.0)
    assert_same(step(positions), eager(model, [cluster]), stress=False)
    assert step.num_edges >= 600 and step.num_active_edges < 600  # 300 grid bonds listed, none active
    shrunk = cluster.copy()
    shrunk.positions = (grid - 2.0) * (model.r_max - 0.05) + 2.0 * spacing  # moves <= 0.7 Å < skin/2
    out = step(torch.tensor(shrunk.positions))
    assert step.rebuilds == 1 and step.num_active_edges >= 600
    assert_same(out, eager(model, [shrunk]), stress=False)
    # the active edges' sender order, derived from the list's, is the stable sort of their senders
    inside = step._inside(step.positions)
    active = torch.nonzero_static(inside, size=step.num_active_edges, fill_value=step.num_pad_edges - 1).squeeze(1)
    expected = torch.argsort(step.senders[active], stable=True)
    assert torch.equal(step._active_send_perm(inside), expected)


def test_cell_change_is_seen(model):
    """NPT-like strain of a triclinic cell without moving atoms beyond the skin: set_cell forces a rebuild."""
    atoms_list = mixed_structures()[:2]
    step, positions = static_for(model, atoms_list, skin=0.5, stress=True)
    step(positions)
    strained = [a.copy() for a in atoms_list]
    for a in strained:
        a.set_cell(a.cell[:] @ np.array([[1.02, 0.01, 0.0], [0.0, 0.99, 0.0], [0.0, 0.0, 1.01]]), scale_atoms=True)
    batch = data.Batch.from_atoms(strained, model.r_max)
    step.set_cell(batch.cell)
    assert_same(step(batch.positions), eager(model, strained))
    assert step.rebuilds == 2


def test_molecules_brute_force_group_matches_vesin(model):
    from ase.build import molecule

    mols = [molecule(name) for name in ("CH4", "H2O", "CH3CH2OH", "CO2", "H2O")]
    for k, m in enumerate(mols):
        m.positions += 7.0 * k  # any absolute placement
    step, positions = static_for(model, mols, skin=0.5)
    assert step.neighbors.group == list(range(len(mols)))
    assert_same(step(positions), eager(model, mols, stress=False), stress=False)
    senders, receivers, shifts = step.neighbors.edges
    batch = data.Batch.from_atoms(mols, model.r_max + 0.5)
    assert torch.equal(senders, batch.senders) and torch.equal(receivers, batch.receivers)
    assert not shifts.any()


def test_unknown_element_and_cpu_graph_errors(model):
    from ase.build import molecule

    with pytest.raises(ValueError, match="Fe"):
        static_for(model, [molecule("H2O"), __import__("ase").Atoms("Fe2", positions=[[0, 0, 0], [2, 0, 0]])])
    with pytest.raises(ValueError, match="cuda_graph"):
        static_for(model, [molecule("H2O")], cuda_graph=True)


def test_triton_contraction_with_a_fixed_plan():
    """The species-fixed Triton contraction gives the eager numbers too. On CPU (CI) it runs in Triton's
    interpreter, which must be switched on before Triton is imported: a subprocess. On a GPU machine the same
    subprocess runs the compiled kernel in a captured step, as StaticStep makes it on CUDA: the interpreter of
    the Triton on the H200 image (3.6) cannot run the segment loops, whose bounds are loaded scalars; 3.9's
    (CI's) can."""
    import os
    import subprocess
    import sys

    import kernels

    # triton is a test dependency (pip install -e ".[test]"): a missing one is an error, not a skip
    assert kernels.triton_available(), "kernels.triton does not import"
    code = """
import sys, torch
from ase.build import molecule
import data
from potential.static_step import StaticStep
sys.path.insert(0, %r)
from builders import tiny_model
device = "cuda" if torch.cuda.is_available() else "cpu"
model = tiny_model().to(device)
atoms_list = [molecule("H2O"), molecule("CH4")]
batch = data.Batch.from_atoms(atoms_list, model.r_max, device=device)
step = StaticStep(model, batch.numbers, batch.ptr, batch.cell, batch.pbc, skin=0.3, contraction="triton")
out, ref = step(batch.positions), model(batch)
assert step.contraction == "triton"
torch.testing.assert_close(out["energy"], ref["energy"], rtol=0, atol=1e-10)
torch.testing.assert_close(out["forces"], ref["forces"], rtol=0, atol=1e-10)
print("ok")
""" % str(Path(__file__).parents[1] / "support")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
