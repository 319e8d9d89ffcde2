"""tumbler.potential: the equivariant interatomic potential, its file format and its ASE calculator, with
subpackages for what uses the model: training/ (train.py) and simulation/ (md.py, screen.py).

Conventions: eV, Å, eV/Å, eV/Å^3 (ASE stress sign); see potential/model.py. The import graph runs one way:
irreps, radial -> layers -> model -> io, static_step -> calculator, evaluate -> training, simulation.
"""

from .calculator import Calculator
from .committee import Committee, load_committee  # committees: mean results and their spread
from .evaluate import evaluate
from .io import FORMAT, FORMAT_VERSION, load_model, read_model_file, save_model
from .irreps import Irreps
from .model import ModelConfig, Potential
from .simulation import MDConfig, run_md, screen
from .training import ConfigError, TrainConfig, Trainer, TrainingError, load_config
from .training import run as run_training

__all__ = [
    "Calculator", "Committee", "load_committee", "evaluate", "FORMAT", "FORMAT_VERSION", "load_model", "read_model_file", "save_model", "Irreps",
    "ModelConfig", "Potential", "MDConfig", "run_md", "screen", "ConfigError", "TrainConfig", "Trainer",
    "TrainingError", "load_config", "run_training",
]
