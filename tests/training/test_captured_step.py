"""The padded static-shape training step (potential/training/captured_step.py) against today's eager step in
potential/training/trainer.py: same loss, gradients, updated weights, optimizer state, EMA and metric sums, in float64, for
three batch compositions (run eagerly on CPU; captured as a CUDA graph in the gpu test). Data parallel: two gloo
processes at batch B give the weights of one process at batch 2B."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import data
import potential
from potential.training.captured_step import PaddedBatch, TrainStep, bucket
from potential.training.metrics import ErrorMetrics, LossWeights, compute_loss
from potential.model import calling_thread_backward

R_MAX = 3.0
DECAY = 0.9


def tiny_model(dtype="float64", backend="reference", seed=0):
    torch.manual_seed(seed)
    cfg = potential.ModelConfig(elements=[1, 8, 29], channels=8, lmax=1, lmax_sh=2, correlation=2,
                                num_interactions=2, r_max=R_MAX, num_bessel=4, radial_hidden=(8,), readout_hidden=4,
                                avg_num_neighbors=8.0, atomic_energies=[-1.0, -2.0, -3.0], scale=0.5, shift=0.1,
                                dtype=dtype, backend=backend)
    return potential.Potential(cfg)


def _water(index, energy=True):
    atoms = molecule("H2O")
    atoms.positions *= 1.05
    atoms.calc = EMT()
    return data.Structure(positions=atoms.positions, numbers=atoms.numbers, cell=np.zeros((3, 3)),
                          pbc=np.zeros(3, bool), energy=atoms.get_potential_energy() if energy else None,
                          forces=atoms.get_forces(), index=index, weight=1.5)


def compositions(emt):
    """Three batches for 3 slots: full periodic with stress; a short one with a missing stress; a molecule and
    cells of two sizes with partial labels (no energy on one, no forces on another)."""
    cells = emt(8, seed=7, stress_every=2)
    big = emt(1, seed=8)[0]
    big = data.Structure(positions=np.concatenate([big.positions, big.positions + [1.8, 0, 0]]),
                         numbers=np.concatenate([big.numbers, big.numbers]), cell=big.cell * [[2], [1], [1]],
                         pbc=big.pbc, energy=None, forces=np.zeros((8, 3)), stress=None, index=20)
    no_forces = data.Structure(positions=cells[5].positions, numbers=cells[5].numbers, cell=cells[5].cell,
                               pbc=cells[5].pbc, energy=cells[5].energy, forces=None, index=21)
    full = [c for c in cells if c.stress is not None][:3]
    return [full, [cells[1], cells[2]], [_water(22), big, no_forces]]


def eager_step(model, optimizer, ema, batch, weights, forces, stress, clip):
    """The body of Trainer._train_epoch's loop (one process)."""
    params = list(model.parameters())
    out = model(batch, forces=forces, stress=stress, training=True)
    loss, _ = compute_loss(batch, out, weights)
    optimizer.zero_grad(set_to_none=True)
    with calling_thread_backward():
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    ema.update_parameters(model)
    metrics = ErrorMetrics(batch.positions.device)
    metrics.update(batch, out, loss)
    return loss.detach(), norm, metrics.sums


def make_pair(device, capturable, dtype="float64", backend="reference"):
    """(model, optimizer, ema) twice, identical: one for the eager step, one for the padded step."""
    sets = []
    for cap in (False, capturable):
        model = tiny_model(dtype, backend).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=1e-3, amsgrad=True, capturable=cap)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY))
        sets.append((model, optimizer, ema))
    return sets


def assert_same(a, b, rtol, atol, what):
    assert torch.allclose(a.double().cpu(), b.double().cpu(), rtol=rtol, atol=atol), \
        f"{what}: max diff {(a.double().cpu() - b.double().cpu()).abs().max().item():.3g}"


