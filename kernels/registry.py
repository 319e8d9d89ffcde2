"""Backend registry: get_ops("auto" | "reference" | "triton") -> Ops with the three ops (and `precompile`).

  "reference"  pure PyTorch (kernels/reference.py), any device and dtype.
  "triton"     kernels/triton (fused kernels). Unavailable -> RuntimeError at get_ops. Each call needs
               CUDA tensors, or TRITON_INTERPRET=1 in the environment (Triton's CPU interpreter, for tests).
  "auto"       per call: triton on CUDA tensors when kernels.triton imports, else reference. Falling back
               on CUDA tensors warns once per process.
Every backend takes the same arguments and gives the same numbers (to float32 rounding); physics code
holds an Ops and never branches on its name.
"""
from __future__ import annotations

import importlib
import os
import warnings
from typing import Callable, NamedTuple

import torch

from . import reference

BACKENDS = ("auto", "reference", "triton")
OP_NAMES = ("spherical_harmonics", "edge_conv", "symmetric_contraction")


def _nothing_to_compile(fn: Callable, device: torch.device) -> bool:
    return False


class Ops(NamedTuple):
    """The three ops of one backend; signatures as in kernels/reference.py. precompile(fn, device) compiles, all
    at once in worker processes (kernels/triton/launch.py), the kernels that fn() would launch on `device` (a
    training or evaluation step), so that a fresh machine does not compile them one after another at their first
    launches; fn's results are meaningless.
    Returns whether it ran fn: only where this backend compiles kernels (Triton, on CUDA)."""

    name: str
    spherical_harmonics: Callable
    edge_conv: Callable
    symmetric_contraction: Callable
    precompile: Callable = _nothing_to_compile


REFERENCE = Ops("reference", reference.spherical_harmonics, reference.edge_conv, reference.symmetric_contraction)

_triton_state: dict = {}  # "module" -> kernels.triton, or "error" -> why it is unavailable
_TRITON_OPS: dict = {}  # op name -> its kernels.triton function, once the module has loaded
_warned: set = set()


def _load_triton():
    """kernels.triton, or None with the reason kept in _triton_state["error"]. Imported once."""
    if "module" not in _triton_state and "error" not in _triton_state:
        try:
            module = importlib.import_module("kernels.triton")
            missing = [op for op in OP_NAMES if not callable(getattr(module, op, None))]
            if missing:
                raise ImportError(f"kernels.triton does not define {', '.join(missing)}")
            _TRITON_OPS.update((op, getattr(module, op)) for op in OP_NAMES)
            _triton_state["module"] = module
        except Exception as exc:  # any import failure makes the backend unavailable, with the reason
            _triton_state["error"] = f"{type(exc).__name__}: {exc}"
    return _triton_state.get("module")


def triton_available() -> bool:
    """Whether kernels.triton imports and defines the three ops."""
    return _load_triton() is not None


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pick_triton(op: str, first: torch.Tensor) -> Callable:
    """The Triton op for an explicit "triton" backend; CPU tensors need TRITON_INTERPRET=1."""
    if not first.is_cuda and not _interpret():
        raise RuntimeError(
            f"kernels backend 'triton': {op} needs CUDA tensors, got {first.device}; set TRITON_INTERPRET=1 "
            "to run Triton's interpreter on CPU, or use backend 'auto' or 'reference'"
        )
    return _TRITON_OPS[op]  # (get_ops("triton") loaded the module)


def _pick_auto(op: str, first: torch.Tensor) -> Callable:
    """Triton on CUDA tensors when it imports, else the reference (warning once when CUDA falls back)."""
    if first.is_cuda:
        if "module" in _triton_state or _load_triton() is not None:
            return _TRITON_OPS[op]
        if "fallback" not in _warned:
            _warned.add("fallback")
            warnings.warn(
                "kernels backend 'auto': Triton kernels unavailable "
                f"({_triton_state.get('error')}); using the PyTorch reference ops on CUDA tensors",
                RuntimeWarning,
                stacklevel=3,
            )
    return getattr(reference, op)


def _precompile_triton(fn: Callable, device: torch.device) -> bool:
    """launch.precompile(fn) on CUDA when kernels.triton imports (under Triton's CPU interpreter nothing compiles)."""
    if torch.device(device).type != "cuda" or _load_triton() is None or _interpret():
        return False
    from .triton.launch import precompile
    precompile(fn)
    return True


def _make_ops(name: str, pick: Callable) -> Ops:
    """Ops whose functions keep the reference signatures (keywords work) and dispatch through `pick`."""

    def spherical_harmonics(vectors, lmax):
        return pick("spherical_harmonics", vectors)(vectors, lmax)

    def edge_conv(node_feats, edge_sh, edge_weights, graph, spec):
        return pick("edge_conv", node_feats)(node_feats, edge_sh, edge_weights, graph, spec)

    def symmetric_contraction(node_feats, species, weights, spec):
        return pick("symmetric_contraction", node_feats)(node_feats, species, weights, spec)

    fns = (spherical_harmonics, edge_conv, symmetric_contraction)
    for fn in fns:
        fn.__doc__ = f"[backend {name!r}] " + (getattr(reference, fn.__name__).__doc__ or "")
    return Ops(name, *fns, precompile=_precompile_triton)


AUTO = _make_ops("auto", _pick_auto)


def get_ops(name: str = "auto") -> Ops:
    """The ops of backend `name` ("auto" | "reference" | "triton"). ValueError for an unknown name;
    RuntimeError, with the reason, when "triton" is asked for and kernels.triton is unavailable."""
    if name == "auto":
        return AUTO
    if name == "reference":
        return REFERENCE
    if name == "triton":
        if _load_triton() is None:
            raise RuntimeError(f"kernels backend 'triton' is unavailable: {_triton_state['error']}")
        return _make_ops("triton", _pick_triton)
    raise ValueError(f"kernels backend {name!r} unknown; choose one of {', '.join(BACKENDS)}")
