"""Backend registry: get_ops("auto" | "reference" | "triton") -> Ops with the three ops.

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


class Ops(NamedTuple):
    """The three ops of one backend; signatures as in kernels/reference.py."""

    name: str
    spherical_harmonics: Callable
    edge_conv: Callable
    symmetric_contraction: Callable


REFERENCE = Ops("reference", reference.spherical_harmonics, reference.edge_conv, reference.symmetric_contraction)

_triton_state: dict = {}  # "module" -> kernels.triton, or "error" -> why it is unavailable
_warned: set = set()


def _load_triton():
    """kernels.triton, or None with the reason kept in _triton_state["error"]. Imported once."""
    if "module" not in _triton_state and "error" not in _triton_state:
        try:
            module = importlib.import_module("kernels.triton")
            missing = [op for op in OP_NAMES if not callable(getattr(module, op, None))]
            if missing:
                raise ImportError(f"kernels.triton does not define {', '.join(missing)}")
            _triton_state["module"] = module
        except Exception as exc:  # any import failure makes the backend unavailable, with the reason
            _triton_state["error"] = f"{type(exc).__name__}: {exc}"
    return _triton_state.get("module")


def triton_available() -> bool:
    """Whether kernels.triton imports and defines the three ops."""
    return _load_triton() is not None


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_op(op: str) -> Callable:
    fn = getattr(_load_triton(), op)

    def call(first: torch.Tensor, *args, **kwargs):
        if not first.is_cuda and not _interpret():
            raise RuntimeError(
                f"kernels backend 'triton': {op} needs CUDA tensors, got {first.device}; set TRITON_INTERPRET=1 "
                "to run Triton's interpreter on CPU, or use backend 'auto' or 'reference'"
            )
        return fn(first, *args, **kwargs)

    call.__name__ = call.__qualname__ = op
    call.__doc__ = getattr(reference, op).__doc__
    return call


def _auto_op(op: str) -> Callable:
    ref = getattr(reference, op)

    def call(first: torch.Tensor, *args, **kwargs):
        if first.is_cuda:
            module = _load_triton()
            if module is not None:
                return getattr(module, op)(first, *args, **kwargs)
            if "fallback" not in _warned:
                _warned.add("fallback")
                warnings.warn(
                    "kernels backend 'auto': Triton kernels unavailable "
                    f"({_triton_state.get('error')}); using the PyTorch reference ops on CUDA tensors",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return ref(first, *args, **kwargs)

    call.__name__ = call.__qualname__ = op
    call.__doc__ = ref.__doc__
    return call


AUTO = Ops("auto", *(_auto_op(op) for op in OP_NAMES))


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
        return Ops("triton", *(_triton_op(op) for op in OP_NAMES))
    raise ValueError(f"kernels backend {name!r} unknown; choose one of {', '.join(BACKENDS)}")
