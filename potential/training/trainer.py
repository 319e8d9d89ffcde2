"""The training run behind `python train.py --config X.yaml`.

`run(cfg, restart=False)`:
  1. checks the inputs and fails before training (device, files, labels vs loss weights, elements, batch size);
  2. reads and splits the data and computes the model's data-derived inputs (potential.training.trainset);
  3. trains with Adam/AdamW, gradient clipping and an EMA of the weights (torch.optim.swa_utils.AveragedModel)
     used for validation and export, on the schedule of potential.training.schedule (linear warmup, then
     ReduceLROnPlateau or CosineAnnealingLR, and an optional second stage);
  4. writes into output_dir (potential.training.run_dir): config.yaml, train.log, metrics.csv (one row per
     epoch), model.pt (best EMA model by validation loss, potential.save_model), checkpoint.pt (every epoch,
     atomic) and, at the end, test_metrics.json (best model on the validation and test sets,
     potential.training.evaluation).

This file holds the Trainer: it builds the run's pieces from the config and drives the epoch loop (the eager
and the captured training steps, the finiteness checks, the energy-offset refits, validation, best model).

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
# tqdm, not tqdm.auto: the latter's asyncio class calls iter() in __init__, which on a persistent-worker
# DataLoader starts a second pass (prefetching from the sampler) and so shifts the data order
from tqdm import tqdm

from .checkpoint import rng_state, save_checkpoint, set_rng_state
from . import finetune
from .captured_step import TrainStep
from .committee_training import bootstrap, collect_members, member_configs
from .config import ConfigError, TrainConfig, config_to_dict, dump_config
from .energy_offsets import apply_species_shift, species_shift_correction
from .evaluation import evaluate_model, evaluate_set, final_evaluation, has_label, structure_loader
from .graph_cache import GraphSet
from .metrics import ErrorMetrics, compute_loss, format_header, format_row
from .run_dir import CSV_FIELDS, append_metrics, drop_metrics_after, open_run_dir
from .schedule import Schedule
from ..io import save_model
from ..model import ModelConfig, Potential, calling_thread_backward
from .trainset import data_statistics, prepare_data

__all__ = ["CSV_FIELDS", "TrainingError", "resolve_device", "evaluate_model", "Trainer", "run"]


class TrainingError(RuntimeError):
    """Training stopped (non-finite loss or gradient); the message names the batch's structure indices."""


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA GPU is available "
                          "(torch.cuda.is_available() is False); use device: cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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
        ckpt = open_run_dir(cfg, restart, overwrite, self.main)
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
        self.schedule = Schedule(self.optimizer, t)
        # data order: the sampler's generator is reseeded from (seed, epoch) every epoch, so it survives restarts
        self.generator = torch.Generator()
        if self.world > 1:
            self.sampler = torch.utils.data.DistributedSampler(self.sets.train, num_replicas=self.world,
                                                               rank=self.rank, shuffle=True, seed=cfg.seed)
        else:
            self.sampler = torch.utils.data.RandomSampler(self.sets.train, generator=self.generator)
        r_max = model_config.r_max
        self.valid_batch_size = vbs = t.valid_batch_size or t.batch_size  # evaluation passes
        self.valid_loader = structure_loader(self.sets.valid, vbs, r_max, cfg.num_workers)
        self.test_loader = structure_loader(self.sets.test, vbs, r_max, cfg.num_workers) if self.sets.test else None
        self.train_graphs = GraphSet.build(self.sets.train, r_max, self.device, log=self.log)
        self.valid_graphs = GraphSet.build(self.sets.valid, r_max, self.device, log=self.log)
        self.epoch, self.step, self.stage = 0, 0, 1
        self.best_loss, self.best_epoch, self.elapsed = math.inf, 0, 0.0
        self.weights = self.schedule.loss_weights(self.stage)
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
                 f"{-(-len(self.sampler) // t.batch_size)} steps per epoch" + (f", {self.world} processes" if self.world > 1 else ""))

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
            **self.schedule.state_dict(),  # "warmup", "scheduler"
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
        self.schedule.load_state_dict(s)
        set_rng_state(s["rng"])
        self.epoch, self.step, self.stage = s["epoch"], s["step"], s["stage"]
        self.best_loss, self.best_epoch, self.elapsed = s["best_loss"], s["best_epoch"], s["elapsed"]
        self.weights = self.schedule.loss_weights(self.stage)
        if self.main:  # drop metric rows of epochs after the checkpoint (a run killed between the two writes)
            drop_metrics_after(self.out / "metrics.csv", self.epoch)
        self.log(f"restarted from '{self.ckpt_path}' after epoch {self.epoch} (step {self.step}, stage {self.stage})")

    def _need(self, label: str) -> bool:
        """Whether training uses `label` ("energy" | "forces" | "stress"): a weight in this stage and data."""
        return getattr(self.weights, label) > 0 and has_label(self.sets.train, label)

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
        need_f, need_s = self._need("forces"), self._need("stress")
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
                self.schedule.after_step(self.step, self.stage)
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
            self.schedule.after_step(self.step, self.stage)
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
        size = max(self.valid_batch_size, 32)  # structures per forward pass
        models = [self.model] + ([] if self.ema is None else [self.ema.module])
        deltas = []
        for model in models:
            delta = species_shift_correction(model, self.train_graphs.batches(None, size)).to(self.device)
            if self.world > 1:
                dist.broadcast(delta, 0)
            apply_species_shift(delta, model)
            deltas.append(delta)
        shown = ", ".join(f"{chemical_symbols[z]} {1e3 * float(d):+.2f}"
                          for z, d in zip(self.model.elements, deltas[-1]))
        self.log(f"energy offsets refit after epoch {self.epoch} (meV/atom): {shown}")

    def _validate(self) -> dict:
        batches = self.valid_graphs.batches(None, self.valid_batch_size)
        return evaluate_set(self.export_model, batches, self.sets.valid, self.device, self.dtype, self.weights)

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
        append_metrics(self.out / "metrics.csv", row)
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
        while not self.schedule.stop_due(self.epoch, self.elapsed, last_epoch_s):
            if self.schedule.stage_two_due(self.stage, self.epoch, self.elapsed):
                self.stage = 2
                self.weights = self.schedule.loss_weights(self.stage)
                self.schedule.start_stage_two()
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
            self.schedule.after_epoch(self.stage, None if valid is None else valid["loss"])
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
        sets = {"valid": (self.valid_loader, self.sets.valid),
                "test": None if self.test_loader is None else (self.test_loader, self.sets.test)}
        return final_evaluation(self.model_path, self.best_epoch, sets, self.device, self.dtype, self.weights,
                                self.out, self.log)


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
