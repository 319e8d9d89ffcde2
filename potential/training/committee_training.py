"""Training a committee: ``training.committee: N`` in a train.py config.

Member k (k = 0 .. N-1) is an ordinary training run (potential.training.Trainer) in ``output_dir/member_k/``
with seed ``seed + k``. The seed sets the weight initialisation, the data order and, when ``data.valid`` is not
given, the train/valid split, so every member validates on its own structures. With ``training.bootstrap``
(the default) a member then trains on a bootstrap resample of its training split: as many structures as the
split holds, drawn with replacement (about 63% of them distinct). The members are trained one after another;
``--restart`` resumes each from its own checkpoint (a finished member only re-runs its final evaluation).

At the end the best model of each member is copied to ``output_dir/model_k.pt`` (atomically), and
``output_dir/committee.json`` lists the files with each member's seed and final validation/test metrics.
Use them with ``potential.Calculator.from_file([...model_k.pt])``, ``potential.evaluate(..., models=[...])``,
``md.py --model model_0.pt model_1.pt ...`` or ``screen.py --model ...``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from data.atomic import atomic_path

from .config import TrainConfig

__all__ = ["member_configs", "bootstrap", "collect_members"]


def member_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """The N member configs of a committee config: seed + k, output_dir/member_k, committee unset."""
    out = Path(cfg.output_dir)
    training = dataclasses.replace(cfg.training, committee=None)
    return [dataclasses.replace(cfg, seed=cfg.seed + k, output_dir=str(out / f"member_{k}"), training=training)
            for k in range(cfg.training.committee)]


def bootstrap(structures: list, seed: int) -> list:
    """A bootstrap resample of ``structures``: len(structures) draws with replacement, in stored order."""
    rng = np.random.default_rng([seed, 0xB007])
    return [structures[i] for i in np.sort(rng.integers(0, len(structures), len(structures)))]


def collect_members(cfg: TrainConfig, results: list[dict], log=print) -> dict:
    """Copy member_k/model.pt to model_k.pt, write committee.json; returns {"models": [...], "members": [...]}."""
    out = Path(cfg.output_dir)
    members = []
    for k, (member, result) in enumerate(zip(member_configs(cfg), results)):
        target = out / f"model_{k}.pt"
        with atomic_path(target) as tmp:
            shutil.copyfile(Path(member.output_dir) / "model.pt", tmp)
        members.append({"model": str(target), "seed": member.seed, "output_dir": member.output_dir, **result})
    summary = {"committee": len(members), "bootstrap": cfg.training.bootstrap,
               "models": [m["model"] for m in members], "members": members}
    with atomic_path(out / "committee.json") as tmp, open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    log(f"committee of {len(members)}: " + " ".join(m["model"] for m in members))
    return summary
