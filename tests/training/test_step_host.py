"""The host side of a training step: the first step of a process compiles its kernels at once
(kernels.Ops.precompile, a no-op on CPU, so here it is replaced by a recorder that runs the pass for real), the
pass changes nothing the training keeps, and every backward runs on the calling thread."""

from __future__ import annotations

import torch

import kernels
import potential.training.trainer as training
from potential.training.checkpoint import load_checkpoint


def _final_model(cfg) -> dict:
    training.run(cfg)
    return load_checkpoint(cfg.output_dir + "/checkpoint.pt")["model"]


def test_first_step_precompiles_once_and_changes_nothing(cu_h5, make_config, tmp_path, monkeypatch):
    plain = _final_model(make_config(cu_h5, output_dir=str(tmp_path / "plain"), training={"max_epochs": 2}))

    calls = []
    real_get_ops = kernels.get_ops

    def recording_get_ops(name="auto"):
        def precompile(fn, device):  # what the Triton backend does on CUDA, minus the compile-only launches
            calls.append(device)
            fn()
            return True
        return real_get_ops(name)._replace(precompile=precompile)

    monkeypatch.setattr(kernels, "get_ops", recording_get_ops)
    precompiled = _final_model(make_config(cu_h5, output_dir=str(tmp_path / "pre"), training={"max_epochs": 2}))
    assert calls == [torch.device("cpu")]  # once per process, before the first step
    for key, value in plain.items():
        assert torch.equal(value, precompiled[key]), f"{key} differs after a precompile pass"


def test_backward_passes_run_on_the_calling_thread(cu_h5, make_config, tmp_path, monkeypatch):
    """Both the forces' backward (inside the model) and the loss's backward (in the trainer) run with autograd's
    multithreading off: on a GPU host that saves the engine's hand-offs to its device thread."""
    seen = {"forces": [], "loss": []}
    real_grad, real_loss = torch.autograd.grad, training.compute_loss

    def grad(*args, **kwargs):
        seen["forces"].append(torch.autograd.is_multithreading_enabled())
        return real_grad(*args, **kwargs)

    def compute_loss(*args, **kwargs):
        loss, parts = real_loss(*args, **kwargs)
        if loss.requires_grad:  # the hook runs when the backward reaches the loss, on the thread that runs it
            loss.register_hook(lambda g: seen["loss"].append(torch.autograd.is_multithreading_enabled()))
        return loss, parts

    monkeypatch.setattr(torch.autograd, "grad", grad)
    monkeypatch.setattr(training, "compute_loss", compute_loss)
    training.run(make_config(cu_h5, output_dir=str(tmp_path / "run"), training={"max_epochs": 1}))
    assert seen["forces"] and not any(seen["forces"])
    assert seen["loss"] and not any(seen["loss"])
    assert torch.autograd.is_multithreading_enabled()  # restored after the step
