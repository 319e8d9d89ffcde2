"""kernels/triton/launch.py: the cached launch of a compiled kernel gives the same bits as the jitted call,
for each specialization (an unaligned view compiles and caches its own); under the interpreter (CI) it caches
nothing and every call goes through the jitted function."""
import importlib.util
import sys
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("tumbler_triton_common", Path(__file__).with_name("_triton_common.py"))
T = sys.modules.setdefault("tumbler_triton_common", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(T)

pytestmark = T.requires_triton
E = 100_003 if T.GPU else 37


def _sh_direct(kern, v):
    from kernels.triton.codegen import cdiv
    from kernels.triton.sh import BLOCK
    out = torch.empty(v.shape[0], 16, dtype=v.dtype, device=v.device)
    kern[(cdiv(v.shape[0], BLOCK),)](v, out, out, v.shape[0], BLOCK=BLOCK, KP=16, num_warps=4)
    return out


def test_cached_launch_equals_the_jitted_call():
    from kernels.triton import launch, sh
    base = T.randn(E + 1, 3, seed=0, dtype=torch.float32).reshape(-1)
    aligned = base[: 3 * E].view(E, 3)
    unaligned = base[3:].view(E, 3)  # 12 bytes in: not 16-byte aligned, so Triton specializes differently
    assert unaligned.data_ptr() % 16 != 0
    kern = sh.fwd_kernel(3)
    for v in (aligned, unaligned, aligned, unaligned):
        assert torch.equal(sh.sh_forward(v, 3), _sh_direct(kern, v))
    # cache entries of this kernel for float32 vectors: key = (kernel, meta, per-argument keys)
    mine = {k: c for k, c in launch._COMPILED.items() if k[0] is kern and k[2][0][0] == torch.float32}
    assert {k[2][0][2] for k in mine} == {True, False}  # one specialization per alignment
    if T.GPU:  # both compiled kernels were called directly on the second round
        assert all(c is not None for c in mine.values())
    else:  # the interpreter returns no compiled kernel: every call goes through the jitted function
        assert all(c is None for c in mine.values())
