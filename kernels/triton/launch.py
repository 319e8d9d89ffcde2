"""Kernel launches that can stand in for compilation, so that many kernels compile at once.

Triton compiles a kernel at its first launch, one kernel after another: a fresh machine spends minutes on the
first force-training step of a model (bench/first_use.py). Our tile-parameterised launches (conv.py,
contraction.py) go through `launch`, which can instead only compile (under `compile_only()`: in a thread pool,
Triton's AsyncCompileMode; autotune.py compiles a problem's candidate tiles so) or only record the launch (in a
`precompile(fn)` pass, which then compiles what fn launched in forked worker processes).

  launch(kernel, grid, *args, **meta)   kernel[grid](*args, **meta), from its second call on through the compiled
                                         kernel's own launcher; only compiled under compile_only(), only recorded
                                         in a precompile pass
  direct(kernel, grid, *args, **meta)   that launch, once launched, as a Direct: called with its tensors' device
                                         addresses, it launches with nothing looked up (for callers that key
                                         their launches themselves: conv.py's Problems)
  compiling()                            whether launches only compile or are only recorded at the moment
  compile_only(threads)                  the context above
  precompile(fn)                         compiles what fn() would launch, then returns. fn's results are
                                         meaningless (its kernels write nothing); launches made outside `launch`
                                         (species plans, spherical harmonics) run for real, so index data that
                                         later code reads is real.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from functools import reduce
from operator import or_
from typing import Callable

import torch

try:
    from triton import knobs as _knobs
except ImportError:  # a Triton without knobs: the registry reports the backend unavailable elsewhere
    _knobs = None

_COMPILE_ONLY: ContextVar = ContextVar("tumbler_compile_only", default=False)
_RECORDING: ContextVar = ContextVar("tumbler_recording", default=None)  # the launches of a precompile pass
_RECORDED: list = []  # what forked workers compile: (kernel, grid, args, meta), set just before the fork
_WORKER_TIMEOUT_S = 900  # then the pass gives up on the workers and compiles in threads (a 29-kernel step: 9 s)


def launch(kernel, grid: tuple, *args, **meta) -> None:
    """kernel[grid](*args, **meta); only its compilation under compile_only(); only recorded in a precompile pass.
    args are the runtime arguments (tensors and ints, in parameter order), meta the constexprs by name and the
    launch options (num_warps, num_stages)."""
    recording = _RECORDING.get()
    if recording is not None:
        recording.append((kernel, grid, args, meta))
    elif _COMPILE_ONLY.get():
        kernel.warmup(*args, grid=grid, **meta)
    else:
        _run(kernel, grid, args, meta)


# Launching through the compiled kernel. `kernel[grid](...)` (JITFunction.run) binds and specialises every argument,
# looks up the device, the stream and the compiled kernel, then calls the compiled kernel's launcher. The 20k-edge
# passes are host-bound. So the first launch of each specialisation goes through Triton, which compiles or loads
# the kernel, and later ones call what it returned, found by what Triton specialises on (_bind) and the device.
# Measured in synced calls on an H200 host (bench/probe_direct_launch.py, 128ch l0 conv fwd+bwd, two launches;
# medians of 9 rounds): 0.252 ms through JITFunction.run, 0.214 ms so, 0.200 ms with no key at all (which only a
# probe can afford). The launcher is handed each tensor's device address, read once for the key: handed a tensor,
# it calls data_ptr() again and asks the driver about the pointer (cuPointerGetAttribute). For the conv sender's
# 11 pointers and 2 integers (probe_direct_launch.py --addresses, two H200 hosts): 6.3 -> 4.8 us and
# 9.4 -> 6.5 us per launch.
_DIRECT: dict = {}  # launch key -> (compiled kernel, constexpr values in parameter order, device, Triton's
# current-device and current-stream functions), or None
_BINDERS: dict = {}  # (kernel, argument kinds) -> binder; kernel -> the binder of its last launch
_I32 = 2**31


def _bind(kernel, args: tuple, meta: dict) -> tuple:
    """(key, values). key: what Triton compiles a launch for: the kernel, the constexprs and options, each tensor's
    dtype and 16-byte alignment, the tensors being on the GPU, each integer's being 1, its divisibility by 16 and
    its 32-bit range, other arguments by value; two launches with one key run one compiled kernel (the direct
    launches here, the precompile's dedupe). values: the arguments as the compiled kernel's launcher takes them,
    tensors as their device addresses. (A CPU tensor gives another key, so Triton's own launch reports it.)"""
    binder = _BINDERS.get(kernel)
    if binder is not None:
        try:
            return binder(kernel, meta, *args)
        except (AttributeError, TypeError):  # other kinds of arguments than at this kernel's last launch
            pass
    kinds = "".join("t" if isinstance(a, torch.Tensor) else "i" if type(a) is int else "o" for a in args)
    binder = _BINDERS.get((kernel, kinds))
    if binder is None:
        binder = _BINDERS[(kernel, kinds)] = _make_binder(kinds)
    _BINDERS[kernel] = binder
    return binder(kernel, meta, *args)


def _make_binder(kinds: str):
    """A function (kernel, meta, *args) -> (key, values) for arguments of these kinds ("t" tensor, "i" int, "o"
    other), written out argument by argument as Triton's own binder is: a loop over the arguments costs a few us
    per launch on these hosts. It raises AttributeError or TypeError for arguments of other kinds."""
    a = [f"a{i}" for i in range(len(kinds))]
    t = [i for i, k in enumerate(kinds) if k == "t"]
    lines = [f"def bind(kernel, meta, {', '.join(a + ['/'])}):"] if a else ["def bind(kernel, meta):"]
    lines += [f"    p{i} = a{i}.data_ptr()" for i in t]
    for i, k in enumerate(kinds):
        if k != "t":  # a tensor there would be keyed by identity: a new key at every launch
            lines.append(f"    if type(a{i}) is {'not int' if k == 'i' else 'Tensor'}: raise TypeError")
    key = [repr(kinds)] + [f"a{i}.dtype" for i in t]
    if t:
        key.append(" and ".join(f"a{i}.is_cuda" for i in t))
        key.append(f"({' | '.join(f'p{i}' for i in t)}) & 15 == 0 or ({''.join(f'p{i} & 15 == 0, ' for i in t)})")
    for i, k in enumerate(kinds):
        key += [f"a{i} == 1", f"a{i} & 15 == 0", f"-I32 <= a{i} < I32"] if k == "i" else [f"a{i}"] if k == "o" else []
    values = [f"p{i}" if k == "t" else f"a{i}" for i, k in enumerate(kinds)]
    lines.append(f"    return (kernel, *meta.items(), {', '.join(key)}), [{''.join(v + ', ' for v in values)}]")
    scope = {"Tensor": torch.Tensor, "I32": _I32}
    exec("\n".join(lines), scope)
    return scope["bind"]


def _run(kernel, grid: tuple, args: tuple, meta: dict) -> None:
    key, values = _bind(kernel, args, meta)
    hit = _DIRECT.get(key, False)
    if hit:
        compiled, consts, device, current_device, current_stream = hit
        if current_device() == device:
            stream = current_stream(device)
            grid3 = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
            enter, leave = _hooks()
            data = None if enter is None else compiled.launch_metadata(grid3, stream, *args, *consts)
            compiled.run(*grid3, stream, compiled.function, compiled.packed_metadata, data, enter, leave,
                         *values, *consts)
            return
    compiled = kernel[grid](*args, **meta)
    if hit is False:
        _DIRECT[key] = _direct_entry(kernel, compiled, len(args), meta)


def _hooks() -> tuple:
    """Triton's launch hooks (its profiler's): (enter, exit) chains to hand the launcher, as Triton does when either
    holds a callable, else (None, None)."""
    enter, leave = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
    if getattr(enter, "calls", enter) or getattr(leave, "calls", leave):
        return enter, leave
    return None, None


class Direct:
    """One launch of one compiled specialisation with everything but its tensors' device addresses fixed: the
    compiled kernel's launcher, the grid, the trailing integers and the constexprs. What `launch` does from a
    specialisation's second call on, without the key: for callers that key their launches themselves (conv.py keys
    them by shapes, dtypes and devices, which fix the integers and every specialisation but the alignment)."""

    __slots__ = ("run", "grid", "function", "metadata", "tail", "meta", "device", "current_device", "current_stream")

    def __call__(self, *addresses) -> bool:
        """Launch on the current stream; False, launching nothing, where this launch would be another one: an
        address not 16-byte aligned, another current device, a launch hook registered, a compile-only or
        precompile pass. The caller then takes `launch`."""
        if (reduce(or_, addresses) & 15 or _COMPILE_ONLY.get() or _RECORDING.get() is not None
                or self.current_device() != self.device or _hooks()[0] is not None):
            return False
        self.run(*self.grid, self.current_stream(self.device), self.function, self.metadata, None, None, None,
                 *addresses, *self.tail)
        return True


def direct(kernel, grid: tuple, *args, **meta) -> Direct | None:
    """launch(kernel, grid, *args, **meta) as a Direct called with the addresses of args' leading tensors, all
    16-byte aligned; None where `launch` would not call the compiled kernel's launcher (no specialisation
    launched yet, Triton's interpreter) or an argument after the leading tensors is a tensor."""
    key, values = _bind(kernel, args, meta)
    hit = _DIRECT.get(key)
    n = next((i for i, a in enumerate(args) if not isinstance(a, torch.Tensor)), len(args))
    if not hit or not n or reduce(or_, values[:n]) & 15 or any(isinstance(a, torch.Tensor) for a in args[n:]):
        return None
    compiled, consts, device, current_device, current_stream = hit
    d = Direct()
    d.run, d.function, d.metadata = compiled.run, compiled.function, compiled.packed_metadata
    d.grid = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
    d.tail, d.meta = (*values[n:], *consts), meta  # meta: the constexprs and options by name
    d.device, d.current_device, d.current_stream = device, current_device, current_stream
    return d


def _direct_entry(kernel, compiled, nargs: int, meta: dict):
    """What later launches of this specialisation need, or None where Triton returned no compiled kernel with a
    launcher (its CPU interpreter) or a constexpr was left to its default."""
    names = getattr(kernel, "arg_names", ())[nargs:]
    if _knobs is None or not all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata",
                                                                "launch_metadata")) or not all(n in meta for n in names):
        return None
    from triton.runtime import driver
    active = driver.active
    current_device = active.get_current_device
    if current_device is torch.cuda.current_device:  # its C part (CUDA is initialised: a kernel ran)
        current_device = torch._C._cuda_getDevice
    return (compiled, tuple(meta[n] for n in names), current_device(), current_device, active.get_current_stream)


