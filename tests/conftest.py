"""Shared test settings for every package's tests."""

import os

import pytest
import torch

# Triton tiles take their measured defaults in the tests: autotuning (kernels/triton/autotune.py) would time
# candidates of every new test shape, with tests running in parallel. tests/kernels/test_triton_autotune.py
# tunes on purpose, and checks that every candidate tile gives the reference's numbers.
os.environ.setdefault("TUMBLER_AUTOTUNE", "0")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Test models and graphs are tiny: intra-op threads only add synchronisation, and on a busy 2-core runner
    OpenMP threads spin-wait for each other (10-80x slower steps seen). One thread per test, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
