"""Kernel launches that can stand in for compilation, so that many kernels compile at once.

Triton compiles a kernel at its first launch, one kernel after another: a fresh machine spends minutes on the
first force-training step of a model (bench/first_use.py). Under `compile_only()` our tile-parameterised
launches (conv.py, contraction.py) only submit their compilation to a thread pool (Triton's AsyncCompileMode)
and return without running; leaving the context waits for every compilation. autotune.py compiles a problem's
candidate tiles so, and `precompile(fn)` every kernel of a training step.

  launch(kernel, grid, *args, **meta)   kernel[grid](*args, **meta), or only its compilation under compile_only()
  compile_only(threads)                  the context above
  precompile(fn)                         compiles what fn() would launch, in threads, then returns.
                                         fn's results are meaningless (its kernels write nothing); launches made
                                         outside `launch` (species plans, spherical harmonics) run for real, so
                                         index data that later code reads is real.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Callable

_COMPILE_ONLY: ContextVar = ContextVar("tumbler_compile_only", default=False)


def launch(kernel, grid: tuple, *args, **meta) -> None:
    """kernel[grid](*args, **meta); only its compilation under compile_only()."""
    if _COMPILE_ONLY.get():
        kernel.warmup(*args, grid=grid, **meta)
    else:
        kernel[grid](*args, **meta)


def compiling() -> bool:
    """Whether launches only compile (inside compile_only())."""
    return _COMPILE_ONLY.get()


@contextlib.contextmanager
def compile_only(threads: int):
    """Launches through `launch` only compile, in `threads` threads; the exit waits for all of them. A kernel
    that fails to compile is left to its first real launch, which reports it. Without AsyncCompileMode (an
    older Triton) the launches compile one by one."""
    try:
        from triton.runtime._async_compile import AsyncCompileMode
    except ImportError:
        AsyncCompileMode = None
    token = _COMPILE_ONLY.set(True)
    try:
        if AsyncCompileMode is None:
            yield
        else:
            with ThreadPoolExecutor(max(1, threads)) as pool, AsyncCompileMode(pool, ignore_errors=True):
                yield
    finally:
        _COMPILE_ONLY.reset(token)


def precompile(fn: Callable[[], object], threads: int | None = None) -> None:
    """Run fn once with every `launch` only compiling, all kernels at once (threads: one per CPU by default).
    Nested calls (fn itself precompiling) just run inside the outer one.

    Measured on an H200 host with 16 CPUs (bench/first_use.py, a 29-kernel force-training step, empty caches):
    87 s one after another, 73 s in threads. Triton's front end is Python and holds the GIL, so threads overlap
    only ptxas and the parts of the compiler that release it. Compiling in worker processes instead (each
    warming up its share into Triton's on-disk cache) was slower on another host of the kind: 102 s."""
    if compiling():
        fn()
        return
    with compile_only(threads or os.cpu_count() or 1):
        fn()