def compiling() -> bool:
    """Whether launches only compile or are only recorded (compile_only(), a precompile pass)."""
    return _COMPILE_ONLY.get() or _RECORDING.get() is not None


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
    """Run fn once with every `launch` only recorded, then compile the recorded kernels all at once: in forked
    worker processes (one per CPU by default), or in threads where that is not possible or a worker fails.
    Later launches find the kernels in Triton's on-disk cache. Nested calls just run inside the outer one.

    Measured on an H200 host with 16 CPUs (bench/first_use.py --cold, a 29-kernel force-training step, empty
    caches): the first step took 92.1 s with each kernel compiled at its first launch, 72.5 s with this pass in
    threads (Triton's compiler holds the GIL, so threads overlap little) and 13.4 s with it in forked workers."""
    if compiling():
        fn()
        return
    workers = threads or os.cpu_count() or 1
    recorded: list = []
    token = _RECORDING.set(recorded)
    try:
        # backward passes on this thread: autograd's device threads do not see this pass's context, and their
        # launches would compile one by one (torch.autograd.set_multithreading_enabled)
        with torch.autograd.set_multithreading_enabled(False):
            fn()
    finally:
        _RECORDING.reset(token)
    # the same kernel and specialisation once
    launches = list({_bind(k, a, m)[0]: (k, g, a, m) for k, g, a, m in recorded}.values())
    if workers > 1 and len(launches) > 1 and _compile_in_workers(launches, workers):
        return
    with compile_only(workers):
        for kernel, grid, args, meta in launches:
            kernel.warmup(*args, grid=grid, **meta)