def compare(emt, device, capturable, cuda_graph, dtype="float64", backend="reference", rtol=1e-9, atol=1e-12,
            masked=None):
    (m0, o0, e0), (m1, o1, e1) = make_pair(device, capturable, dtype, backend)
    weights = LossWeights(energy=1.0, forces=10.0, stress=100.0)
    clip = 0.5  # small enough to act
    step = TrainStep(m1, o1, weights, batch_size=3, forces=True, stress=True, clip_grad_norm=clip, ema=e1,
                     ema_decay=DECAY, cuda_graph=cuda_graph)
    if masked is not None:
        step.masked = masked  # the capture-safe contraction of reference-backend captures, also eagerly
    for structures in compositions(emt):
        batch = data.collate(structures, R_MAX).to(device=device, dtype=m0.dtype)
        for _ in range(2):  # the second step sees Adam's moments and the EMA's lerp
            want = eager_step(m0, o0, e0, batch, weights, True, True, clip)
            got = step(batch)
            for name, g, w in zip(("loss", "grad norm", "metric sums"), got, want):
                assert_same(g, w, rtol, atol, name)
            for (name, p0), p1, a0, a1 in zip(m0.named_parameters(), m1.parameters(), e0.module.parameters(),
                                              e1.module.parameters()):
                assert_same(p1.grad, p0.grad, rtol, atol, f"grad {name}")
                assert_same(p1, p0, rtol, atol, f"weight {name}")
                assert_same(a1, a0, rtol, atol, f"EMA {name}")
                for key, v0 in o0.state[p0].items():
                    assert_same(o1.state[p1][key], v0, rtol, atol, f"optimizer {key} {name}")
    assert int(e1.n_averaged) == int(e0.n_averaged) == 6
    return step


