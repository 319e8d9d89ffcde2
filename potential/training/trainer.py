"""The training run behind `python train.py --config X.yaml`.

`run(cfg, restart=False)`:
  1. checks the inputs and fails before training (device, files, labels vs loss weights, elements, batch size);
  2. reads and splits the data and computes the model's data-derived inputs (potential.training.trainset);
  3. trains with Adam/AdamW, a linear warmup (LinearLR, per optimizer step) then ReduceLROnPlateau (per
     validation) or CosineAnnealingLR (per epoch), gradient clipping, an EMA of the weights
     (torch.optim.swa_utils.AveragedModel) used for validation and export, and an optional second stage;
  4. writes into output_dir: config.yaml, train.log, metrics.csv (one row per epoch), model.pt (best EMA
     model by validation loss, potential.save_model), checkpoint.pt (every epoch, atomic) and, at the end,
     test_metrics.json (best model on the validation and test sets).

Restarts are exact: data order depends only on (seed, epoch) (the sampler's generator is reseeded every epoch)
and the checkpoint holds model, EMA, optimizer, schedulers, RNG states and counters. Distributed data
parallel runs start under torchrun (WORLD_SIZE > 1): each process takes batch_size structures per step, the
gradients are averaged by torch's DistributedDataParallel during the backward, every process validates on the
whole validation set (so all agree on the best model and the scheduler), rank 0's clock decides time-budget
stops, and rank 0 writes every file.

Graphs: the training and validation graphs are built once (potential.training.graph_cache, cached beside the data file)
and batches are gathered on the device in the sampler's order. training.graph (auto: on for CUDA) selects the
padded static-shape step (potential.training.captured_step: one CUDA graph per bucket on CUDA, with a capturable optimizer
and a tensor learning rate); off runs the eager unpadded step below.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from ase.data import chemical_symbols
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
# tqdm, not tqdm.auto: the latter's asyncio class calls iter() in __init__, which on a persistent-worker
# DataLoader starts a second pass (prefetching from the sampler) and so shifts the data order
from tqdm import tqdm

import data
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from . import finetune
from .captured_step import TrainStep
from .committee_training import bootstrap, collect_members, member_configs
from .config import ConfigError, TrainConfig, config_to_dict, dump_config
from .energy_offsets import apply_species_shift, species_shift_correction
from .graph_cache import GraphSet
from .metrics import METRIC_NAMES, ErrorMetrics, LossWeights, compute_loss, format_header, format_row
from ..io import load_model, save_model
from ..model import ModelConfig, Potential, calling_thread_backward
from .trainset import data_statistics, prepare_data

__all__ = ["CSV_FIELDS", "TrainingError", "resolve_device", "evaluate_model", "Trainer", "run"]

_RESTART_KEYS = ("data", "model", "seed", "dtype")   # must match between a checkpoint and a restart
CSV_FIELDS = (["epoch", "step", "stage", "lr", "time_s"] + [f"train_{k}" for k, _ in METRIC_NAMES]
              + [f"valid_{k}" for k, _ in METRIC_NAMES])   # metrics.csv columns; errors in meV units


class TrainingError(RuntimeError):
    """Training stopped (non-finite loss or gradient); the message names the batch's structure indices."""


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA GPU is available "
                          "(torch.cuda.is_available() is False); use device: cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _loader(structures, batch_size, cutoff, num_workers, sampler=None) -> DataLoader:
    """Batches of data.collate (neighbor lists computed in the workers), in the sampler's order (default: as
    stored). The loader's own generator only seeds its workers (which draw no random numbers), so the
    sampler's generator alone decides the order, however the workers are started."""
    return DataLoader(structures, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0),
                      collate_fn=functools.partial(data.collate, cutoff=cutoff), drop_last=False,
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


def _has(structures, label: str) -> bool:
    return any(getattr(s, label) is not None for s in structures)


