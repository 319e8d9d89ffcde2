"""Kernel tests: without a CUDA device, Triton kernels run in Triton's CPU interpreter.

TRITON_INTERPRET must be set before the first kernel is jitted; our kernels are generated and jitted
lazily (kernels/triton/codegen.py), so setting it at collection time is early enough.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
