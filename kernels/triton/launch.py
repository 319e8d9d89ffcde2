"""Launching jitted kernels with less host time than `kernel[grid](...)`.

The small passes (20k edges) are host-bound: their kernels take tens of microseconds, and on the GPU hosts
`JITFunction.run` spends about as long again binding and specializing every argument in Python before it
reaches the compiled kernel. `launch` does that once per specialization and then calls the compiled kernel
itself. The cache key holds everything Triton specializes on: the kernel, each tensor's dtype, device and
16-byte alignment, each integer's being 1, its divisibility by 16 and its 32-bit range, the constexprs and
the launch options. Under TRITON_INTERPRET (CI), or where a Triton version returns no compiled kernel, every
call goes through the jitted function as before.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch

_COMPILED: dict = {}  # key -> (compiled kernel, the constexpr values in parameter order) or None
_I32 = 2**31


def _arg_key(a):
    if isinstance(a, torch.Tensor):
        return a.dtype, a.device, a.data_ptr() % 16 == 0
    if isinstance(a, int):
        return a == 1, a % 16 == 0, -_I32 <= a < _I32
    return type(a), a


def launch(kernel, grid: tuple, *args, **meta):
    """kernel[grid](*args, **meta), where args are the runtime arguments (tensors and ints, in parameter
    order) and meta the constexprs and launch options (num_warps, num_stages) by name."""
    key = (kernel, tuple(meta.items()), tuple(map(_arg_key, args)))
    hit = _COMPILED.get(key, False)
    if hit:
        compiled, constexprs = hit
        compiled[grid + (1,) * (3 - len(grid))](*args, *constexprs)  # the compiled kernel takes a 3-d grid
        return
    compiled = kernel[grid](*args, **meta)
    if hit is None:
        return
    if hasattr(compiled, "packed_metadata") and hasattr(kernel, "arg_names"):
        # the compiled launcher takes every parameter in order and drops the constexprs itself
        _COMPILED[key] = compiled, tuple(meta[n] for n in kernel.arg_names[len(args):])
    else:
        _COMPILED[key] = None


@lru_cache(maxsize=None)
def knob(name: str, default: str = "") -> str:
    """A tuning knob (TUMBLER_CONV_*, TUMBLER_SC_CFG) from the environment, read once per process: the small
    passes are host-bound. bench/kernels.py --sweep and the tests that set one call knob.cache_clear()."""
    return os.environ.get(name, default)
