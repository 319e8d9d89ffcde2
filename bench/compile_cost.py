"""What a fresh GPU machine compiles before the first training step of a config, and how long each kernel takes.

    python bench/compile_cost.py configs/acac.yaml                      # the shipped config
    python bench/compile_cost.py configs/acac.yaml --set model.lmax=1   # a variant (any train.py override)

No GPU needed: compiling is host work. The script builds the config's model, runs one force-training step and
one evaluation pass (what the trainer's precompile pass runs) on a small batch on the CPU under Triton's
interpreter with every fused-kernel launch only recorded (kernels/triton/launch.py), and compiles each distinct
kernel for a CUDA target (sm_90 by default: H100/H200) through `triton.compile`, one after another in one worker
process, with fresh caches. It reports, per kernel, the seconds of
CPU time (this process and its ptxas children) and of wall time; their sum, which is what a first step pays when
each kernel compiles at its first launch; and the longest, the floor of the trainer's precompile, which compiles
them in parallel worker processes (one per CPU) and so cannot finish before its longest kernel.
The signature handed to triton.compile follows Triton's default specialisation (pointer and integer
divisibility by 16); a launch on a GPU may specialise otherwise, which changes the code a little and its compile
time hardly at all. --json writes bench/results/compile-cost-cpu-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_POINTER_TYPES = {"float32": "fp32", "float64": "fp64", "float16": "fp16", "bfloat16": "bf16", "int64": "i64",
                  "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "i1"}


def _fresh_caches() -> None:
    """Empty Triton, kernel-source and autotune caches for this process, as on a fresh machine (set before the
    first import of triton and kernels, which read them)."""
    tmp = Path(tempfile.mkdtemp(prefix="tumbler_compile_cost_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ.update(TRITON_CACHE_DIR=str(tmp / "triton"), TUMBLER_KERNEL_CACHE=str(tmp / "src"),
                      TUMBLER_AUTOTUNE_CACHE=str(tmp / "autotune"), TUMBLER_AUTOTUNE="0", TRITON_INTERPRET="1")


def _model_and_batch(config: str, overrides: list[str], elements: list[str]):
    """The config's model (statistics replaced by placeholders: they change no kernel) on the Triton backend,
    and a batch of two small molecules made of `elements`."""
    import ase
    import numpy as np
    import torch
    from ase.data import atomic_numbers

    from data import Batch
    from potential import ModelConfig, Potential
    from potential.config_tree import to_dict
    from potential.training import finetune
    from potential.training.config import load_config

    cfg = load_config(config, overrides)
    numbers = [atomic_numbers[e] for e in elements]
    model_dict = {k: v for k, v in to_dict(cfg.model).items() if v is not None and k not in finetune.SECTION_KEYS}
    model_dict.update(elements=numbers, atomic_energies=[-1.0] * len(numbers), avg_num_neighbors=10.0,
                      scale=1.0, shift=0.0, dtype=cfg.dtype, backend="triton")
    model = Potential(ModelConfig.from_dict(model_dict))
    rng = np.random.default_rng(0)
    structures = []
    for n in (6, 9):  # atoms on a rattled grid, 1.4 Å apart, so every pair of elements meets within r_max
        grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] * 1.4
        structures.append(ase.Atoms(numbers=[numbers[i % len(numbers)] for i in range(n)],
                                    positions=grid + rng.normal(scale=0.05, size=grid.shape)))
    batch = Batch.from_atoms(structures, cutoff=model.config.r_max, dtype=getattr(torch, cfg.dtype))
    return model, batch, cfg


def recorded_launches(model, batch) -> list:
    """The fused-kernel launches (kernel, grid, args, meta) of one force-training step and one evaluation pass,
    recorded, not run (the species plans run under the interpreter)."""
    import torch

    from kernels.triton.launch import recording
    from potential.training.metrics import LossWeights, compute_loss

    params = [p for p in model.parameters() if p.requires_grad]
    with recording() as launches, torch.autograd.set_multithreading_enabled(False):
        out = model(batch, forces=True, stress=False, training=True)
        loss, _ = compute_loss(batch, out, LossWeights(1.0, 100.0, 0.0))
        torch.autograd.grad(loss, params, allow_unused=True)
        model(batch, forces=True, stress=False, training=False)
    return launches


def compile_job(kernel, args: tuple, meta: dict) -> dict:
    """What triton.compile needs for a recorded launch, as plain data for a worker process: the kernel's source
    file and name (the recorded kernel is the interpreter's), its signature with the runtime arguments typed,
    its constexprs and divisibility attributes, and the launch options."""
    import inspect

    import torch
    import triton

    knobs = triton.knobs.runtime
    interpret, knobs.interpret = knobs.interpret, False
    try:
        fn = triton.jit(kernel.fn)  # only to read the parameters; nothing is compiled here
    finally:
        knobs.interpret = interpret
    options = {k: meta[k] for k in ("num_warps", "num_stages") if k in meta}
    runtime = [p for p in fn.params if not p.is_constexpr]
    if len(runtime) != len(args):
        raise ValueError(f"{fn.__name__}: {len(runtime)} runtime parameters, {len(args)} recorded arguments")
    types, attrs = {}, {}
    for p, a in zip(runtime, args):
        if isinstance(a, torch.Tensor):
            types[p.name] = "*" + _POINTER_TYPES[str(a.dtype).removeprefix("torch.")]
            aligned = a.data_ptr() % 16 == 0
        else:
            types[p.name] = "i32" if -2**31 <= int(a) < 2**31 else "i64"
            aligned = int(a) % 16 == 0
        if aligned:
            attrs[(p.num,)] = [["tt.divisibility", 16]]
    return dict(path=inspect.getsourcefile(kernel.fn), name=fn.__name__,
                signature={name: types.get(name, "constexpr") for name in fn.arg_names},
                constexprs={k: v for k, v in meta.items() if k not in options}, attrs=attrs, options=options)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def compile_in_worker(job: dict, capability: int) -> dict:
    """triton.compile one job for CUDA sm_<capability> (in a fresh process: Triton's interpreter leaves
    triton.language patched in the process that ran it); its CPU seconds (with ptxas), wall seconds, cubin size."""
    import importlib.util

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = importlib.util.spec_from_file_location(f"compile_cost_{job['name']}", job["path"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    src = ASTSource(getattr(module, job["name"]), job["signature"], job["constexprs"], job["attrs"])
    cpu, wall = _cpu_seconds(), time.perf_counter()
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=job["options"])
    return dict(cpu_s=round(_cpu_seconds() - cpu, 3), wall_s=round(time.perf_counter() - wall, 3),
                cubin_bytes=len(compiled.asm["cubin"]))


def compile_all(launches: list, capability: int) -> list[dict]:
    """Compile each distinct launch, one after another in one worker process; rows longest first."""
    import json
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs, seen = [], set()
    for kernel, _, args, meta in launches:
        job = compile_job(kernel, args, meta)
        key = json.dumps([job["path"], job["name"], job["signature"], job["constexprs"], job["options"],
                          sorted(map(str, job["attrs"]))])
        if key not in seen:
            seen.add(key)
            jobs.append(job)
    os.environ["TRITON_INTERPRET"] = "0"  # the worker compiles
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = [dict(kernel=job["name"], constexprs=job["constexprs"], **pool.submit(
            compile_in_worker, job, capability).result()) for job in jobs]
    return sorted(rows, key=lambda r: -r["cpu_s"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a training config, e.g. configs/acac.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override, as train.py's --set (repeatable)")
    parser.add_argument("--elements", default="H,C,N,O", help="elements of the model (comma-separated)")
    parser.add_argument("--capability", type=int, default=90, help="CUDA compute capability x 10 (default 90)")
    parser.add_argument("--json", action="store_true", help="write bench/results/compile-cost-cpu-<time>.json")
    parser.add_argument("--out", help="also write the result JSON to this file")
    a = parser.parse_args(argv)
    _fresh_caches()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    model, batch, cfg = _model_and_batch(a.config, a.overrides, a.elements.split(","))
    launches = recorded_launches(model, batch)
    rows = compile_all(launches, a.capability)
    m = model.config
    result = dict(config=a.config, overrides=a.overrides, target=f"cuda sm_{a.capability}", dtype=cfg.dtype,
                  model=dict(channels=m.channels, lmax=m.lmax, lmax_sh=m.lmax_sh, correlation=m.correlation,
                             num_interactions=m.num_interactions, elements=a.elements),
                  kernels=len(rows), sum_cpu_s=round(sum(r["cpu_s"] for r in rows), 2),
                  longest_cpu_s=rows[0]["cpu_s"] if rows else 0.0, rows=rows)
    print(f"{a.config} {' '.join(a.overrides)} ({cfg.dtype}, channels {m.channels}, lmax {m.lmax}, "
          f"correlation {m.correlation}): {len(rows)} kernels for {result['target']}")
    print(f"  {'kernel':<34} {'cpu s':>7} {'wall s':>7} {'cubin kB':>9}")
    for r in rows:
        print(f"  {r['kernel']:<34} {r['cpu_s']:7.2f} {r['wall_s']:7.2f} {r['cubin_bytes'] / 1024:9.0f}")
    print(f"  sum {result['sum_cpu_s']:.1f} CPU s (compiled at first launch, one after another); "
          f"longest {result['longest_cpu_s']:.1f} CPU s (the floor of compiling in parallel workers)")
    sys.path.insert(0, str(ROOT / "bench"))
    from result_file import header, write_result
    result = {**header("cpu"), **result}
    if a.json:
        print("wrote", write_result("compile-cost", result))
    if a.out:
        from data.atomic import atomic_path
        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