class Trainer:
    """One training run; `Trainer(cfg, restart).train()`."""

    def __init__(self, cfg: TrainConfig, restart: bool = False, overwrite: bool = False, member: int | None = None):
        self.cfg, t = cfg, cfg.training
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(cfg.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if self.device.type == "cuda" and cfg.training.graph != "off":
                # torch's CUDA-graph notes: NCCL's async error handling must be off for DDP inside a captured step
                os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        self.dtype = getattr(torch, cfg.dtype)
        self.out = Path(cfg.output_dir)
        self.ckpt_path, self.model_path = self.out / "checkpoint.pt", self.out / "model.pt"
        if not restart and self.ckpt_path.exists() and not overwrite:
            raise ConfigError(f"output_dir: '{self.out}' already holds a run (checkpoint.pt); pass --restart to "
                              f"resume it, --overwrite to start again, or --set output_dir=<new folder>")
        ckpt = load_checkpoint(self.ckpt_path) if restart else None
        if ckpt is not None:
            old = ckpt["config"]
            new = config_to_dict(cfg)
            changed = [k for k in _RESTART_KEYS if old.get(k) != new.get(k)]
            if changed:
                raise ConfigError(f"--restart: the config's {', '.join(changed)} differ from those of "
                                  f"'{self.ckpt_path}'; only training settings may change on a restart")
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if not restart:
                for name in ("metrics.csv", "train.log", "test_metrics.json", "model.pt"):
                    (self.out / name).unlink(missing_ok=True)
        self.sets = prepare_data(cfg, log=self.log)
        if member is not None and t.bootstrap:  # a committee member (potential/training/committee_training.py)
            self.sets.train = bootstrap(self.sets.train, cfg.seed)
            self.log(f"committee member {member}: bootstrap resample of the training split "
                     f"({len({id(s) for s in self.sets.train})} distinct of {len(self.sets.train)})")
        self.source = finetune.load_source(cfg) if cfg.model.init_from is not None else None
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        if ckpt is not None:
            self.stats = ckpt["stats"]
        else:
            self.stats = data_statistics(cfg, self.sets, log=self.log)
            if self.source is not None:  # the whole model config: the source's architecture (potential/training/finetune.py)
                self.stats = finetune.model_config(cfg, self.source, self.stats, log=self.log)
        model_dict = {k: v for k, v in config_to_dict(cfg.model).items()
                      if v is not None and k not in finetune.SECTION_KEYS}
        model_dict.update(self.stats, dtype=cfg.dtype)
        try:
            model_config = ModelConfig.from_dict(model_dict)
        except ValueError as e:
            raise ConfigError(f"model: {e}") from e
        self.model = Potential(model_config).to(self.device)
        self.model.zero_readouts()  # start from E = E0 + shift (a restart then loads its own weights)
        if self.source is not None and ckpt is None:
            finetune.transfer(self.model, self.source, self.sets.train, cfg.model.refit_references, log=self.log)
        held = finetune.freeze(self.model, t.freeze, self.source.elements, log=self.log) if t.freeze else []
        self._precompiled = False  # the first step of this process compiles its kernels at once (_precompile)
        if self.world > 1:
            for p in self.model.parameters():
                dist.broadcast(p.data, 0)
        self.ema = None if t.ema_decay is None else AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay))
        params = [p for p in self.model.parameters() if p.requires_grad]  # training.freeze leaves some out
        opt = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        self.padded = t.graph == "on" or (t.graph == "auto" and self.device.type == "cuda")
        self.optimizer = opt(params, lr=t.lr, weight_decay=t.weight_decay, amsgrad=t.amsgrad,
                             capturable=self.padded and self.device.type == "cuda")
        finetune.hold_rows(self.optimizer, held)
        self.warmup = None if t.warmup_steps == 0 else torch.optim.lr_scheduler.LinearLR(
            self.optimizer, start_factor=1.0 / (t.warmup_steps + 1), end_factor=1.0, total_iters=t.warmup_steps)
        if t.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=t.lr_factor, patience=t.patience, min_lr=t.min_lr)
        elif t.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=t.max_epochs, eta_min=t.min_lr)
        else:
            self.scheduler = None
        # data order: the sampler's generator is reseeded from (seed, epoch) every epoch, so it survives restarts
        self.generator = torch.Generator()
        if self.world > 1:
            self.sampler = torch.utils.data.DistributedSampler(self.sets.train, num_replicas=self.world,
                                                               rank=self.rank, shuffle=True, seed=cfg.seed)
        else:
            self.sampler = torch.utils.data.RandomSampler(self.sets.train, generator=self.generator)
        r_max = model_config.r_max
        self.train_loader = _loader(self.sets.train, t.batch_size, r_max, cfg.num_workers, self.sampler)
        vbs = t.valid_batch_size or t.batch_size
        self.valid_loader = _loader(self.sets.valid, vbs, r_max, cfg.num_workers)
        self.test_loader = _loader(self.sets.test, vbs, r_max, cfg.num_workers) if self.sets.test else None
        self.train_graphs = GraphSet.build(self.sets.train, r_max, self.device, log=self.log)
        self.valid_graphs = GraphSet.build(self.sets.valid, r_max, self.device, log=self.log)
        self.epoch, self.step, self.stage = 0, 0, 1
        self.best_loss, self.best_epoch, self.elapsed = math.inf, 0, 0.0
        self.weights = LossWeights(t.energy_weight, t.forces_weight, t.stress_weight, t.huber_delta)
        if ckpt is not None:
            self._load_state(ckpt)
        self.net = self.model  # what the eager step calls: wrapped by DistributedDataParallel when distributed
        if self.world > 1 and not self.padded:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, broadcast_buffers=False)  # constants
        self.train_step = None if not self.padded else TrainStep(
            self.model, self.optimizer, self.weights, batch_size=t.batch_size,
            forces=self._need("forces"), stress=self._need("stress"), clip_grad_norm=t.clip_grad_norm,
            ema=self.ema, ema_decay=t.ema_decay, ddp=self.world > 1)
        if self.main:  # the resolved config of this (possibly restarted) run
            dump_config(cfg, self.out / "config.yaml")
        n_params = sum(p.numel() for p in params)
        self.log(f"model: {n_params} parameters, {cfg.dtype}, on {self.device}; "
                 f"{len(self.train_loader)} steps per epoch" + (f", {self.world} processes" if self.world > 1 else ""))

    # ------------------------------------------------------------------------------------------- helpers

    def log(self, msg: str) -> None:
        if not self.main:
            return
        tqdm.write(msg)
        if self.out.is_dir():
            with open(self.out / "train.log", "a") as f:
                f.write(msg + "\n")

    @property
    def export_model(self):
        return self.model if self.ema is None else self.ema.module

    def _state(self) -> dict:
        return {
            "config": config_to_dict(self.cfg), "stats": self.stats, "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "warmup": None if self.warmup is None else self.warmup.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": rng_state(), "epoch": self.epoch, "step": self.step, "stage": self.stage,
            "best_loss": self.best_loss, "best_epoch": self.best_epoch, "elapsed": self.elapsed,
        }

    def _load_state(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        if self.ema is not None and s["ema"] is not None:
            self.ema.load_state_dict(s["ema"])
        saved = s["optimizer"]
        for group, now in zip(saved["param_groups"], self.optimizer.param_groups):
            group["capturable"] = now.get("capturable", False)  # this run's step (a restart may change device)
            group["lr"] = float(group["lr"])  # a tensor in captured runs; TrainStep makes it one again
        self.optimizer.load_state_dict(saved)
        for name in ("warmup", "scheduler"):
            if getattr(self, name) is not None and s[name] is not None:
                getattr(self, name).load_state_dict(s[name])
        set_rng_state(s["rng"])
        self.epoch, self.step, self.stage = s["epoch"], s["step"], s["stage"]
        self.best_loss, self.best_epoch, self.elapsed = s["best_loss"], s["best_epoch"], s["elapsed"]
        if self.stage == 2:
            self._set_stage_weights()
        if self.main:  # drop metric rows of epochs after the checkpoint (a run killed between the two writes)
            path = self.out / "metrics.csv"
            if path.exists():
                rows = list(csv.reader(open(path)))
                keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= self.epoch]
                with open(path, "w", newline="") as f:
                    csv.writer(f).writerows(keep)
        self.log(f"restarted from '{self.ckpt_path}' after epoch {self.epoch} (step {self.step}, stage {self.stage})")

    def _need(self, label: str) -> bool:
        """Whether training uses `label` ("energy" | "forces" | "stress"): a weight in this stage and data."""
        return getattr(self.weights, label) > 0 and _has(self.sets.train, label)

    def _set_stage_weights(self) -> None:
        s, t = self.cfg.training.stage_two, self.cfg.training
        self.weights = LossWeights(s.energy_weight, s.forces_weight,
                                   t.stress_weight if s.stress_weight is None else s.stress_weight, t.huber_delta)

    def _stage_two_due(self) -> bool:
        t = self.cfg.training
        s = t.stage_two
        if s is None or self.stage == 2:
            return False
        if s.start_epoch is not None:
            return self.epoch >= s.start_epoch
        # a fraction of max_epochs or of the time budget, whichever comes first
        by_epoch = t.max_epochs is not None and self.epoch >= int(round(s.start_fraction * t.max_epochs))
        by_time = t.time_budget_minutes is not None and self.elapsed >= s.start_fraction * t.time_budget_minutes * 60
        return by_epoch or by_time

    def _stop_due(self, last_epoch_s: float) -> bool:
        t = self.cfg.training
        if t.max_epochs is not None and self.epoch >= t.max_epochs:
            return True
        return t.time_budget_minutes is not None and self.elapsed + last_epoch_s > 60 * t.time_budget_minutes

    def _nonfinite(self, what: str, value: float, batch) -> None:
        rows = batch.index.tolist()
        kept = (f"the last good checkpoint '{self.ckpt_path}' (after epoch {self.epoch}) is kept"
                if self.ckpt_path.exists() else "no checkpoint had been written yet")
        raise TrainingError(f"non-finite {what} ({value}) at epoch {self.epoch + 1}, step {self.step + 1}: "
                            f"batch of structures {rows} (rows of '{self.sets.train_source}'); training stopped, "
                            f"{kept}. Lower training.lr, set training.clip_grad_norm, or check those structures.")

    # ---------------------------------------------------------------------------------------------- loop

    def _precompile(self, batch, need_f: bool, need_s: bool) -> None:
        """Compile the kernels of a training step and of an evaluation pass all at once, in worker processes, before
        the first step of this process (kernels.Ops.precompile; on a fresh machine Triton would otherwise compile them
        one after another). The pass computes nothing that is kept: no gradient reaches the weights. Its backward
        passes run on the calling thread (launch.precompile sees to it), where the pass's launches are recorded."""
        self._precompiled = True
        params = [p for p in self.model.parameters() if p.requires_grad]

        def step_and_evaluation():
            out = self.model(batch, forces=need_f, stress=need_s, training=True)
            loss, _ = compute_loss(batch, out, self.weights)
            torch.autograd.grad(loss, params, allow_unused=True)
            self.model(batch, forces=need_f, stress=need_s, training=False)

        self.model.ops.precompile(step_and_evaluation, self.device)

    def _train_epoch(self) -> dict:
        t = self.cfg.training
        w = self.weights
        need_f = w.forces > 0 and _has(self.sets.train, "forces")
        need_s = w.stress > 0 and _has(self.sets.train, "stress")
        seed = int(np.random.SeedSequence([self.cfg.seed, self.epoch]).generate_state(1, np.uint64)[0])
        self.generator.manual_seed(seed)
        if isinstance(self.sampler, torch.utils.data.DistributedSampler):
            self.sampler.set_epoch(self.epoch)
        metrics = ErrorMetrics(self.device)
        params = list(self.model.parameters())
        self.model.train()
        order = list(self.sampler)  # this epoch's order, as the DataLoader would take it
        batches = self.train_graphs.batches(order, t.batch_size)
        bar = tqdm(batches, total=-(-len(order) // t.batch_size), desc=f"epoch {self.epoch + 1}", leave=False,
                   disable=None if self.main else True)
        checks = []  # padded steps: (step, finite loss, finite norm, structures), read once at the end of the epoch
        for batch in bar:
            batch = batch.to(device=self.device, dtype=self.dtype)
            if not self._precompiled:
                self._precompile(batch, need_f, need_s)
            if self.train_step is not None:
                loss, norm, sums = self.train_step(batch)
                metrics.sums += sums
                checks.append((self.step, torch.isfinite(loss), torch.isfinite(norm), batch.index, loss.clone(),
                               norm.clone()))  # clones: a captured step's outputs are overwritten by the next
                self.step += 1
                if self.warmup is not None and self.step <= t.warmup_steps and self.stage == 1:
                    self.warmup.step()
                if len(checks) % 25 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4g}")
                continue
            out = self.net(batch, forces=need_f, stress=need_s, training=True)
            loss, _ = compute_loss(batch, out, w)
            bad = torch.tensor(float(not torch.isfinite(loss)), device=self.device)
            if self.world > 1:
                dist.all_reduce(bad)
            if bad.item():
                self._nonfinite("loss", loss.item(), batch)
            self.optimizer.zero_grad(set_to_none=True)
            with calling_thread_backward():
                loss.backward()  # under DistributedDataParallel, the gradients are averaged over the processes here
            norm = torch.nn.utils.clip_grad_norm_(params, t.clip_grad_norm or math.inf)
            if not torch.isfinite(norm):
                self._nonfinite("gradient norm", norm.item(), batch)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.step += 1
            if self.warmup is not None and self.step <= t.warmup_steps and self.stage == 1:
                self.warmup.step()
            metrics.update(batch, out, loss)
            bar.set_postfix(loss=f"{loss.item():.4g}")
        if checks:
            self._check_finite(checks)
        if self.world > 1:
            dist.all_reduce(metrics.sums)
        return metrics.compute()

    def _check_finite(self, checks: list) -> None:
        """TrainingError naming the first padded step of this epoch (on any process) with a non-finite loss or
        gradient norm: one host read per epoch instead of one per step."""
        finite = torch.stack([torch.stack([ok_loss, ok_norm]) for _, ok_loss, ok_norm, *_ in checks]).double()
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # [steps, 2]: all processes stop at the same step
        finite = finite.tolist()
        for (step, _, _, index, loss, norm), (ok_loss, ok_norm) in zip(checks, finite):
            if not (ok_loss and ok_norm):
                self.step = step
                batch = types.SimpleNamespace(index=index)  # what _nonfinite reads of a batch
                self._nonfinite("loss" if not ok_loss else "gradient norm", (loss if not ok_loss else norm).item(),
                                batch)

    def _refit_energy_offsets(self) -> None:
        """Least-squares per-element energy offsets for the current weights (potential/training/energy_offsets.py),
        added to the trained model's species_shift and to the EMA copy's, each from its own residuals; rank 0's
        values on every rank. In place, so captured steps see them."""
        size = self.cfg.training.valid_batch_size or self.cfg.training.batch_size
        models = [self.model] + ([] if self.ema is None else [self.ema.module])
        deltas = []
        for model in models:
            delta = species_shift_correction(model, self.train_graphs.batches(None, max(size, 32))).to(self.device)
            if self.world > 1:
                dist.broadcast(delta, 0)
            apply_species_shift(delta, model)
            deltas.append(delta)
        shown = ", ".join(f"{chemical_symbols[z]} {1e3 * float(d):+.2f}"
                          for z, d in zip(self.model.elements, deltas[-1]))
        self.log(f"energy offsets refit after epoch {self.epoch} (meV/atom): {shown}")

    def _validate(self) -> dict:
        v = self.sets.valid
        batches = self.valid_graphs.batches(None, self.cfg.training.valid_batch_size or self.cfg.training.batch_size)
        return evaluate_model(self.export_model, batches, self.device, self.dtype, self.weights,
                              forces=_has(v, "forces"), stress=_has(v, "stress"))

    def _keep_best(self, valid: dict) -> None:
        """Save the exported (EMA) model as model.pt when its validation loss is the best of this stage."""
        if valid["loss"] is not None and valid["loss"] < self.best_loss:
            self.best_loss, self.best_epoch = valid["loss"], self.epoch
            if self.main:
                save_model(self.export_model, self.model_path,
                                     extra={"epoch": self.epoch, "stage": self.stage, "valid": valid})

    def _end_of_epoch(self, train: dict, valid: dict | None, seconds: float) -> None:
        """Keep the best model, append to metrics.csv, print the table row, write checkpoint.pt."""
        lr = float(self.optimizer.param_groups[0]["lr"])  # a device tensor in captured runs
        if valid is not None:
            self._keep_best(valid)
        if not self.main:
            return
        row = {"epoch": self.epoch, "step": self.step, "stage": self.stage, "lr": lr, "time_s": round(seconds, 3)}
        row.update({f"train_{k}": v for k, v in train.items()})
        row.update({f"valid_{k}": v for k, v in (valid or {}).items()})
        path = self.out / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})
        table = {"epoch": self.epoch, "lr": lr, "train_loss": train["loss"], "time": seconds}
        if valid is not None:
            table.update(valid, valid_loss=valid["loss"])
        self.log(format_row(table) + (" *" if valid is not None and self.best_epoch == self.epoch else ""))
        save_checkpoint(self.ckpt_path, self._state())

    def train(self) -> dict:
        """Train until max_epochs or the time budget; then evaluate the best model. Returns the final metrics."""
        t = self.cfg.training
        self.log(format_header())
        last_epoch_s, validated = 0.0, True
        while not self._stop_due(last_epoch_s):
            if self._stage_two_due():
                self.stage = 2
                self._set_stage_weights()
                for group in self.optimizer.param_groups:
                    if isinstance(group["lr"], torch.Tensor):
                        group["lr"].fill_(t.stage_two.lr)  # in place: captured steps read this tensor
                    else:
                        group["lr"] = t.stage_two.lr
                if self.train_step is not None:
                    self.train_step.set_weights(self.weights, self._need("forces"), self._need("stress"))
                self.best_loss = math.inf  # losses of the two stages use different weights
                self.log(f"stage two from epoch {self.epoch + 1}: lr {t.stage_two.lr}, weights {self.weights}")
            start = time.perf_counter()
            train = self._train_epoch()
            self.epoch += 1
            if self.stage == 1 and self.epoch & (self.epoch - 1) == 0 and self._need("energy"):  # epochs 1, 2, 4, ...
                self._refit_energy_offsets()
            validated = self.epoch % t.eval_every == 0 or (t.max_epochs is not None and self.epoch >= t.max_epochs)
            valid = self._validate() if validated else None
            if self.scheduler is not None and self.stage == 1:
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    if valid is not None:
                        self.scheduler.step(valid["loss"])
                else:
                    self.scheduler.step()
            last_epoch_s = time.perf_counter() - start
            self.elapsed += last_epoch_s
            if self.world > 1:  # rank 0's clock decides time-budget stops and stage switches for everyone
                clock = torch.tensor([self.elapsed, last_epoch_s], dtype=torch.float64, device=self.device)
                dist.broadcast(clock, 0)
                self.elapsed, last_epoch_s = clock.tolist()
            self._end_of_epoch(train, valid, last_epoch_s)
        if not validated:  # stopped by the time budget between validations
            self._keep_best(self._validate())
        if self.main and not self.model_path.exists():  # no finite validation loss at all: export the last
            save_model(self.export_model, self.model_path, extra={"epoch": self.epoch, "stage": self.stage})
        result = self.final_evaluation() if self.main else {}
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return result

    def final_evaluation(self) -> dict:
        """Best model (model.pt) on the validation and test sets -> printed table and test_metrics.json."""
        best = load_model(self.model_path, device=self.device)
        result = {"best_epoch": self.best_epoch}
        for name, loader, structures in (("valid", self.valid_loader, self.sets.valid),
                                         ("test", self.test_loader, self.sets.test)):
            if loader is not None:
                result[name] = evaluate_model(best, loader, self.device, self.dtype, self.weights,
                                              forces=_has(structures, "forces"), stress=_has(structures, "stress"))
        self.log(f"best model (epoch {self.best_epoch}) saved to '{self.model_path}':")
        for name in ("valid", "test"):
            if name in result:
                self.log(f"  {name:5s} " + ", ".join(f"{k} {v:.3f}" for k, v in result[name].items()
                                                     if v is not None and k != "loss")
                         + "  (meV/atom, meV, meV/Å, meV/Å^3)")
        with open(self.out / "test_metrics.json", "w") as f:
            json.dump(result, f, indent=2)
        return result


def run(cfg: TrainConfig, restart: bool = False, overwrite: bool = False) -> dict:
    """Train as configured (see the module docstring); returns {"best_epoch", "valid": metrics, "test": ...}.
    With training.committee: N, trains the N members in turn and returns potential.training.committee_training's summary."""
    if cfg.training.committee is None:
        return Trainer(cfg, restart=restart, overwrite=overwrite).train()
    results = []
    for k, member in enumerate(member_configs(cfg)):
        resume = restart and (Path(member.output_dir) / "checkpoint.pt").exists()
        results.append(Trainer(member, restart=resume, overwrite=overwrite, member=k).train())
    return collect_members(cfg, results, log=tqdm.write)
