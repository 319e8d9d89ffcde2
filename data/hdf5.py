"""Read and write tumbler dataset files (layout in data/schema.py).

Writing goes to a temporary file in the target directory and is moved into place
with os.replace, so a reader never sees a half-written file, and on any error the
temporary file is removed. Reading is lazy: `open_dataset` loads the small
per-structure arrays (B rows) and slices the per-atom arrays one structure at a time.
The h5py handle is opened on first use in each process (keyed by os.getpid()), so a
Dataset created before `fork` (DataLoader workers) never shares an HDF5 handle with
its parent, and pickling (spawn workers) drops the handle.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from . import schema
from .atomic import atomic_path  # noqa: F401  (also imported from here)
from .structure import DataError, Structure


# Chunk rows of the resizable datasets. Small per-atom chunks keep a random
# one-structure read cheap (one 24-48 kB chunk); structures are appended in blocks.
_ATOM_CHUNK = 1024
_STRUCTURE_CHUNK = 1024
_BLOCK = 4096


def _blocks(iterable, size):
    block = []
    for item in iterable:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def _block_arrays(block: list[Structure]) -> dict[str, np.ndarray]:
    """The rows that `block` adds to each dataset (ptr: the block's atom counts)."""
    num = len(block)
    forces = [s.forces if s.forces is not None else np.full((len(s), 3), np.nan) for s in block]
    nan33 = np.full((3, 3), np.nan)
    return {
        "ptr": np.array([len(s) for s in block], dtype=np.int64),
        "positions": np.concatenate([s.positions for s in block]).reshape(-1, 3),
        "numbers": np.concatenate([s.numbers for s in block]),
        "forces": np.concatenate(forces).reshape(-1, 3),
        "energy": np.array([np.nan if s.energy is None else s.energy for s in block], dtype=np.float64),
        "stress": np.array([nan33 if s.stress is None else s.stress for s in block], dtype=np.float64).reshape(num, 3, 3),
        "cell": np.array([s.cell for s in block], dtype=np.float64).reshape(num, 3, 3),
        "pbc": np.array([s.pbc for s in block], dtype=bool).reshape(num, 3),
        "weight": np.array([s.weight for s in block], dtype=np.float64),
        "config_type": np.array([s.config_type for s in block], dtype=object),
        "has_energy": np.array([s.energy is not None for s in block], dtype=bool),
        "has_forces": np.array([s.forces is not None for s in block], dtype=bool),
        "has_stress": np.array([s.stress is not None for s in block], dtype=bool),
    }


def write_dataset(path: str | os.PathLike, structures: Iterable[Structure], source: str = "") -> Path:
    """Validate and write `structures` (any iterable: it is streamed in blocks) to `path` atomically.

    Every structure is checked (`Structure.validate`) before its block is written; a
    DataError names the structure's source file, index and key, and then nothing is
    left behind (the temporary file is removed, an existing `path` is untouched).
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = schema.FORMAT
        f.attrs["format_version"] = schema.FORMAT_VERSION
        for quantity, unit in schema.UNITS.items():
            f.attrs[f"unit_{quantity}"] = unit
        f.attrs["source"] = str(source)
        dsets = {}
        for field in schema.FIELDS:
            tail = field.shape[1:]
            dtype = h5py.string_dtype("utf-8") if field.dtype == "str" else np.dtype(field.dtype)
            rows = _ATOM_CHUNK if field.per_atom else _STRUCTURE_CHUNK
            dsets[field.key] = f.create_dataset(field.key, shape=(0, *tail), maxshape=(None, *tail),
                                                dtype=dtype, chunks=(rows, *tail))
        dsets["ptr"].resize((1,))
        dsets["ptr"][0] = 0
        num = total = 0
        for block in _blocks(structures, _BLOCK):
            for s in block:
                s.validate()
            arrays = _block_arrays(block)
            arrays["ptr"] = total + np.cumsum(arrays["ptr"])
            for key, value in arrays.items():
                start = {"ptr": num + 1}.get(key, total if schema.FIELD_BY_KEY[key].per_atom else num)
                dset = dsets[key]
                dset.resize((start + len(value), *dset.shape[1:]))
                dset[start:] = value
            num += len(block)
            total = int(arrays["ptr"][-1])
        f.attrs["num_structures"] = num
        f.attrs["num_atoms"] = total
    return Path(path)


def check_hdf5(path: str | os.PathLike) -> None:
    """DataError naming `path` unless it is an existing HDF5 file."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.isdir(path) or not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file (expected a tumbler dataset written by data.write_dataset / python -m data.convert)")


