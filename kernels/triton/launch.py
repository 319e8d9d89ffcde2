"""How our tile-parameterised kernels launch, and how many of them compile at once ahead of their launches.

Triton compiles a kernel at its first launch, one kernel after another: a fresh machine spends minutes on the
first force-training step of a model (bench/first_use.py). The launchers (conv.py, contraction.py) go through
`launch`, which is Triton's own `kernel[grid](...)`, except in a recording pass, where it only notes the launch.
`compile_ahead` then compiles what was noted in forked worker processes, through Triton's ahead-of-time entry
`triton.compile(ASTSource, target=GPUTarget)`, into Triton's on-disk cache; the next `kernel[grid]` of each
launch compiles the same source for the same target and options, so it finds the result there and only loads it.

  launch(kernel, grid, *args, **meta)   kernel[grid](*args, **meta); only recorded inside `recording()`
  recording()                           context: the launches inside are only noted, in the list it yields
  compiling()                           whether launches are being recorded at the moment
  compile_ahead(launches, workers)      compiles recorded launches into Triton's cache, in worker processes
  precompile(fn)                        runs fn() with its launches recorded, then compiles them ahead.
                                        fn's results are meaningless (its kernels write nothing); launches made
                                        outside `launch` (the species plans) run for real, so
                                        index data that later code reads is real.

What a launch compiles is Triton's to decide: the specialisation of each argument (alignment, integer ranges), the
compile options and the constexprs. `compile_ahead` asks Triton for it without restating its rules: it calls the
kernel's public `warmup` with the hook of Triton's public configuration `triton.knobs.runtime.jit_cache_hook`
installed, which Triton hands the signature, constexprs, attributes and options it is about to compile, and which
skips the compilation by returning True. Should what a worker compiles differ from what the launch asks for, the
cost is a cache miss, never a wrong launch: the launch compiles in this process, as without a precompile
(tests/kernels/test_triton_launch.py and test_triton_model.py count those on a GPU).
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import warnings
from contextvars import ContextVar
from typing import Callable

import torch

_RECORDING: ContextVar = ContextVar("tumbler_recording", default=None)  # the launches of a recording pass
_CAPTURE: ContextVar = ContextVar("tumbler_capture", default=None)  # where jit_cache_hook puts what it is handed
_JOBS: list = []  # what forked workers compile: (kernel, signature, constexprs, attrs, options), set before the fork
_TARGET: list = []  # [GPUTarget] of those jobs
_WORKER_TIMEOUT_S = 900  # then the pass gives up on the workers and compiles here (a 29-kernel step: 9 s in workers)


def launch(kernel, grid: tuple, *args, **meta) -> None:
    """kernel[grid](*args, **meta), or only noted inside `recording()`. args are the runtime arguments (tensors and
    ints, in parameter order), meta the constexprs by name and the launch options (num_warps, num_stages)."""
    recorded = _RECORDING.get()
    if recorded is None:
        kernel[grid](*args, **meta)
    else:
        recorded.append((kernel, grid, args, meta))


@contextlib.contextmanager
def recording():
    """Launches through `launch` inside are only noted: yields the list of (kernel, grid, args, meta)."""
    recorded: list = []
    token = _RECORDING.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDING.reset(token)


def compiling() -> bool:
    """Whether launches are only recorded at the moment (a precompile pass, autotune gathering candidates)."""
    return _RECORDING.get() is not None


def precompile(fn: Callable[[], object], workers: int | None = None) -> None:
    """Run fn once with every `launch` only recorded, then compile the recorded kernels all at once (compile_ahead,
    one worker per CPU by default). Later launches find them in Triton's on-disk cache. Nested calls just run fn
    inside the outer pass.

    Measured on an H200 host with 16 CPUs (bench/first_use.py --cold, a 29-kernel force-training step, empty
    caches): the first step took 92.1 s with each kernel compiled at its first launch and 13.4 s with this pass in
    forked workers (72.5 s in threads: Triton's compiler holds the GIL). Those workers compiled through a warmup
    under a patched Triton driver; these compile the same sources through triton.compile (not yet re-measured)."""
    if compiling():
        fn()
        return
    # backward passes on this thread: autograd's device threads do not see this pass's context, and their launches
    # would run for real (torch.autograd.set_multithreading_enabled)
    with recording() as launches, torch.autograd.set_multithreading_enabled(False):
        fn()
    compile_ahead(launches, workers or os.cpu_count() or 1)


def compile_ahead(launches: list, workers: int) -> None:
    """Compile the launches (kernel, grid, args, meta) that this process has not compiled yet into Triton's on-disk
    cache, launching nothing: in forked worker processes through triton.compile with the GPU's target, largest
    kernel source first; in this process, one by one through the kernels' warmup, where that is not possible or
    fails (with a warning). A launch that fails to compile is left to its real launch, which reports it."""
    if not launches:
        return
    try:
        jobs = _specialisations(launches)
    except Exception as exc:  # a Triton whose hook hands over something else: nothing is lost but the parallelism
        warnings.warn(f"kernels/triton/launch.py: cannot read what Triton compiles for these launches "
                      f"({type(exc).__name__}: {exc}); compiling in this process instead", RuntimeWarning, stacklevel=2)
        jobs = [(None, launch) for launch in launches]
    target = _target()
    if workers > 1 and len(jobs) > 1 and target is not None and jobs[0][0] is not None \
            and _compile_in_workers(jobs, target, workers):
        return
    for _, (kernel, grid, args, meta) in jobs:
        with contextlib.suppress(Exception):  # reported by its real launch
            kernel.warmup(*args, grid=grid, **meta)


def _specialisations(launches: list) -> list:
    """[(job, launch)] for each launch that would compile: job = (kernel, signature, constexprs, attrs, options),
    what Triton hands jit_cache_hook before it compiles; a specialisation that several launches share, once.
    A launch this process already compiled calls no hook and is left out."""
    from triton import knobs
    captured: list = []
    previous = knobs.runtime.jit_cache_hook

    def hook(**kw):  # only our warmups are captured: launches on other threads compile as without us
        if _CAPTURE.get() is None:
            return previous(**kw) if previous else None
        captured.append(kw["compile"])
        return True  # Triton skips the compilation

    knobs.runtime.jit_cache_hook = hook
    token = _CAPTURE.set(True)
    found, seen = [], set()
    try:
        for kernel, grid, args, meta in launches:
            captured.clear()
            with contextlib.suppress(Exception):  # arguments Triton rejects: its real launch reports them
                kernel.warmup(*args, grid=grid, **meta)
            for c in captured:
                options = {k: tuple(v) if isinstance(v, list) else v  # JSON lists, as JITFunction.preload reads them
                           for k, v in json.loads(c["specialization_data"])["options"].items()}
                name = (id(kernel), c["specialization_data"])
                if name not in seen:
                    seen.add(name)
                    found.append(((kernel, c["signature"], c["constants"], c["configs"][0], options),
                                  (kernel, grid, args, meta)))
    finally:
        _CAPTURE.reset(token)
        knobs.runtime.jit_cache_hook = previous
    return found


def _target():
    """The current CUDA device as Triton's GPUTarget ("cuda", capability major*10+minor, warp size 32), as Triton's
    CUDA driver reports it; None on other devices (their kernels compile in this process)."""
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return None
    from triton.backends.compiler import GPUTarget
    major, minor = torch.cuda.get_device_capability()
    return GPUTarget("cuda", 10 * major + minor, 32)


def _compile_in_workers(jobs: list, target, workers: int) -> bool:
    """triton.compile each job in forked processes; False (with a warning) if fork is unavailable or a worker fails.
    A forked child must not touch CUDA, and triton.compile with an explicit target does not: it only compiles."""
    global _JOBS, _TARGET
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    order = sorted(range(len(jobs)), key=lambda i: -len(getattr(jobs[i][0][0], "src", "") or ""))
    _JOBS, _TARGET = [job for job, _ in jobs], [target]
    try:
        with warnings.catch_warnings():
            # Python 3.12 warns that forking a threaded process may deadlock the child on a lock another thread
            # held; the workers only run Triton's compiler, and the timeout above covers the rest
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(jobs)))
        with pool:
            pool.map_async(compile_job, order, chunksize=1).get(timeout=_WORKER_TIMEOUT_S)
        return True
    except Exception as exc:
        warnings.warn(f"kernels/triton/launch.py: compiling in worker processes failed ({type(exc).__name__}: "
                      f"{exc}); compiling in this process instead", RuntimeWarning, stacklevel=3)
        return False
    finally:
        _JOBS, _TARGET = [], []


def compile_job(i: int) -> None:
    """Compile _JOBS[i] for _TARGET[0] into Triton's cache (in a worker; tests call it in-process)."""
    import triton
    from triton.compiler import ASTSource
    kernel, signature, constexprs, attrs, options = _JOBS[i]
    triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=_TARGET[0], options=options)
