"""Evaluation passes of a training run: the error metrics of a model over a set of structures.

The trainer validates the exported (EMA) model every training.eval_every epochs on the validation graphs built
once (potential.training.graph_cache), and at the end evaluates the best model (model.pt) on the validation and
test sets through DataLoaders of data.collate: `final_evaluation` prints the table and writes test_metrics.json
(atomically). Metrics are potential.training.metrics.METRIC_NAMES (meV units) plus the loss under the given loss
weights; forces and stress are evaluated only where the set has those labels.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import data
from data.atomic import atomic_path
from .metrics import ErrorMetrics, LossWeights, compute_loss
from ..io import load_model

__all__ = ["has_label", "structure_loader", "evaluate_model", "evaluate_set", "final_evaluation"]


def has_label(structures, label: str) -> bool:
    """Whether any of `structures` has `label` ("energy" | "forces" | "stress")."""
    return any(getattr(s, label) is not None for s in structures)


def structure_loader(structures, batch_size, cutoff, num_workers) -> DataLoader:
    """Batches of data.collate (neighbor lists computed in the workers), in stored order. The loader's own
    generator seeds its workers, so that iterating it draws nothing from torch's global RNG."""
    return DataLoader(structures, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0), collate_fn=functools.partial(data.collate, cutoff=cutoff), drop_last=False,
                      persistent_workers=num_workers > 0)


def evaluate_model(model, loader, device, dtype, weights: LossWeights, forces: bool, stress: bool) -> dict:
    """Metrics (potential.training.metrics.METRIC_NAMES) of `model` over every batch of `loader`."""
    metrics = ErrorMetrics(device)
    model.eval()
    for batch in loader:
        batch = batch.to(device=device, dtype=dtype)
        out = model(batch, forces=forces, stress=stress, training=False)
        loss, _ = compute_loss(batch, out, weights)
        metrics.update(batch, out, loss)
    return metrics.compute()


def evaluate_set(model, batches, structures, device, dtype, weights: LossWeights) -> dict:
    """`evaluate_model` over `batches` of `structures`, with forces and stress where the structures have them."""
    return evaluate_model(model, batches, device, dtype, weights,
                          forces=has_label(structures, "forces"), stress=has_label(structures, "stress"))


def final_evaluation(model_path: Path, best_epoch: int, sets: dict, device, dtype, weights: LossWeights,
                     out_dir: Path, log) -> dict:
    """The best model (`model_path`) on each of `sets` ({"valid" | "test": (loader, structures) or None}):
    a table through `log` and out_dir/test_metrics.json. Returns {"best_epoch", "valid": metrics, "test": ...}."""
    best = load_model(model_path, device=device)
    result = {"best_epoch": best_epoch}
    for name, entry in sets.items():
        if entry is not None:
            result[name] = evaluate_set(best, *entry, device, dtype, weights)
    log(f"best model (epoch {best_epoch}) saved to '{model_path}':")
    for name in ("valid", "test"):
        if name in result:
            log(f"  {name:5s} " + ", ".join(f"{k} {v:.3f}" for k, v in result[name].items()
                                            if v is not None and k != "loss")
                + "  (meV/atom, meV, meV/Å, meV/Å^3)")
    with atomic_path(out_dir / "test_metrics.json") as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    return result
