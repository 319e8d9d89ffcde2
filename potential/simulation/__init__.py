"""What uses a model to move atoms: MD through ASE (ase_md) or on the device-resident engine (engine_md, with its
integrators in dynamics), batched FIRE relaxation (fire), screening (screening), and md.py's entry (run).
Both engines share md_output (log, trajectory, velocities); neither imports the other."""

from .ase_md import run_md
from .md_config import MDConfig
from .run import run_from_config
from .screening import screen

__all__ = ["MDConfig", "run_md", "run_from_config", "screen"]
