"""Turning generated kernel source into @triton.jit functions.

The kernels in this package are written by Python generators (sh.py, conv_codegen.py,
poly_codegen.py) from sparse coefficient tables: every non-zero coefficient becomes one
constant in straight-line code, so a new lmax or a new coupling basis needs no hand edits.
`triton.jit` reads a function's source with `inspect`, so the text cannot simply be
`exec`-ed: it is written to a file named by its hash and imported from there. Modules are
cached per source text (in memory and on disk), so each spec compiles once per process.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

# Sums are tl.sum (Triton 3.9's interpreter maps it to one numpy sum: the CPU kernel tests ran no slower than with
# a reduce over Triton's private _sum_combine: 67 s against 83 s for tests/kernels/test_triton_contraction.py,
# one run each on the shared 2-core CPU machine).
_HEADER = "import triton\nimport triton.language as tl\n\n\n"
_MODULES: dict[str, object] = {}


def _cache_dir() -> Path:
    base = os.environ.get("TUMBLER_KERNEL_CACHE")
    if base:
        return Path(base)
    return Path(tempfile.gettempdir()) / f"tumbler_triton_src_{os.getuid() if hasattr(os, 'getuid') else 0}"


def load_source(src: str, name: str):
    """Import generated Triton source `src`; return the attribute `name` (a jitted kernel)."""
    text = _HEADER + src
    key = hashlib.sha1(text.encode()).hexdigest()[:20]
    mod = _MODULES.get(key)
    if mod is None:
        d = _cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"k_{key}.py"
        if not path.exists() or path.read_text() != text:
            fd, tmp = tempfile.mkstemp(dir=d, suffix=".py.tmp")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        modname = f"tumbler_gen_{key}"
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        _MODULES[key] = mod
    return getattr(mod, name)


def lit(x: float) -> str:
    """A float constant as exact Python source (repr round-trips float64)."""
    return repr(float(x))


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def cached_hash(obj, *fields) -> int:
    """hash(fields), computed once per object. For the frozen tables (ConvTable, poly.Form) that the launchers
    look up in lru_caches at every call: tuples do not cache their hash, and hashing a table of hundreds of
    entries each time cost 10-100 us of host time per lookup (a contraction's fwd+bwd did five)."""
    h = obj.__dict__.get("_hash")
    if h is None:
        h = hash(fields)
        object.__setattr__(obj, "_hash", h)
    return h
