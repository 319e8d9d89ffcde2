"""tumbler.data: structures on disk and in batches.

Public API: Structure, open_dataset, write_dataset, read_structures,
neighbor_list, VerletList, Batch, collate, pack_atoms; modules schema, stats, synthetic, convert.
The data layer never imports the model (potential/) or the kernels (kernels/).

Names are resolved on first use (PEP 562), so `python -m data.convert` does not
import data.convert twice and `import data` stays cheap.
"""

import importlib

_EXPORTS = {
    "Batch": "batch",
    "collate": "batch",
    "pack_atoms": "batch",
    "read_structures": "convert",
    "Dataset": "hdf5",
    "open_dataset": "hdf5",
    "write_dataset": "hdf5",
    "VerletList": "neighbors",
    "neighbor_list": "neighbors",
    "DataError": "structure",
    "Structure": "structure",
}
_MODULES = ("batch", "convert", "hdf5", "neighbors", "readers", "schema", "stats", "structure", "synthetic")

__all__ = sorted(_EXPORTS) + ["schema", "stats", "synthetic"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_MODULES))