def test_bucket_ladder():
    sizes = range(1, 5000)
    assert all(n <= bucket(n) <= max(8, n * 9 // 8 + 1) for n in sizes)
    assert len({bucket(n) for n in range(100, 200)}) == 9


def test_padded_step_equals_eager_step_float64(emt):
    step = compare(emt, "cpu", capturable=False, cuda_graph=False)
    assert len(step._buffers) == 3 and step.captures == 0


def test_masked_contraction_step_equals_eager_step_float64(emt):
    step = compare(emt, "cpu", capturable=False, cuda_graph=False, masked=True)
    assert len(step._ops) == 3


def test_padding_is_exact_zero(emt):
    """The padded forward gives the unpadded energies, forces and stress, and padding gets nothing."""
    model = tiny_model()
    structures = compositions(emt)[2]
    batch = data.collate(structures, R_MAX)
    p = PaddedBatch.empty(bucket(batch.num_atoms + 1) + 5, bucket(batch.num_edges) + 40, 4, torch.float64, "cpu")
    p.load(batch, model.species_index(batch.numbers))
    want = model(batch, forces=True, stress=True)
    from potential.training.captured_step import PaddedForward
    got = PaddedForward(model)(p, True, True)
    b, n = batch.num_structures, batch.num_atoms
    assert_same(got["energy"][:b], want["energy"], 1e-12, 1e-12, "energy")
    assert_same(got["forces"][:n], want["forces"], 1e-12, 1e-12, "forces")
    assert_same(got["stress"][:b], want["stress"], 1e-12, 1e-12, "stress")
    assert torch.all(got["forces"][n:] == 0) and torch.all(got["energy"][b:4] == 0)
    assert torch.all(got["stress"][b:] == 0)
    with pytest.raises(ValueError, match="does not fit"):
        PaddedBatch.empty(8, 8, 2, torch.float64, "cpu").load(batch, model.species_index(batch.numbers))


def run_ddp_steps(tmp_path, *args):
    """tests/training/ddp_steps.py: DDP of the padded and of the eager step (2 processes) against one process."""
    script = Path(__file__).with_name("ddp_steps.py")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(script), str(tmp_path), *args], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [torch.load(tmp_path / f"{kind}rank{r}.pt") for kind in ("", "eager_") for r in range(2)]
    single = torch.load(tmp_path / "single.pt")
    for name, w in single.items():
        for r in range(4):
            assert_same(ranks[r][name], w, 1e-9, 1e-12, f"{'eager ' if r > 1 else ''}rank {r % 2} {name}")
    assert any(not torch.equal(single[k], ranks[0]["initial." + k]) for k in single if "initial." + k in ranks[0])


def test_two_gloo_ranks_at_b_equal_one_rank_at_2b(tmp_path):
    run_ddp_steps(tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_nccl_ranks_captured_at_b_equal_one_rank_at_2b(tmp_path):
    run_ddp_steps(tmp_path, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_captured_step_equals_eager_step_cuda_float64(emt, backend):
    step = compare(emt, "cuda", capturable=True, cuda_graph=True, backend=backend)
    assert step.cuda_graph, "the capture fell back to eager (see the RuntimeWarning)"
    assert step.captures == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_captured_step_float32_cuda(emt):
    step = compare(emt, "cuda", capturable=True, cuda_graph=True, dtype="float32", backend="auto",
                   rtol=2e-3, atol=2e-5)
    assert step.cuda_graph and step.captures == 3


def test_trainer_padded_path_equals_eager_path(cu_h5, make_config, tmp_path):
    """training.graph=on (the padded step, eager on CPU) trains like graph=off: same per-epoch metrics, weights,
    EMA and optimizer state, through a warm-up, the plateau scheduler, a stage-two switch and a restart."""
    import potential.training.trainer as training
    import train
    from potential.training.checkpoint import load_checkpoint
    from potential.training.config import dump_config

    section = {"max_epochs": 4, "warmup_steps": 3, "clip_grad_norm": 1.0,
               "stage_two": {"start_epoch": 2, "energy_weight": 10.0, "forces_weight": 1.0, "lr": 0.002}}
    training.run(make_config(cu_h5, output_dir=str(tmp_path / "off"), training={**section, "graph": "off"}))
    padded = make_config(cu_h5, output_dir=str(tmp_path / "on"), training={**section, "graph": "on"})
    path = tmp_path / "on.yaml"
    dump_config(padded, path)
    assert train.main(["--config", str(path), "--set", "training.max_epochs=3"]) == 0
    assert train.main(["--config", str(path), "--restart"]) == 0
    a, b = load_checkpoint(tmp_path / "off" / "checkpoint.pt"), load_checkpoint(tmp_path / "on" / "checkpoint.pt")
    assert (a["epoch"], a["step"], a["stage"]) == (b["epoch"], b["step"], b["stage"]) == (4, 20, 2)
    for part in ("model", "ema"):
        for key, value in a[part].items():
            assert_same(b[part][key], value, 1e-8, 1e-12, f"{part}.{key}")
    for (_, va), (_, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        for k in va:
            assert_same(vb[k], va[k], 1e-8, 1e-12, f"optimizer {k}")
    import csv
    rows = [list(csv.DictReader(open(tmp_path / run / "metrics.csv"))) for run in ("off", "on")]
    assert len(rows[0]) == len(rows[1]) == 4
    for ra, rb in zip(*rows):
        for key, value in ra.items():
            if value and key != "time_s":
                assert float(rb[key]) == pytest.approx(float(value), rel=1e-8, abs=1e-12), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_trainer_captured_cuda_equals_eager(cu_h5, make_config, tmp_path, backend):
    """On CUDA, training.graph=auto captures; it trains like graph=off (float64), stage two included."""
    import potential.training.trainer as training
    from potential.training.checkpoint import load_checkpoint

    section = {"max_epochs": 3, "warmup_steps": 3, "clip_grad_norm": 1.0,
               "stage_two": {"start_epoch": 2, "energy_weight": 10.0, "forces_weight": 1.0, "lr": 0.002}}
    model = {"backend": backend}
    runs = {}
    for graph in ("off", "auto"):
        cfg = make_config(cu_h5, output_dir=str(tmp_path / graph), device="cuda", model=model,
                          training={**section, "graph": graph})
        trainer = training.Trainer(cfg)
        trainer.train()
        runs[graph] = trainer
    captured = runs["auto"].train_step
    assert captured is not None and captured.cuda_graph and captured.captures >= 2  # stage two re-captures
    a, b = load_checkpoint(tmp_path / "off" / "checkpoint.pt"), load_checkpoint(tmp_path / "auto" / "checkpoint.pt")
    for part in ("model", "ema"):
        for key, value in a[part].items():
            assert_same(b[part][key], value, 1e-7, 1e-10, f"{part}.{key}")


def test_padded_path_stops_on_a_non_finite_step(cu_h5, make_config, tmp_path):
    """The padded path reads its finite flags once per epoch, and still names the first bad step's structures."""
    import potential.training.trainer as training

    cfg = make_config(cu_h5, training={"graph": "on", "lr": 1e30, "clip_grad_norm": None, "max_epochs": 2})
    trainer = training.Trainer(cfg)
    message = r"non-finite loss \(nan\) at epoch 1, step 2: batch of structures \["
    with pytest.raises(training.TrainingError, match=message):
        trainer.train()
    assert trainer.train_step is not None and not (tmp_path / "run" / "checkpoint.pt").exists()
