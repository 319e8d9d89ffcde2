"""Training loss and error metrics for energies, forces and stresses.

Loss (per batch, every term a masked mean, so labels absent from a structure contribute nothing):
    L = w_E * mean_{s: has_energy} weight_s * rho((E_s - E_s^ref) / N_s)            (eV/atom)^2
      + w_F * mean_{atoms i, components a: has_forces} weight_s(i) * rho(F_ia - F_ia^ref)   (eV/Å)^2
      + w_S * mean_{s: has_stress, components ab} weight_s * rho(S_sab - S_sab^ref)          (eV/Å^3)^2
with rho(x) = x^2, or the Huber function with `huber_delta` (then 0.5 x^2 near 0). A term with no label in the
batch is 0. Everything is accumulated in float64.

Metrics are MAE and RMSE in meV units: energy per atom (meV/atom), energy per structure (meV), force components
(meV/Å), stress components (meV/Å^3). `ErrorMetrics` keeps running sums in one float64 tensor so that
distributed runs can all-reduce it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["LossWeights", "compute_loss", "ErrorMetrics", "METRIC_NAMES", "format_header", "format_row"]


@dataclass
class LossWeights:
    energy: float = 1.0        # on (eV/atom)^2
    forces: float = 100.0      # on (eV/Å)^2
    stress: float = 1.0        # on (eV/Å^3)^2
    huber_delta: Optional[float] = None


def _rho(diff: torch.Tensor, delta: Optional[float]) -> torch.Tensor:
    if delta is None:
        return diff * diff
    return torch.nn.functional.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=delta)


def _atoms_per_structure(batch) -> torch.Tensor:
    return (batch.ptr[1:] - batch.ptr[:-1]).to(torch.float64)  # [B]


def compute_loss(batch, out: dict, w: LossWeights) -> tuple[torch.Tensor, dict]:
    """Weighted loss of one batch. `out` holds the model's "energy" [B] and, when their weight is nonzero,
    "forces" [N,3] / "stress" [B,3,3]. Returns (loss scalar float64, {"energy"|"forces"|"stress": term})."""
    weight = batch.weight.to(torch.float64)                                   # [B]
    zero = torch.zeros((), dtype=torch.float64, device=weight.device)
    terms = {}
    if w.energy > 0:
        mask = batch.has_energy                                               # [B]
        ref = torch.where(mask, batch.energy, torch.zeros_like(batch.energy))  # NaN where absent -> 0
        diff = (out["energy"].to(torch.float64) - ref) / _atoms_per_structure(batch)
        pen = torch.where(mask, weight * _rho(diff, w.huber_delta), zero)
        terms["energy"] = pen.sum() / mask.sum().clamp(min=1)
    if w.forces > 0 and "forces" in out:
        mask = batch.has_forces[batch.batch]                                  # [N]
        diff = (out["forces"] - batch.forces).to(torch.float64)               # [N,3]
        pen = _rho(diff, w.huber_delta) * weight[batch.batch][:, None]
        pen = torch.where(mask[:, None], pen, zero)
        terms["forces"] = pen.sum() / (3 * mask.sum()).clamp(min=1)
    if w.stress > 0 and "stress" in out:
        mask = batch.has_stress                                               # [B]
        diff = (out["stress"] - batch.stress).to(torch.float64)               # [B,3,3]
        pen = _rho(diff, w.huber_delta) * weight[:, None, None]
        pen = torch.where(mask[:, None, None], pen, zero)
        terms["stress"] = pen.sum() / (9 * mask.sum()).clamp(min=1)
    loss = zero
    for name, term in terms.items():
        loss = loss + getattr(w, name) * term
    return loss, terms


# running sums, in this order, of one float64 vector
_SUMS = ["loss", "n_struct", "e_abs", "e_sq", "ea_abs", "ea_sq", "n_e", "f_abs", "f_sq", "n_f", "s_abs", "s_sq", "n_s"]
# reported metrics: (key, unit); key = quantity_stat
METRIC_NAMES = [
    ("loss", ""), ("e_atom_mae", "meV/atom"), ("e_atom_rmse", "meV/atom"), ("e_mae", "meV"), ("e_rmse", "meV"),
    ("f_mae", "meV/Å"), ("f_rmse", "meV/Å"), ("s_mae", "meV/Å^3"), ("s_rmse", "meV/Å^3"),
]


class ErrorMetrics:
    """Running MAE / RMSE over batches. `update(batch, out, loss)`; `compute()` -> dict of METRIC_NAMES keys
    (None where the set has no such label)."""

    def __init__(self, device=None):
        self.sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)

    def _add(self, **values) -> None:
        for k, v in values.items():
            self.sums[_SUMS.index(k)] += v

    @torch.no_grad()
    def update(self, batch, out: dict, loss: torch.Tensor) -> None:
        b = batch.num_structures
        self._add(loss=loss.detach() * b, n_struct=b)
        mask = batch.has_energy
        if bool(mask.any()):
            d = (out["energy"].detach().to(torch.float64) - batch.energy)[mask]       # eV [B_e]
            da = d / _atoms_per_structure(batch)[mask]                               # eV/atom
            self._add(e_abs=d.abs().sum(), e_sq=(d * d).sum(), ea_abs=da.abs().sum(), ea_sq=(da * da).sum(),
                      n_e=d.numel())
        if "forces" in out:
            mask = batch.has_forces[batch.batch]
            if bool(mask.any()):
                d = (out["forces"].detach() - batch.forces)[mask].to(torch.float64)  # eV/Å [N_f,3]
                self._add(f_abs=d.abs().sum(), f_sq=(d * d).sum(), n_f=d.numel())
        if "stress" in out:
            mask = batch.has_stress
            if bool(mask.any()):
                d = (out["stress"].detach() - batch.stress)[mask].to(torch.float64)  # eV/Å^3 [B_s,3,3]
                self._add(s_abs=d.abs().sum(), s_sq=(d * d).sum(), n_s=d.numel())

    def compute(self) -> dict:
        s = dict(zip(_SUMS, self.sums.tolist()))

        def pair(abs_key, sq_key, n_key):
            n = s[n_key]
            if n == 0:
                return None, None
            return 1000.0 * s[abs_key] / n, 1000.0 * math.sqrt(s[sq_key] / n)   # eV -> meV

        r = {"loss": s["loss"] / s["n_struct"] if s["n_struct"] else None}
        r["e_atom_mae"], r["e_atom_rmse"] = pair("ea_abs", "ea_sq", "n_e")
        r["e_mae"], r["e_rmse"] = pair("e_abs", "e_sq", "n_e")
        r["f_mae"], r["f_rmse"] = pair("f_abs", "f_sq", "n_f")
        r["s_mae"], r["s_rmse"] = pair("s_abs", "s_sq", "n_s")
        return r


_COLUMNS = [  # (header, key, width)
    ("epoch", "epoch", 5), ("lr", "lr", 8), ("train loss", "train_loss", 10), ("valid loss", "valid_loss", 10),
    ("E/at MAE", "e_atom_mae", 8), ("E/at RMSE", "e_atom_rmse", 9), ("E MAE", "e_mae", 8), ("E RMSE", "e_rmse", 8),
    ("F MAE", "f_mae", 8), ("F RMSE", "f_rmse", 8), ("S MAE", "s_mae", 8), ("S RMSE", "s_rmse", 8),
    ("time s", "time", 7),
]


def format_header() -> str:
    """Two header lines for the per-epoch table: names, then units (meV, meV/Å, meV/Å^3)."""
    units = {"e_atom_mae": "meV/at", "e_atom_rmse": "meV/at", "e_mae": "meV", "e_rmse": "meV",
             "f_mae": "meV/Å", "f_rmse": "meV/Å", "s_mae": "meV/Å3", "s_rmse": "meV/Å3"}
    names = " ".join(f"{h:>{w}}" for h, _, w in _COLUMNS)
    unit_line = " ".join(f"{units.get(k, ''):>{w}}" for _, k, w in _COLUMNS)
    return names + "\n" + unit_line


def format_row(values: dict) -> str:
    """One table line; `values` maps the column keys to numbers (None or missing -> '-')."""
    cells = []
    for _, key, width in _COLUMNS:
        v = values.get(key)
        if v is None:
            cells.append(f"{'-':>{width}}")
        elif key == "epoch":
            cells.append(f"{v:>{width}}")
        elif key in ("lr", "train_loss", "valid_loss"):
            cells.append(f"{v:>{width}.3g}")
        else:
            cells.append(f"{v:>{width}.{1 if v >= 100 else 2}f}")
    return " ".join(cells)
