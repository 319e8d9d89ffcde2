"""Tuning knobs of the Triton launchers (tile shapes, pipelining depth, the fused sender pass), from the
environment: TUMBLER_CONV_RECV_CFG, TUMBLER_CONV_NODE_CFG, TUMBLER_CONV_EDGE_CFG, TUMBLER_CONV_STAGES,
TUMBLER_CONV_SENDER, TUMBLER_CONV_SENDER_FORM, TUMBLER_SC_CFG ("NB,BC,num_warps"). A tile knob forces its tile;
unset, the launchers take autotune's choice (autotune.py, TUMBLER_AUTOTUNE, TUMBLER_AUTOTUNE_CACHE).
Knobs are read once per process; a changed knob takes effect after `knobs_changed()`.
"""
from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=None)
def knob(name: str, default: str = "") -> str:
    """A knob's value, read once per process: the small passes are host-bound, and each environment lookup
    is host time. bench/kernels.py --sweep and the tests that set a knob call knobs_changed()."""
    return os.environ.get(name, default)


def knobs_changed() -> None:
    """Read the knobs again at their next use."""
    knob.cache_clear()
