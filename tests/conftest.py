"""Shared test settings for every package's tests."""

import os
import sys
from pathlib import Path

import pytest

# tests/support/builders.py (tiny models, small structures, the shared datasets) is importable from every test
# file. Its own folder goes on the path, not tests/, whose data/, kernels/ and potential/ would shadow the packages.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from builders import one_torch_thread, shared_data_dir  # noqa: E402

# Triton tiles take their measured defaults in the tests: autotuning (kernels/triton/autotune.py) would time
# candidates of every new test shape, with tests running in parallel. tests/kernels/test_triton_autotune.py
# tunes on purpose, and checks that every candidate tile gives the reference's numbers.
os.environ.setdefault("TUMBLER_AUTOTUNE", "0")


@pytest.fixture(autouse=True)
def one_thread_per_test():
    """Test models and graphs are tiny: one intra-op thread per test, restored after (builders.one_torch_thread)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared/data, or a skip saying it is absent."""
    return shared_data_dir()
