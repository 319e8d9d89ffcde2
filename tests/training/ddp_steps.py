"""Helper of test_captured_step.py (a script, so that torch.multiprocessing can spawn its functions):

    python tests/training/ddp_steps.py OUT_DIR [cuda]

Two gloo processes train the padded step (potential.training.captured_step.TrainStep, ddp=True: torch's
DistributedDataParallel) at 2 structures per step, rank r taking order[r::2] of each 4 structures (as
DistributedSampler deals them), and then, from the same start, the eager step of potential/training/trainer.py (the
Potential wrapped in DistributedDataParallel); then one process trains at 4 structures per step on the same
order. Writes OUT_DIR/rank{0,1}.pt, OUT_DIR/eager_rank{0,1}.pt and OUT_DIR/single.pt: {parameter name: weights}
and {"ema." + name: EMA weights} after 2 steps, and in the rank files {"initial." + name: weights before
training}. All structures have the same size and
labels, so a mean over 2 x 2 structures is the mean over 4 (the loss terms are masked means).
With `cuda`: rank r on GPU r (NCCL), the padded step captured as CUDA graphs (capturable AdamW), one process on
GPU 0; needs 2 GPUs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]  # this checkout's packages, then the tests' conftest
from conftest import emt_structures  # noqa: E402

R_MAX, DECAY, STEPS = 3.0, 0.9, 2


def setup(device="cpu"):
    """(model, optimizer, ema, step factory, batches of 4 structures): identical in every process."""
    import data
    import potential
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    cfg = potential.ModelConfig(elements=[29], channels=8, lmax=1, lmax_sh=2, correlation=2, num_interactions=1,
                                r_max=R_MAX, num_bessel=4, radial_hidden=(8,), readout_hidden=4,
                                avg_num_neighbors=12.0, atomic_energies=[-3.0], scale=0.5, dtype="float64",
                                backend="reference")
    model = potential.Potential(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=1e-3, amsgrad=True,
                                  capturable=torch.device(device).type == "cuda")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY))
    structures = emt_structures(4 * STEPS, seed=11)
    order = torch.randperm(len(structures), generator=torch.Generator().manual_seed(3)).tolist()
    groups = [[structures[i] for i in order[4 * k:4 * k + 4]] for k in range(STEPS)]
    return model, optimizer, ema, groups, data.collate


def state(model, ema) -> dict:
    out = {name: p.detach().cpu().clone() for name, p in model.named_parameters()}
    out.update({"ema." + name: p.detach().cpu().clone() for name, p in ema.module.named_parameters()})
    return out


def train(rank: int, world: int, out_dir: str, cuda: bool = False) -> None:
    from potential.training.captured_step import TrainStep
    from potential.training.metrics import LossWeights

    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "0"  # DDP inside CUDA graphs (torch's notes)
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank,
                                world_size=world)
    model, optimizer, ema, groups, collate = setup(device)
    initial = {"initial." + k: v for k, v in state(model, ema).items() if not k.startswith("ema.")}
    step = TrainStep(model, optimizer, LossWeights(energy=1.0, forces=10.0, stress=100.0), batch_size=4 // world,
                     forces=True, stress=True, clip_grad_norm=0.5, ema=ema, ema_decay=DECAY, ddp=world > 1,
                     cuda_graph=cuda)
    for group in groups:
        step(collate(group[rank::world], R_MAX).to(device=device))
    assert step.cuda_graph == cuda, "the CUDA-graph capture fell back to the eager padded step"
    result = state(model, ema)
    if world > 1:
        result.update(initial)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        torch.save(train_eager(rank, world, device), Path(out_dir) / f"eager_rank{rank}.pt")
        dist.destroy_process_group()
    else:
        torch.save(result, Path(out_dir) / "single.pt")


def train_eager(rank: int, world: int, device) -> dict:
    """The eager step of Trainer._train_epoch under DistributedDataParallel (no padding)."""
    from potential.training.metrics import LossWeights, compute_loss

    model, optimizer, ema, groups, collate = setup(device)
    for g in optimizer.param_groups:
        g["capturable"] = False  # the eager step: torch's default
    net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)  # as potential/training/trainer.py
    weights = LossWeights(energy=1.0, forces=10.0, stress=100.0)
    for group in groups:
        batch = collate(group[rank::world], R_MAX).to(device=device)
        out = net(batch, forces=True, stress=True, training=True)
        loss, _ = compute_loss(batch, out, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.5)
        optimizer.step()
        ema.update_parameters(model)
    return state(model, ema)


if __name__ == "__main__":
    out, cuda = sys.argv[1], sys.argv[2:] == ["cuda"]
    mp.spawn(train, args=(2, out, cuda), nprocs=2, join=True)
    train(0, 1, out, cuda)
