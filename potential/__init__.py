"""tumbler.potential: the equivariant interatomic potential and what uses it.

Public API (potential engineer): ModelConfig, Potential, save_model, load_model, read_model_file,
Calculator, Irreps. Conventions: eV, Å, eV/Å, eV/Å^3 (ASE stress sign); see potential/model.py.
"""

from .calculator import Calculator
from .committee import Committee, load_committee  # committees: mean results and their spread
from .io import FORMAT, FORMAT_VERSION, load_model, read_model_file, save_model
from .irreps import Irreps
from .model import ModelConfig, Potential

# training (training engineer): the YAML config tree and the run behind train.py
from .config import ConfigError, TrainConfig, load_config
from .training import Trainer, TrainingError, run as run_training

# md / screening (md engineer): batched single points, MD settings and runner, screening.
from .evaluate import evaluate
from .md_config import MDConfig
from .md_runner import run_md
from .screening import screen
