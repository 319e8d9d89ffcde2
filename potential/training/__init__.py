"""Training: the YAML config tree (config), data preparation and statistics (trainset), loss and metrics
(metrics), atomic checkpoints (checkpoint) and the trainer behind train.py (trainer)."""

from .config import ConfigError, TrainConfig, load_config
from .trainer import Trainer, TrainingError, run

__all__ = ["ConfigError", "TrainConfig", "load_config", "Trainer", "TrainingError", "run"]