def _compile_in_workers(launches: list, workers: int) -> bool:
    """Warm the launches up (JITFunction.warmup: compile into Triton's cache, launch nothing) in forked processes,
    largest kernel source first; False (with a warning) if fork is unavailable or a worker fails. A forked child
    must not touch CUDA through torch, so its Triton driver answers the device, stream and target with the
    parent's, taken before the fork; compiling needs nothing else from the GPU (the tensors' addresses are read,
    never used)."""
    global _RECORDED
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        from triton.runtime import driver
        device = driver.active.get_current_device()
        target = driver.active.get_current_target()
    except Exception:  # no GPU driver (tests with stand-in kernels): nothing to answer for
        device = target = None
    order = sorted(range(len(launches)), key=lambda i: -len(getattr(launches[i][0], "src", "") or ""))
    _RECORDED = launches
    try:
        with warnings.catch_warnings():
            # Python 3.12 warns that forking a threaded process may deadlock the child on a lock another thread
            # held; the workers only run Triton's compiler, and the timeout above covers the rest
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(launches)), initializer=_worker_driver,
                                                            initargs=(device, target))
        with pool:
            pool.map_async(_warm_up, order, chunksize=1).get(timeout=_WORKER_TIMEOUT_S)
        return True
    except Exception as exc:
        warnings.warn(f"kernels/triton/launch.py: compiling in worker processes failed ({type(exc).__name__}: "
                      f"{exc}); compiling in threads instead", RuntimeWarning, stacklevel=3)
        return False
    finally:
        _RECORDED = []


def _worker_driver(device, target) -> None:
    if target is None:
        return
    from triton.runtime import driver
    active = driver.active
    active.get_current_device = lambda: device
    active.get_current_stream = lambda *args: 0
    active.get_current_target = lambda: target


def _warm_up(i: int) -> None:
    kernel, grid, args, meta = _RECORDED[i]
    kernel.warmup(*args, grid=grid, **meta)
