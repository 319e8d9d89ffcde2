"""How fast the contraction kernels of a force-training step compile for sm_90 one after another, and in forked
worker processes (no GPU needed): the ceiling of compiling a model's kernels in parallel on this host's CPUs.

    python bench/compile_parallel.py [--procs=16] [--lmax=3,1,3] [--lmax=3,0,3]

Each run uses an empty Triton cache of its own. Kernels are the forward, backward and second-order kernels of each
contraction (kernels/triton/contraction.py launch plans), compiled with triton.compile for sm_90 as
bench/compile_report.py does, with the default tile (NB 4, BC 32, 4 warps).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from kernels.triton import contraction as sc  # noqa: E402


def jobs(lmaxes: list) -> list:
    """(form, outs, comps, slots) of every kernel the contraction's three passes launch."""
    out = []
    for lm in lmaxes:
        f1 = sc.base_form(*lm)
        f2 = sc.pullback(f1, 2)
        f3 = sc.pullback(f2, 0)
        for form, outs in ((f1, (2,)), (f2, (0, 1)), (f3, (0, 1, 3))):
            out += [(form, part, comps) for part, comps in sc.launch_plan(form, outs)]
    return out


def compile_one(job) -> float:
    form, part, comps = job
    kernel = sc._kernel(form, part, comps)
    sig = {f"S{j}": "*fp32" for j in range(len(form.slots))} | {f"O{j}": "*fp32" for j in range(len(part))}
    sig |= {"PERM": "*i64", "PTR": "*i64", "NSPECIES": "i32", "C": "i32", "CH": "constexpr", "NB": "constexpr",
            "BC": "constexpr", "SP2": "constexpr"}
    attrs = {(i,): [["tt.divisibility", 16]] for i, (name, ty) in enumerate(sig.items())
             if ty.startswith("*") or name == "C"}
    t = time.time()
    triton.compile(triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=dict(CH=32, NB=4, BC=32, SP2=16),
                                             attrs=attrs), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    return time.time() - t


def main(argv):
    procs = int(next((a.split("=")[1] for a in argv if a.startswith("--procs=")), os.cpu_count() or 1))
    lmaxes = [tuple(int(v) for v in a.split("=")[1].split(",")) for a in argv if a.startswith("--lmax=")]
    lmaxes = lmaxes or [(3, 1, 3), (3, 0, 3)]
    todo = jobs(lmaxes)
    todo.sort(key=lambda j: -sum(len(t) for t in j[0].derivative_terms(j[1][0]).values()))  # largest first
    for label, n in (("sequential", 1), (f"{procs} forked processes", procs)):
        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="tumbler_compile_")
        t = time.time()
        if n == 1:
            each = [compile_one(j) for j in todo]
        else:
            with mp.get_context("fork").Pool(n) as pool:
                each = pool.map(compile_one, todo, chunksize=1)
        print(f"{label}: {len(todo)} kernels in {time.time() - t:.1f} s (sum of per-kernel times {sum(each):.1f} s, "
              f"longest {max(each):.1f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