def is_tumbler_file(path: str | os.PathLike) -> bool:
    """True if `path` is an HDF5 file carrying the tumbler-dataset format attribute."""
    if not os.path.isfile(path) or not h5py.is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        return f.attrs.get("format") == schema.FORMAT


class Dataset(Sequence):
    """Lazy, fork-safe Sequence[Structure] over one tumbler HDF5 file."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        check_hdf5(self.path)
        with h5py.File(self.path, "r") as f:
            fmt = f.attrs.get("format")
            if fmt != schema.FORMAT:
                raise DataError(
                    f"{self.path}: HDF5 file is not a tumbler dataset (attribute format={fmt!r}); "
                    f"convert it first: python -m data.convert {self.path} OUT.h5"
                )
            version = int(f.attrs.get("format_version", -1))
            if version > schema.FORMAT_VERSION:
                raise DataError(f"{self.path}: format_version {version} is newer than this tumbler reads ({schema.FORMAT_VERSION}); upgrade tumbler")
            if version < 1:
                raise DataError(f"{self.path}: invalid format_version {version}")
            missing = [k for k in schema.FIELD_BY_KEY if k not in f]
            if missing:
                raise DataError(f"{self.path}: missing datasets {missing}")
            self.ptr = f["ptr"][()].astype(np.int64)
            num, total = len(self.ptr) - 1, int(self.ptr[-1])
            for key in schema.FIELD_BY_KEY:
                shape = schema.expected_shape(key, num, total)
                if f[key].shape != shape:
                    raise DataError(f"{self.path}: key '{key}': expected shape {shape}, got {f[key].shape}")
            # Per-structure arrays are small (B rows): keep them in memory.
            self._meta = {k: f[k][()] for k in schema.PER_STRUCTURE_KEYS if k != "config_type"}
            self.config_types = [c.decode() if isinstance(c, bytes) else str(c) for c in f["config_type"][()]]
            self.source = str(f.attrs.get("source", ""))
        self._file = None
        self._pid = None
        self._arrays = {}

    # -------------------------------------------------------------- handles
    def _handle(self) -> h5py.File:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            # A handle inherited through fork belongs to the parent: never use or close it here.
            self._file = h5py.File(self.path, "r")
            self._pid = pid
            # Dataset objects are cached: a name lookup costs more than the slice itself.
            self._arrays = {k: self._file[k] for k in schema.PER_ATOM_KEYS}
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None
        self._arrays = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        state["_arrays"] = {}
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: h5py may already be gone
            pass

    # ------------------------------------------------------------- sequence
    def __len__(self) -> int:
        return len(self.ptr) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        """(B,) int64 atoms per structure."""
        return np.diff(self.ptr)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: structure index {index} out of range (0..{len(self) - 1})")
        self._handle()
        f = self._arrays
        lo, hi = int(self.ptr[index]), int(self.ptr[index + 1])
        m = self._meta
        return Structure(
            positions=f["positions"][lo:hi],
            numbers=f["numbers"][lo:hi],
            cell=m["cell"][index],
            pbc=m["pbc"][index],
            energy=float(m["energy"][index]) if m["has_energy"][index] else None,
            forces=f["forces"][lo:hi] if m["has_forces"][index] else None,
            stress=m["stress"][index] if m["has_stress"][index] else None,
            weight=float(m["weight"][index]),
            config_type=self.config_types[index],
            source=self.path,
            index=index,
        )

    def label_masks(self) -> dict[str, np.ndarray]:
        """{"energy", "forces", "stress"} -> (B,) bool presence masks."""
        return {k: self._meta[f"has_{k}"].copy() for k in ("energy", "forces", "stress")}

    def numbers_of(self, index: int) -> np.ndarray:
        """(n,) atomic numbers of one structure without reading its positions."""
        self._handle()
        return self._arrays["numbers"][int(self.ptr[index]) : int(self.ptr[index + 1])]

    def __repr__(self) -> str:
        return f"Dataset({self.path!r}, structures={len(self)}, atoms={int(self.ptr[-1])})"


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Lazy, fork-safe Sequence[Structure] over a tumbler HDF5 file."""
    return Dataset(path)
