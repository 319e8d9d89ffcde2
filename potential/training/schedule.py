"""The schedule of a training run: when the learning rate, the loss weights and the stage change, and when it stops.

Stage one trains with training.{energy,forces,stress}_weight at training.lr, with a linear warmup over
`warmup_steps` optimizer steps (torch's LinearLR, from lr / (warmup_steps + 1) to lr), then ReduceLROnPlateau
(stepped with each validation loss) or CosineAnnealingLR (stepped every epoch). Stage two (training.stage_two,
like MACE's SWA stage) starts after `start_epoch` epochs, or after `start_fraction` of max_epochs or of the time
budget (whichever comes first), and trains with its own loss weights at a constant lr (warmup and scheduler stop).
Training stops after max_epochs, or before an epoch that would (judging by the last one) end past the time budget.

`Schedule` holds torch's schedulers and answers from the run's counters (epoch, step, stage, elapsed seconds),
which the trainer keeps and checkpoints; its state_dict holds the schedulers' states under the checkpoint's keys
"warmup" and "scheduler".
"""

from __future__ import annotations

import torch

from .config import TrainingConfig
from .metrics import LossWeights

__all__ = ["Schedule"]


class Schedule:
    """Warmup, learning-rate scheduler, stage-two switch and stop rule of one run (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, t: TrainingConfig):
        self.optimizer, self.t = optimizer, t
        self.warmup = None if t.warmup_steps == 0 else torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=1.0 / (t.warmup_steps + 1), end_factor=1.0, total_iters=t.warmup_steps)
        if t.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=t.lr_factor, patience=t.patience, min_lr=t.min_lr)
        elif t.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.max_epochs, eta_min=t.min_lr)
        else:
            self.scheduler = None

    def loss_weights(self, stage: int) -> LossWeights:
        """The loss weights of `stage` (1 or 2); stage two keeps stage one's stress weight unless it sets one."""
        t, s = self.t, self.t.stage_two
        if stage == 1:
            return LossWeights(t.energy_weight, t.forces_weight, t.stress_weight, t.huber_delta)
        return LossWeights(s.energy_weight, s.forces_weight,
                           t.stress_weight if s.stress_weight is None else s.stress_weight, t.huber_delta)

    def after_step(self, step: int, stage: int) -> None:
        """After optimizer step number `step` (counted from 1): the warmup's step, in stage one only."""
        if self.warmup is not None and step <= self.t.warmup_steps and stage == 1:
            self.warmup.step()

    def after_epoch(self, stage: int, valid_loss: float | None) -> None:
        """After an epoch: the scheduler's step in stage one (plateau only on epochs that were validated)."""
        if self.scheduler is None or stage != 1:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if valid_loss is not None:
                self.scheduler.step(valid_loss)
        else:
            self.scheduler.step()

    def stage_two_due(self, stage: int, epoch: int, elapsed: float) -> bool:
        """Whether stage two starts before the next epoch (`epoch` epochs done, `elapsed` seconds trained)."""
        t, s = self.t, self.t.stage_two
        if s is None or stage == 2:
            return False
        if s.start_epoch is not None:
            return epoch >= s.start_epoch
        # a fraction of max_epochs or of the time budget, whichever comes first
        by_epoch = t.max_epochs is not None and epoch >= int(round(s.start_fraction * t.max_epochs))
        by_time = t.time_budget_minutes is not None and elapsed >= s.start_fraction * t.time_budget_minutes * 60
        return by_epoch or by_time

    def start_stage_two(self) -> None:
        """Set stage two's constant learning rate (in place where it is a tensor: captured steps read that tensor)."""
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(self.t.stage_two.lr)
            else:
                group["lr"] = self.t.stage_two.lr

    def stop_due(self, epoch: int, elapsed: float, last_epoch_s: float) -> bool:
        """Whether training stops: max_epochs done, or one more epoch as long as the last would pass the budget."""
        t = self.t
        if t.max_epochs is not None and epoch >= t.max_epochs:
            return True
        return t.time_budget_minutes is not None and elapsed + last_epoch_s > 60 * t.time_budget_minutes

    def state_dict(self) -> dict:
        return {"warmup": None if self.warmup is None else self.warmup.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name in ("warmup", "scheduler"):
            if getattr(self, name) is not None and state[name] is not None:
                getattr(self, name).load_state_dict(state[name])
