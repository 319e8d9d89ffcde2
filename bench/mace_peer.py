"""MACE's side of bench/train_step.py: a ScaleShiftMACE training step as mace-torch's run_train takes it.

`mace_step(structures, size, stats, batch_size, backend, device)` -> window: `window(steps)` runs `steps`
optimizer steps from the DataLoader's first seeded epoch on (the same batches at every call), yielding the
number of structures of each. Each step is the loop body of mace.tools.train.train_one_epoch (take_step): a
batch from MACE's own DataLoader (mace.tools.torch_geometric, shuffle, drop_last, pin_memory as run_train's
defaults, num_workers=0), moved to the device, forward with training=True and compute_force=True,
WeightedEnergyForcesLoss (weights 1 and 100), backward, gradient clipping at 10, AdamW (lr 0.01, amsgrad, weight
decay 5e-7), the EMA update (torch_ema, decay 0.99, as MACE uses), and the loss read to the host (MACE's logger
does that every step).

The data are the same structures ours reads (data.Structure: Å, eV, eV/Å), given to MACE as its Configuration
objects and made into graphs by AtomicData.from_config (its matscipy neighbour lists), once, before timing, as
run_train does. backend: "e3nn" (MACE's default) or "cueq" (cuEquivariance: CuEquivarianceConfig(enabled=True,
layout="ir_mul", group="O3_e3nn", optimize_all=True, conv_fusion on CUDA), the configuration that
mace.tools.model_script_utils and mace.cli.convert_e3nn_cueq build). Needs mace-torch (0.3.16 tested), e3nn,
torch_ema and, for cueq, cuequivariance-torch on PYTHONPATH.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch


@contextlib.contextmanager
def default_dtype(dtype):
    """MACE builds its modules and graphs in torch's default dtype (run_train: tools.set_default_dtype)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _configurations(structures):
    from mace.data import Configuration
    return [Configuration(atomic_numbers=np.asarray(s.numbers), positions=np.asarray(s.positions),
                          properties={"energy": s.energy, "forces": np.asarray(s.forces)},
                          property_weights={"energy": 1.0, "forces": 1.0},
                          cell=np.asarray(s.cell), pbc=tuple(bool(p) for p in s.pbc))
            for s in structures]


def build_model(size: dict, stats: dict, backend: str, device):
    """ScaleShiftMACE at `size` (channels, lmax, lmax_sh, correlation, num_interactions, r_max, num_bessel,
    radial_hidden), run_train's other defaults (residual interaction blocks, 16x0e readout MLP, silu gate,
    5-term polynomial cutoff), E0s, avg_num_neighbors, scale and shift from `stats` (the same as ours)."""
    from e3nn import o3
    from mace import modules
    from mace.modules.wrapper_ops import CuEquivarianceConfig

    hidden = "+".join(f"{size['channels']}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(size["lmax"] + 1))
    cueq = None
    if backend == "cueq":
        cueq = CuEquivarianceConfig(enabled=True, layout="ir_mul", group="O3_e3nn", optimize_all=True,
                                    conv_fusion=device.type == "cuda")  # as run_train's cuEq model
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=float(size["r_max"]), num_bessel=int(size["num_bessel"]), num_polynomial_cutoff=5,
        max_ell=int(size["lmax_sh"]), interaction_cls=block, interaction_cls_first=block,
        num_interactions=int(size["num_interactions"]), num_elements=len(stats["elements"]),
        hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.asarray(stats["atomic_energies"]), avg_num_neighbors=float(stats["avg_num_neighbors"]),
        atomic_numbers=list(stats["elements"]), correlation=int(size["correlation"]),
        gate=modules.gate_dict["silu"], radial_MLP=list(size["radial_hidden"]), heads=["Default"],
        atomic_inter_scale=float(stats["scale"]), atomic_inter_shift=float(stats["shift"]), cueq_config=cueq)


def mace_step(structures, size: dict, stats: dict, batch_size: int, backend: str, device):
    from mace.data import AtomicData
    from mace.modules.loss import WeightedEnergyForcesLoss
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable
    from torch_ema import ExponentialMovingAverage

    device = torch.device(device)
    dtype = getattr(torch, size["dtype"])
    with default_dtype(dtype):
        z_table = AtomicNumberTable([int(z) for z in stats["elements"]])
        graphs = [AtomicData.from_config(c, z_table=z_table, cutoff=float(size["r_max"]), heads=["Default"])
                  for c in _configurations(structures)]
        model = build_model(size, stats, backend, device).to(device)
        loss_fn = WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=100.0).to(device)
    loader = torch_geometric.dataloader.DataLoader(
        dataset=graphs, batch_size=batch_size, shuffle=True, drop_last=True, pin_memory=device.type == "cuda",
        num_workers=0, generator=torch.Generator().manual_seed(0))
    if len(loader) == 0:
        raise ValueError(f"mace_step: batch size {batch_size} > {len(graphs)} structures (MACE drops short batches)")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=5e-7, amsgrad=True)
    ema = ExponentialMovingAverage(model.parameters(), decay=0.99)

    def window(steps: int):
        model.train()
        loader.generator.manual_seed(0)  # the same shuffled batches at every call
        done = 0
        while done < steps:
            for batch in loader:  # mace.tools.train.take_step
                batch = batch.to(device)
                batch_dict = batch.to_dict()
                optimizer.zero_grad(set_to_none=True)
                out = model(batch_dict, training=True, compute_force=True, compute_virials=False,
                            compute_stress=False)
                loss = loss_fn(pred=out, ref=batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                optimizer.step()
                ema.update()
                loss.item()  # MACE's logger reads the loss every step (to_numpy)
                yield int(batch.num_graphs)
                done += 1
                if done == steps:
                    return

    return window
