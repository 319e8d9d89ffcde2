"""Every kernel of a model's force-training step compiles for a GPU, on a machine without one.

Triton compiles ahead of time for an explicit target (`triton.compile(ASTSource, target=GPUTarget(...))`, the
entry of the trainer's precompile workers), and needs no GPU to do so. bench/compile_cost.py records the launches
of one force-training step and one evaluation pass of the quickstart config under Triton's interpreter and
compiles each distinct kernel for CUDA sm_90 (H100/H200). The interpreter tests check what the kernels compute;
this one checks that the installed Triton's compiler accepts every generated source and produces a cubin, which
the interpreter does not (it runs the Python). CPU budget: ~15 s.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from builders import load_module

T = load_module("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
ROOT = Path(__file__).resolve().parents[2]

pytestmark = T.requires_triton


def test_every_kernel_of_a_training_step_compiles_for_sm90(tmp_path):
    out = tmp_path / "compile.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "TUMBLER_"))}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "compile_cost.py"), str(ROOT / "configs" / "quickstart.yaml"),
                          "--elements", "H,C,O", "--capability", "90", "--out", str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["target"] == "cuda sm_90"
    rows = result["rows"]
    # the conv's receiver, sender and edge passes, the contraction's forms, the spherical harmonics both ways
    for family in ("conv_recv", "conv_sender", "conv_edge", "poly", "sh_fwd", "sh_bwd"):
        assert any(r["kernel"].startswith(family) for r in rows), (family, sorted(r["kernel"] for r in rows))
    assert all(r["cubin_bytes"] > 0 for r in rows), [r for r in rows if r["cubin_bytes"] <= 0]
    assert len(rows) >= 15, len(rows)  # the quickstart step compiles 20 kernels with Triton 3.9
