"""Fine-tuning: start a training run from a trained model (``model.init_from: path/to/model.pt``).

What the trainer does with it (potential/training/trainer.py calls these, in this order):
1. ``model_config``: the new model has the source file's architecture (channels, l, layers, r_max, radial MLP,
   avg_num_neighbors and scale, which its weights were trained with); the architecture keys of the config's
   ``model`` section are ignored, and the log says so. Its elements are the source's plus those of the new
   data. E0s: with ``model.refit_references: true`` (the default) every element present in the new training
   data gets the E0 fitted on it (isolated atoms, else least squares, as for a fresh run: potential.training.trainset),
   the others keep the source's; with false the source's E0s are kept and only new elements get fitted ones.
2. ``transfer``: the source's weights are copied in. Parameters indexed by species (the embedding, the product
   basis and skip weights, species_shift) are copied row by row to the new species order; a new element keeps
   its fresh random embedding and weights, and species_shift 0. With refit_references, the shift (eV/atom) is
   then refit so that the model's mean per-atom energy error on the new training set is zero (one forward pass
   over it; exact for condensed atoms, whose tanh gate is 1).
3. ``freeze``: ``training.freeze: [embedding, interactions, readouts]`` (any subset; interactions = each layer's
   radial MLP, convolution and product basis) stops training those parameters. Rows that belong to new
   elements still train (they start random), so a species-indexed parameter with new rows trains only those:
   the old rows are restored after every optimizer step (``hold_rows``, exact, weight decay included).
Everything not frozen trains; ``training.freeze: []`` (the default) fine-tunes all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

import data

from .config import SECTION_ONLY, ConfigError, TrainConfig
from ..io import load_model
from ..model import ModelConfig, Potential

__all__ = ["SECTION_KEYS", "FREEZABLE", "load_source", "model_config", "transfer", "freeze", "hold_rows"]

SECTION_KEYS = tuple(name for name, _, _ in SECTION_ONLY)  # ModelSection keys that are not ModelConfig keys
FREEZABLE = {"embedding": ("embedding.",), "interactions": ("interactions.", "products."), "readouts": ("readouts.",)}


def _names(zs) -> str:
    return ", ".join(chemical_symbols[z] for z in zs) or "none"


def load_source(cfg: TrainConfig) -> Potential:
    """The model file named by model.init_from (on the CPU); ConfigError naming the key and the file."""
    path = Path(cfg.model.init_from)
    if not path.is_file():
        raise ConfigError(f"model.init_from: file not found: '{path}'")
    try:
        return load_model(path, device="cpu", backend=cfg.model.backend)
    except (ValueError, OSError) as e:
        raise ConfigError(f"model.init_from: {e}") from e


def model_config(cfg: TrainConfig, source: Potential, stats: dict, log=print) -> dict:
    """The fine-tuned model's whole ModelConfig dict (step 1 of the module docstring) from the source model and
    the data statistics of the new training set (potential.training.trainset.data_statistics)."""
    fitted = dict(zip(stats["elements"], stats["atomic_energies"]))  # eV, elements of the new data
    kept = dict(zip(source.elements, source.config.atomic_energies))  # eV, the source's
    elements = sorted(set(kept) | set(fitted))
    e0 = {**kept, **fitted} if cfg.model.refit_references else {**fitted, **kept}
    new = sorted(set(elements) - set(kept))
    config = source.config.to_dict()
    config.update(elements=elements, atomic_energies=[e0[z] for z in elements], dtype=cfg.dtype,
                  backend=cfg.model.backend)
    log(f"fine-tuning from '{cfg.model.init_from}': its architecture (channels {config['channels']}, lmax "
        f"{config['lmax']}, {config['num_interactions']} layers, r_max {config['r_max']} Å, scale "
        f"{config['scale']:.6f} eV, mean neighbors {config['avg_num_neighbors']:.3f}) replaces the config's; "
        f"elements {_names(elements)} (new, with fresh embeddings: {_names(new)})")
    if cfg.model.refit_references:
        log("E0s refit on the new data (model.refit_references: true): " + ", ".join(
            f"{chemical_symbols[z]} {e0[z]:.6f}" + (f" (was {kept[z]:.6f})" if z in kept else " (new)")
            for z in elements) + " eV; the shift is refit after the weights are loaded")
    else:
        log("E0s kept from the source (model.refit_references: false)"
            + (", new elements fitted: " + ", ".join(f"{chemical_symbols[z]} {e0[z]:.6f}" for z in new) if new else ""))
    return config


def _species_dims(model: Potential) -> dict[str, int]:
    """{parameter name: its species dimension} for the parameters indexed by species: the dimensions that change
    when the model gets one more element (found by building that model: exact, whatever the layers are)."""
    extra = next(z for z in range(1, 119) if z not in model.elements)
    bigger = Potential(ModelConfig.from_dict({**model.config.to_dict(), "elements": model.elements + [extra],
                                              "atomic_energies": [], "dtype": "float64", "backend": "reference"}))
    shapes = {name: p.shape for name, p in bigger.named_parameters()}
    dims = {}
    for name, p in model.named_parameters():
        differ = [d for d in range(p.dim()) if p.shape[d] != shapes[name][d]]
        if differ:
            dims[name] = differ[0]
    return dims


def transfer(model: Potential, source: Potential, structures: list, refit: bool, log=print) -> None:
    """Copy the source's weights into ``model`` (species rows remapped) and, with ``refit``, refit the shift on
    ``structures`` (data.Structure with energies); step 2 of the module docstring."""
    index = {z: k for k, z in enumerate(model.elements)}
    rows = torch.tensor([index[z] for z in source.elements], device=model.species_shift.device)  # old -> new
    dims = _species_dims(model)
    old = dict(source.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            q = old[name].to(device=p.device, dtype=p.dtype)
            if name in dims:
                p.index_copy_(dims[name], rows, q)
            elif q.shape == p.shape:
                p.copy_(q)
            else:  # same config, so this cannot happen unless the layers changed between versions
                raise ValueError(f"model.init_from: parameter {name} has shape {tuple(q.shape)} in the source and "
                                 f"{tuple(p.shape)} here")
    if not refit:
        return
    labelled = [s for s in structures if s.energy is not None]
    if not labelled:
        log("shift kept: the new training set has no energies")
        return
    device = model.species_shift.device
    errors = []  # eV/atom, DFT minus model
    for start in range(0, len(labelled), 32):
        chunk = labelled[start:start + 32]
        batch = data.collate(chunk, model.r_max).to(device=device, dtype=model.dtype)
        predicted = model(batch, forces=False)["energy"].cpu().numpy()
        errors += [(s.energy - e) / len(s.numbers) for s, e in zip(chunk, predicted)]
    delta = float(np.mean(errors))
    old_shift = model.config.shift
    model.set_energy_reference(shift=old_shift + delta)
    log(f"shift refit on the new data: {old_shift:.6f} -> {model.config.shift:.6f} eV/atom (the mean energy error "
        f"of the loaded model on {len(labelled)} training structures was {1e3 * delta:.3f} meV/atom)")


def freeze(model: Potential, parts: list[str], old_elements: list[int], log=print) -> list:
    """Stop training the parameters of ``parts`` (step 3 of the module docstring). Returns the partly frozen
    parameters as (parameter, species dim, old rows) for ``hold_rows``."""
    if not parts:
        return []
    index = {z: k for k, z in enumerate(model.elements)}
    old_rows = [index[z] for z in old_elements]
    has_new = len(old_rows) < len(model.elements)
    dims = _species_dims(model) if has_new else {}
    prefixes = tuple(p for part in parts for p in FREEZABLE[part])
    held, frozen = [], 0
    for name, p in model.named_parameters():
        if not name.startswith(prefixes):
            continue
        if name in dims:  # the new elements' rows train, the old ones are held
            held.append((p, dims[name], torch.tensor(old_rows, device=p.device)))
        else:
            p.requires_grad_(False)
            frozen += p.numel()
    total = sum(p.numel() for p in model.parameters())
    log(f"frozen: {', '.join(parts)} ({frozen} of {total} parameters"
        + (f"; {len(held)} species-indexed ones train their new-element rows only" if held else "") + ")")
    return held


def hold_rows(optimizer: torch.optim.Optimizer, held: list) -> None:
    """Keep the old-element rows of ``held`` parameters fixed: saved before each optimizer step, put back after
    it (torch optimizer step hooks), so neither gradients nor weight decay move them."""
    if not held:
        return
    saved = []

    def before(opt, args, kwargs):
        saved[:] = [p.detach().index_select(dim, rows).clone() for p, dim, rows in held]

    def after(opt, args, kwargs):
        with torch.no_grad():
            for (p, dim, rows), values in zip(held, saved):
                p.index_copy_(dim, rows, values)

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
