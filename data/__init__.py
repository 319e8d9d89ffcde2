"""tumbler.data: structures on disk and in batches.

Public API (see CONTRACT.md): Structure, open_dataset, write_dataset, read_structures,
neighbor_list, VerletList, Batch, collate; modules schema, stats, synthetic, convert.
The data layer never imports the model (potential/) or the kernels (kernels/).
"""

from .batch import Batch, collate
from .convert import read_structures
from .hdf5 import Dataset, open_dataset, write_dataset
from .neighbors import VerletList, neighbor_list
from .structure import DataError, Structure
from . import schema, stats, synthetic

__all__ = [
    "Batch",
    "DataError",
    "Dataset",
    "Structure",
    "VerletList",
    "collate",
    "neighbor_list",
    "open_dataset",
    "read_structures",
    "schema",
    "stats",
    "synthetic",
    "write_dataset",
]
