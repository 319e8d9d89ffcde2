"""Compile our generated kernels for sm_90 on this machine (no GPU needed) and report registers, stack
(spill) bytes and SASS instruction count per tile configuration: the cheapest way to choose block shapes, or to
compare two versions of a generator, before a GPU run.

    python bench/compile_report.py conv 1,3,3 recv 16,32,4 8,32,4
    python bench/compile_report.py conv 1,3,3 sender 4,32,4        (the fused sender pass: dh, dY and dR)
    python bench/compile_report.py sc 3,1,3 bwd 8,32,64,4
    python bench/compile_report.py sc 3,2,3 dbl:0 4,32,64,4    (one output slot of the second-order kernel)
    python bench/compile_report.py sc 3,2,3 dbl-plan 4,32,64,4 (each kernel the model launches for it)
    python bench/compile_report.py sc 3,1,3 bwd-plan 4,32,32,4 (the same for the backward)
    MAXNREG=64 python bench/compile_report.py ...               (with Triton's register cap, as a launch's maxnreg)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from pathlib import Path

# bench/kernels.py would shadow the kernels package: drop this folder from the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from kernels.triton import contraction as sc  # noqa: E402
from kernels.triton import conv  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
NODE_SIG = {"X": "*fp32", "Y": "*fp32", "R": "*fp32", "OUT": "*fp32", "PTR": "*i64", "PERM": "*i64",
            "GIDX": "*i64", "C": "i32", "BE": "constexpr", "BC": "constexpr", "USE_PERM": "constexpr"}
EDGE_SIG = {"H": "*fp32", "G": "*fp32", "Y": "*fp32", "R": "*fp32", "DY": "*fp32", "DR": "*fp32",
            "SEND": "*i64", "RECV": "*i64", "E": "i32", "C": "i32", "BE": "constexpr", "BC": "constexpr",
            "NEED_Y": "constexpr", "NEED_R": "constexpr"}
SENDER_SIG = {"H": "*fp32", "G": "*fp32", "Y": "*fp32", "R": "*fp32", "DH": "*fp32", "DY": "*fp32", "DR": "*fp32",
              "ORDER": "*i64", "PTR": "*i64", "PERM": "*i64", "RECV": "*i64", "E": "i32", "C": "i32", "BE": "constexpr",
              "BC": "constexpr", "NEED_H": "constexpr", "NEED_Y": "constexpr", "NEED_R": "constexpr"}


def usage(kernel, sig, constexprs, num_warps) -> str:
    t = time.time()
    # what a launch at the bench sizes specializes on: 16-byte aligned pointers, C and E divisible by 16
    attrs = {(i,): [["tt.divisibility", 16]] for i, (name, ty) in enumerate(sig.items())
             if ty.startswith("*") or name in ("C", "E")}
    options = {"num_warps": num_warps}
    if os.environ.get("MAXNREG"):  # Triton's register cap, as a launch's maxnreg=
        options["maxnreg"] = int(os.environ["MAXNREG"])
    c = triton.compile(triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs),
                       target=GPUTarget("cuda", 90, 32), options=options)
    dt = time.time() - t
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(c.asm["cubin"])
    out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs = [w for line in out.splitlines() if "REG" in line for w in line.split() if w.startswith(("REG", "STACK"))]
    sass = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True).stdout
    n_instr = sum(1 for line in sass.splitlines() if line.strip().startswith("/*") and "*/" in line[4:])
    return f"{' '.join(regs)} SASS {n_instr} compile {dt:.1f}s"


def sc_kernel(lmaxes, which):
    form = sc.base_form(*lmaxes)
    if which == "fwd":
        return sc._kernel(form, (2,)), 3, 1
    f2 = sc.pullback(form, 2)
    if which == "bwd":
        return sc._kernel(f2, (0, 1)), 4, 2
    f3 = sc.pullback(f2, 0)
    outs = (0, 1, 3) if which == "dbl" else (int(which.split(":")[1]),)  # "dbl:S": only slot S
    return sc._kernel(f3, outs), 5, len(outs)


def main(argv):
    op, lm, which, *cfgs = argv
    lmaxes = tuple(int(v) for v in lm.split(","))
    for cfg in cfgs:
        vals = tuple(int(v) for v in cfg.split(","))
        if op == "conv":
            tab = conv.table_for(*lmaxes)
            be, bc, nw = vals
            if which == "edge":
                k, sig, ce = conv._edge_kernel(tab), EDGE_SIG, dict(BE=be, BC=bc, NEED_Y=True, NEED_R=True)
            elif which == "sender":
                k, sig = conv._sender_kernel(tab), SENDER_SIG
                ce = dict(BE=be, BC=bc, NEED_H=True, NEED_Y=True, NEED_R=True)
            else:
                k = conv._recv_kernel(tab) if which == "recv" else conv._send_kernel(tab)
                sig, ce = NODE_SIG, dict(BE=be, BC=bc, USE_PERM=which == "send")
        elif which in ("bwd-plan", "dbl-plan"):
            f2 = sc.pullback(sc.base_form(*lmaxes), 2)
            f, outs, ns = (f2, (0, 1), 4) if which == "bwd-plan" else (sc.pullback(f2, 0), (0, 1, 3), 5)
            for part, comps in sc.launch_plan(f, outs):
                report(op, lm, f"{which[:3]}{part}{comps or ''}", cfg, sc._kernel(f, part, comps), ns, len(part), vals)
            continue
        else:
            k, ns, no = sc_kernel(lmaxes, which)
            report(op, lm, which, cfg, k, ns, no, vals)
            continue
        print(op, lm, which, cfg, usage(k, sig, ce, nw), flush=True)


def report(op, lm, which, cfg, k, ns, no, vals):
    nb, bc, ch, nw = vals
    sig = {f"S{j}": "*fp32" for j in range(ns)} | {f"O{j}": "*fp32" for j in range(no)}
    sig |= {"PERM": "*i64", "PTR": "*i64", "NSPECIES": "i32", "C": "i32", "CH": "constexpr",
            "NB": "constexpr", "BC": "constexpr", "SP2": "constexpr"}
    print(op, lm, which, cfg, usage(k, sig, dict(CH=ch, NB=nb, BC=bc, SP2=16), nw), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
